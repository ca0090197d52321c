"""The public contracts: a protocol and an aggregator of your own, one way to run (sync and
async take the same keywords), moot's own errors, and settings that are never silently
ignored."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

import moot
from moot.checkpoints import serializer
from moot.testing import CallInfo, ScriptedChatModel, test_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def relay_class():
    spec = importlib.util.spec_from_file_location("relay_example", EXAMPLES / "relay.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Relay


def by_agent(messages, info: CallInfo) -> str:
    """Agent aN answers N, in every round."""
    return f"Answer: {info.agent[1:]}"


def agents(count: int, model=None) -> list[moot.Agent]:
    model = model or ScriptedChatModel(respond=by_agent)
    return [moot.Agent(name=f"a{i}", model=model) for i in range(count)]


# -- a protocol of your own ----------------------------------------------------------------------


def test_a_user_written_protocol_runs_sync_and_async():
    Relay = relay_class()
    seen: list[tuple[str | None, int | None, str]] = []

    def respond(messages, info: CallInfo) -> str:
        seen.append((info.agent, info.round, messages[-1].text))
        return f"Answer: {info.round * 10}"

    society = moot.Society(
        agents=agents(3, ScriptedChatModel(respond=respond)), protocol=Relay(handover="Before:")
    )
    result = society.run("What is 1+1?")
    assert [(t.round, t.agent, t.answer, t.peers) for t in result.turns] == [
        (1, "a0", "10", []),
        (2, "a1", "20", ["a0"]),
        (3, "a2", "30", ["a1"]),
    ]
    assert result.answer == "30" and result.usage.calls == 3
    assert "Before:" not in seen[0][2]
    assert "Before:\nAnswer: 10" in seen[1][2] and "Before:\nAnswer: 20" in seen[2][2]


async def test_a_user_written_protocol_runs_async():
    society = moot.Society(agents=agents(2), protocol=relay_class()())
    result = await society.arun("q")
    assert [turn.answer for turn in result.turns] == ["0", "1"] and result.answer == "1"


def test_a_protocol_without_build_cannot_be_made():
    class Unfinished(moot.BaseProtocol):
        pass

    with pytest.raises(TypeError, match="build"):
        Unfinished()


def test_a_user_written_aggregator_decides():
    class Lowest(moot.Vote):
        def choose(self, turns):
            answers = [int(turn.answer) for turn in turns if turn and turn.answer]
            return str(min(answers)) if answers else None

    society = moot.Society(agents=agents(3), aggregator=Lowest(), protocol=moot.Debate(rounds=1))
    assert society.run("q").answer == "0"


def test_protocols_add_their_own_details():
    router = moot.Society(agents=agents(2), protocol=moot.Router(rules={"a1": ["sum"]}))
    assert router.run("a sum").details == {"route": ["a1"]}
    cascade = moot.Society(agents=agents(2), protocol=moot.Cascade(threshold=1.0))
    tiers = cascade.run("q").details["tiers"]
    assert [tier["agents"] for tier in tiers] == [["a0"]]  # one sure agent: no escalation
    assert moot.Society(agents=agents(2)).run("q").details == {}


# -- one way to run ------------------------------------------------------------------------------


async def test_async_runs_checkpoint_to_a_path_and_resume(tmp_path):
    calls = []
    model = ScriptedChatModel(respond=lambda m: calls.append(1) or "Answer: 4")
    society = moot.Society(agents=agents(2, model), protocol=moot.Debate(rounds=2))
    database = tmp_path / "async.sqlite"
    first = await society.arun("q", checkpoint=database, thread_id="t")
    again = await society.aresume(checkpoint=database, thread_id="t")
    assert len(calls) == 4 and again.turns == first.turns and again.answer == "4"
    # The sync side reads what the async side wrote.
    assert society.resume(checkpoint=database, thread_id="t").turns == first.turns


async def test_async_runs_take_a_moderator_sync_or_async():
    model = ScriptedChatModel(respond=lambda m: "Answer: 1")
    society = moot.Society(agents=agents(2, model), protocol=moot.Debate(rounds=3))
    rounds: list[int] = []

    async def moderator(round, turns):
        rounds.append(round)
        return moot.Moderation(note="Check the units.") if round == 1 else None

    result = await society.arun("q", moderator=moderator)
    assert rounds == [1, 2] and result.rounds == 3
    assert "Check the units." in model.calls[2][-1].text  # round 2 of the first agent

    stopping = await society.arun("q", moderator=lambda round, turns: moot.Moderation(stop=True))
    assert stopping.rounds == 1 and stopping.stop_reason == "moderator"


async def test_astream_takes_the_same_keywords_as_stream():
    society = moot.Society(agents=agents(2), protocol=moot.Debate(rounds=2))
    saver = InMemorySaver(serde=serializer())
    events = [
        event
        async for event in society.astream(
            "q", checkpoint=saver, thread_id="s", moderator=lambda r, t: None
        )
    ]
    assert isinstance(events[-1], moot.ResultEvent)
    assert sum(isinstance(event, moot.TurnEvent) for event in events) == 4
    assert len(society.resume(checkpoint=saver, thread_id="s").turns) == 4


def test_a_sync_run_refuses_an_async_moderator():
    society = moot.Society(agents=agents(2), protocol=moot.Debate(rounds=2))

    async def moderator(round, turns):
        return None

    with pytest.raises(moot.ConfigError, match="use arun"):
        society.run("q", moderator=moderator)


# -- errors: moot's own, never silence ------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: moot.Society(agents=[]), "Society: agents: List should have at least 1 item"),
        (lambda: moot.Agent(name="x", temprature=0.1), "Agent: temprature: unknown field"),
        (lambda: moot.Debate(rounds=0), "Debate: rounds: Input should be greater than or equal"),
        (lambda: moot.Debate(roundz=2), "Debate: roundz: unknown field"),
        (lambda: moot.MajorityVote(min_votes=0), "MajorityVote: min_votes"),
        (
            lambda: moot.Society(agents=agents(1), protocol=moot.Debate(topology={"zed": []})),
            "Society: the debate names unknown agents: zed",
        ),
        (
            lambda: moot.MixtureOfAgents(layers=2, rounds=5),
            "layers=2 and rounds=5 disagree",
        ),
        (
            lambda: moot.Society(
                agents=[moot.Agent(name="g", role="generator", model="test"),
                        moot.Agent(name="c", role="critic", model="test")],
                protocol=moot.CriticLoop(),
                aggregator=moot.Judge(agent=moot.Agent(name="j", role="judge", model="test")),
            ),
            "a critic loop's answer is its last draft, so a Judge aggregator would never be used",
        ),
        (
            lambda: moot.Society(
                agents=agents(2),
                protocol=moot.Pipeline(),
                aggregator=moot.WeightedVote(weights={"a0": 2}),
            ),
            "a pipeline's answer is its last stage's, so a WeightedVote aggregator would never",
        ),
        (
            lambda: moot.Society(
                agents=agents(2),
                protocol=moot.Cascade(),
                aggregator=moot.Judge(agent=moot.Agent(name="j", model="test")),
            ),
            "a cascade weighs each tier with a vote",
        ),
    ],
)  # fmt: skip
def test_bad_settings_are_config_errors_that_name_the_field(make, message):
    with pytest.raises(moot.ConfigError) as caught:
        make()
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)  # code catching pydantic's errors still works


def test_mixture_takes_rounds_as_its_layers():
    assert moot.MixtureOfAgents(rounds=4).layers == 4
    assert moot.MixtureOfAgents(layers=2, rounds=2).rounds == 2


def test_recursion_limits_follow_the_society():
    many = agents(30)
    assert moot.Cascade().recursion_limit(many) >= 3 * 30
    assert moot.Pipeline().recursion_limit(many) > 30
    society = moot.Society(agents=many, protocol=moot.Pipeline())
    result = society.run("q")
    assert result.rounds == 30 and result.answer == "29"


# -- the test model spec ------------------------------------------------------------------------


def test_the_test_spec_names_agent_and_round():
    model = moot.load_model("test")
    society = moot.Society(agents=agents(2, model), protocol=moot.Debate(rounds=2))
    result = society.run("q")
    assert [turn.text.split(":")[0] for turn in result.turns] == [
        "a0 in round 1",
        "a1 in round 1",
        "a0 in round 2",
        "a1 in round 2",
    ]
    assert result.answer == "42"
    assert moot.load_model("test:Answer: 7").invoke("q").text == "Answer: 7"
    assert test_model(delay=0.0).invoke("q").text.endswith("Answer: 42")


@pytest.mark.parametrize(
    ("spec", "message"),
    [("llama", "'llama' needs a path"), ("openai:", "ends at the colon"), ("gpt5", "unknown")],
)
def test_incomplete_specs_say_what_is_missing(spec, message):
    with pytest.raises(moot.ModelSpecError, match=message):
        moot.load_model(spec)


def test_requests_per_second_spaces_the_calls_of_every_agent():
    import time

    model = moot.load_model("test", requests_per_second=20)
    society = moot.Society(agents=agents(4, model), protocol=moot.Debate(rounds=2))
    started = time.monotonic()
    assert society.run("q").usage.calls == 8
    assert time.monotonic() - started >= 7 / 20  # 8 calls, at most 20 a second
    with pytest.raises(moot.ModelSpecError, match="requests_per_second must be a number"):
        moot.load_model("test", requests_per_second=0)
