"""Fault injection: every protocol against a zoo of faulty models.

In each society one member (a debater, a critic, a proposer, an expert, a tier, a stage, or the
judge) runs on a faulty model and the others on a healthy one that answers 7. Whatever the
fault, the run ends, failed turns carry their error, healthy turns and their usage are kept,
and the answer comes from the healthy agents.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import pytest

import moot
from moot.testing import CallInfo, ScriptedChatModel


class RateLimited(Exception):
    """What an API client raises for HTTP 429."""

    status_code = 429


def healthy(messages, info: CallInfo) -> str:
    if info.agent in ("harsh", "kind"):  # the critics
        return "Looks right.\nVerdict: accept"
    if info.agent == "ranker":
        return "Both are fine.\nBetter: A"
    return "7 it is.\nAnswer: 7"


def raises(messages, info):
    raise RuntimeError("the model crashed")


def rate_limited_twice() -> Callable[..., str]:
    failures: dict[str | None, int] = {}

    def respond(messages, info: CallInfo) -> str:
        key = f"{info.agent}/{info.round}/{messages[-1].text[:40]}"
        failures[key] = failures.get(key, 0) + 1
        if failures[key] <= 2:
            raise RateLimited("429 Too Many Requests")
        return healthy(messages, info)

    return respond


def fails_in_round_2(messages, info: CallInfo) -> str:
    if info.round == 2:
        raise ConnectionResetError("connection reset by peer")
    return healthy(messages, info)


def hangs(messages, info):
    time.sleep(5)  # far past the agent's 0.2 s limit
    return "Answer: 99"


FAULTS: dict[str, Callable[..., str]] = {
    "empty": lambda messages: "",
    "huge": lambda messages: "blah " * 50_000,
    "raises": raises,
    "hangs": hangs,
    "rate-limited": lambda messages, info: "",  # replaced per test (it keeps counts)
    "surrogates": lambda messages: "caf\udce9 I am sure.\nAnswer: 7",
    "fails-in-round-2": fails_in_round_2,
}
FAILING = {"raises": "RuntimeError: the model crashed", "hangs": "did not answer within 0.2 s"}


def agent(name: str, model: ScriptedChatModel, role: str = "debater") -> moot.Agent:
    """A member with the short limit only on the hanging model: a healthy call on a busy
    machine may take longer than 0.2 s."""
    timeout = 0.2 if model.respond is hangs else 30
    return moot.Agent(name=name, role=role, model=model, timeout=timeout, retry_delay=0.001)


def societies(bad: ScriptedChatModel, good: ScriptedChatModel) -> dict[str, moot.Society]:
    """Every protocol, with one member on the faulty model."""
    trio = [agent("a", good), agent("b", bad), agent("c", good)]
    return {
        "debate": moot.Society(agents=trio, protocol=moot.Debate(rounds=2)),
        "reflection": moot.Society(
            agents=trio, protocol=moot.Debate(strategy="reflect-debate-reflect")
        ),
        "critic": moot.Society(
            agents=[
                agent("writer", good, "generator"),
                agent("harsh", bad, "critic"),
                agent("kind", good, "critic"),
            ],
            protocol=moot.CriticLoop(rounds=3),
        ),
        "mixture": moot.Society(
            agents=[agent(n, m, "proposer") for n, m in (("a", good), ("b", bad), ("c", good))],
            protocol=moot.MixtureOfAgents(layers=2),
            aggregator=moot.Judge(agent=agent("boss", good, "aggregator")),
        ),
        "judge": moot.Society(
            agents=[agent("a", good), agent("c", good)],
            protocol=moot.Debate(rounds=2),
            aggregator=moot.Judge(agent=agent("judge", bad, "judge")),
        ),
        "rank": moot.Society(
            agents=trio,
            protocol=moot.Debate(rounds=1),
            aggregator=moot.PairwiseRank(
                judge=agent("ranker", good, "judge"), fuser=agent("fuser", good, "aggregator")
            ),
        ),
        "router": moot.Society(
            agents=[agent("b", bad), agent("c", good)],
            protocol=moot.Router(rules={"b": ["sum"], "c": ["sum"]}, top_k=2),
        ),
        "cascade": moot.Society(
            agents=[agent("b", bad), agent("c", good)],
            protocol=moot.Cascade(tiers=[["b"], ["c"]], threshold=1.0),
        ),
        "pipeline": moot.Society(
            agents=[agent("a", good), agent("b", bad), agent("c", good)],
            protocol=moot.Pipeline(),
        ),
    }


PROTOCOLS = list(societies(ScriptedChatModel(respond=str), ScriptedChatModel(respond=str)))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_faulty_member_does_not_sink_the_run(protocol, fault):
    respond = rate_limited_twice() if fault == "rate-limited" else FAULTS[fault]
    bad = ScriptedChatModel(respond=respond)
    good = ScriptedChatModel(respond=healthy)
    society = societies(bad, good)[protocol]
    faulty = {a.name for a in society.agents if a.model is bad}
    faulty |= {a.name for a in society.aggregator.agents() if a.model is bad}

    started = time.monotonic()
    result = society.run("What is the sum of 3 and 4?")
    assert time.monotonic() - started < 20

    # Healthy turns are all there, with their text and usage.
    healthy_turns = [turn for turn in result.turns if turn.agent not in faulty]
    # (A cascade whose first tier recovers answers there and asks nobody else.)
    assert healthy_turns or protocol == "cascade"
    assert all(turn.text and not turn.failed for turn in healthy_turns)
    assert all(turn.usage.output_tokens > 0 and turn.usage.calls == 1 for turn in healthy_turns)
    assert result.usage.calls == sum(turn.usage.calls for turn in result.turns)

    # Failed turns say why; only faulty members fail.
    failed = [turn for turn in result.turns if turn.failed]
    assert {turn.agent for turn in failed} <= faulty
    if fault in FAILING:
        assert failed and all(FAILING[fault] in (turn.error or "") for turn in failed)
    if fault == "fails-in-round-2":
        assert all(turn.round == 2 and "ConnectionResetError" in turn.error for turn in failed)
    if fault == "rate-limited":
        assert not failed
        retried = [turn for turn in result.turns if turn.agent in faulty]
        assert retried and all(turn.usage.retries == 2 for turn in retried)
        assert all(turn.usage.calls == 3 for turn in retried)
    if fault == "surrogates":
        texts = [turn.text for turn in result.turns if turn.agent in faulty]
        assert texts and all("caf\ufffd" in text for text in texts)
        result.model_dump_json()  # the record can be written

    # The answer comes from the healthy members.
    assert result.answer == "7"
    judge_failed = fault in ("empty", "huge", "raises", "hangs", "fails-in-round-2")
    assert ("fallback" in result.details) == (protocol == "judge" and judge_failed)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["raises", "hangs", "rate-limited", "surrogates"])
async def test_async_runs_survive_the_same_faults(fault):
    respond = rate_limited_twice() if fault == "rate-limited" else FAULTS[fault]
    bad = ScriptedChatModel(respond=respond, delay=5 if fault == "hangs" else 0)
    good = ScriptedChatModel(respond=healthy)
    result = await societies(bad, good)["debate"].arun("What is 3 + 4?")
    assert result.answer == "7"
    b_turns = [turn for turn in result.turns if turn.agent == "b"]
    assert len(b_turns) == 2
    if fault in FAILING:
        assert all(FAILING[fault] in (turn.error or "") for turn in b_turns)


def test_a_round_where_everyone_fails_ends_the_run():
    broken = ScriptedChatModel(respond=raises)
    society = moot.Society(
        agents=[agent(f"a{i}", broken) for i in range(3)], protocol=moot.Debate(rounds=100)
    )
    result = society.run("q")
    assert result.stop_reason == "failed" and result.rounds == 1
    assert len(result.turns) == 3 and result.answer is None


def test_a_transient_error_that_persists_fails_after_the_retries():
    always = ScriptedChatModel(respond=lambda m: (_ for _ in ()).throw(RateLimited("429")))
    society = moot.Society(
        agents=[agent("a", always), agent("b", ScriptedChatModel(respond=healthy))],
        protocol=moot.Debate(rounds=1),
    )
    turn = society.run("q").turns[0]
    assert turn.failed and turn.usage.calls == 3 and turn.usage.retries == 2
    assert len(always.calls) == 3


def test_other_errors_are_not_retried():
    broken = ScriptedChatModel(respond=raises)
    society = moot.Society(agents=[agent("a", broken)], protocol=moot.Debate(rounds=1))
    assert society.run("q").turns[0].usage.retries == 0 and len(broken.calls) == 1


def test_an_extractor_that_raises_fails_only_its_turn():
    def picky(text: str) -> str:
        raise ValueError("cannot read this")

    model = ScriptedChatModel(respond=healthy)
    society = moot.Society(
        agents=[agent("a", model)],
        protocol=moot.Debate(rounds=1),
        aggregator=moot.MajorityVote(extract=picky),
    )
    (turn,) = society.run("q").turns
    assert turn.error == "ValueError: cannot read this" and turn.usage.output_tokens > 0


class PeakCounter:
    """A responder that records how many calls were in flight at once."""

    def __init__(self, delay: float = 0.5) -> None:  # room for a thread that starts late
        self.delay, self.now, self.peak = delay, 0, 0
        self.lock = threading.Lock()

    def __call__(self, messages) -> str:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(self.delay)
        with self.lock:
            self.now -= 1
        return "Answer: 7"


def _stream_in_thread(society: moot.Society, question: str, limit: float) -> list:
    """The stream's events, from a thread given `limit` seconds (a hang fails the test)."""
    events: list = []
    worker = threading.Thread(target=lambda: events.extend(society.stream(question)), daemon=True)
    worker.start()
    worker.join(limit)
    assert not worker.is_alive(), "the stream hung"
    return events


@pytest.mark.parametrize("agents, max_concurrency", [(1, None), (3, 1), (4, 2)])
def test_a_streamed_run_ends_when_one_call_at_a_time_may_run(agents, max_concurrency):
    model = ScriptedChatModel(respond=lambda messages: "Answer: 7")
    society = moot.Society(
        agents=[moot.Agent(name=f"a{i}", model=model) for i in range(agents)],
        protocol=moot.Debate(rounds=2),
        max_concurrency=max_concurrency,
    )
    events = _stream_in_thread(society, "What is 3+4?", 20)
    assert isinstance(events[-1], moot.ResultEvent)
    assert events[-1].result.answer == "7"


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("max_concurrency", [1, 3])
def test_max_concurrency_is_the_number_of_calls_in_flight(streamed, max_concurrency):
    counter = PeakCounter()
    model = ScriptedChatModel(respond=counter)
    society = moot.Society(
        agents=[moot.Agent(name=f"a{i}", model=model) for i in range(4)],
        protocol=moot.Debate(rounds=1),
        max_concurrency=max_concurrency,
    )
    if streamed:
        _stream_in_thread(society, "What is 3+4?", 20)
    else:
        society.run("What is 3+4?")
    assert counter.peak == max_concurrency


@pytest.mark.parametrize(
    "flag, value", [("--timeout", "inf"), ("--timeout", "nan"), ("--temperature", "inf")]
)
def test_infinite_numbers_are_refused_before_any_call(capsys, flag, value):
    from moot.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["debate", "q?", "--model", "test", flag, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and flag in err and "finite" in err


def test_an_infinite_setting_in_python_is_a_config_error():
    with pytest.raises(moot.ConfigError, match="temperature"):
        moot.Agent(name="a", temperature=float("inf"))


def test_a_run_whose_options_are_bad_leaves_nothing_to_resume(capsys, tmp_path):
    from moot.cli import main

    checkpoint = str(tmp_path / "n.sqlite")
    status = main(["debate", "q?", "--model", "test", "--html", "/nonexistent/x.html",
                   "--checkpoint", checkpoint, "--thread", "t"])  # fmt: skip
    assert status != 0 and "does not exist" in capsys.readouterr().err
    status = main(["resume", "--checkpoint", checkpoint, "--thread", "t"])
    err = capsys.readouterr().err
    assert status != 0 and err.startswith("error:") and "Traceback" not in err


def test_resuming_a_thread_that_saved_no_turn_says_so(tmp_path):
    from moot.checkpoints import remember_run

    checkpoint = tmp_path / "n.sqlite"
    remember_run(checkpoint, "t", {"command": "debate"})
    model = ScriptedChatModel(respond=healthy)
    society = moot.Society(agents=[agent("a", model)], protocol=moot.Debate(rounds=1))
    with pytest.raises(moot.ConfigError, match="holds no run to resume"):
        society.resume(checkpoint=checkpoint, thread_id="t")


def _turns_of(result: moot.Result) -> list[tuple]:
    return sorted((t.round, t.agent, t.role, t.text, t.answer, t.error) for t in result.turns)


def _interrupting(at: int) -> Callable[..., str]:
    """A healthy model, but its `at`-th call (from 1) is cut by Ctrl-C, as llama.cpp's is:
    the main thread gets KeyboardInterrupt and the call itself raises CallCancelledError."""
    import _thread

    from moot.errors import CallCancelledError

    calls = iter(range(1, 10_000))

    def respond(messages, info: CallInfo) -> str:
        if next(calls) == at:
            _thread.interrupt_main()
            raise CallCancelledError("the llama.cpp call was cancelled")
        return healthy(messages, info)

    return respond


@pytest.mark.timeout(120)
@pytest.mark.parametrize("at", [1, 2, 4])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ctrl_c_then_resume_gives_the_turns_of_an_uninterrupted_run(protocol, at, tmp_path):
    # Ctrl-C as Python handles it, even where the suite was started in the background (a
    # shell then starts it with SIGINT ignored, and `interrupt_main` does nothing).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_then_resume(protocol, at, tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_then_resume(protocol: str, at: int, tmp_path) -> None:
    good = ScriptedChatModel(respond=healthy)
    expected = _turns_of(societies(good, good)[protocol].run("What is 3+4?"))
    cut = ScriptedChatModel(respond=_interrupting(at))
    checkpoint = tmp_path / "c.sqlite"
    interrupted = societies(cut, cut)[protocol]
    try:
        interrupted.run("What is 3+4?", checkpoint=checkpoint, thread_id="t")
    except KeyboardInterrupt:
        pass
    else:  # the run ended before the interrupt arrived: nothing to resume
        time.sleep(0.1)  # a pending interrupt must not hit the next test
        return
    resumed = societies(good, good)[protocol].resume(checkpoint=checkpoint, thread_id="t")
    assert _turns_of(resumed) == expected
    assert not any(turn.failed for turn in resumed.turns)
