"""Checkpoints in a real SQLite file, kill and resume, and a moderator between rounds."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import moot
from moot.checkpoints import Moderation
from moot.testing import ScriptedChatModel

ROOT = Path(__file__).resolve().parent.parent


def helper(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.resume_helper", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_killed_debate_resumes_without_calling_finished_agents_again(tmp_path):
    log, database = tmp_path / "calls.log", tmp_path / "run.sqlite"
    first = helper(str(log), str(database), "t1")
    deadline = time.monotonic() + 60
    while "start a0 2\n" not in (log.read_text() if log.exists() else ""):
        assert first.poll() is None, "the run ended before round 2 began"
        assert time.monotonic() < deadline, "round 2 never began"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # round 1 is finished and saved; round 2 is in flight
    first.wait()
    killed_at = log.read_text()
    assert all(f"done a{i} 1" in killed_at for i in range(3))
    assert "done a0 2" not in killed_at

    second = helper(str(log), str(database), "t1", "--resume")
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 0
    result = moot.Result.model_validate_json(out)
    assert result.rounds == 3 and len(result.turns) == 9 and result.answer == "3"

    lines = log.read_text().splitlines()
    done = Counter(line for line in lines if line.startswith("done"))
    assert done == Counter({f"done a{i} {r}": 1 for i in range(3) for r in (1, 2, 3)})
    started_round_1 = [line for line in lines if line.startswith("start") and line.endswith(" 1")]
    assert len(started_round_1) == 3  # round 1 was not run again


def test_resuming_a_finished_run_calls_nobody(tmp_path):
    calls = []
    model = ScriptedChatModel(respond=lambda m: calls.append(1) or "Answer: 4")
    society = moot.Society(agents=[moot.Agent(name=f"a{i}", model=model) for i in range(2)])
    database = tmp_path / "run.sqlite"
    first = society.run("q", checkpoint=database, thread_id="t")
    again = society.resume(checkpoint=database, thread_id="t")
    assert len(calls) == 4
    assert again.answer == first.answer == "4" and again.turns == first.turns
    assert again.question == "q"


def test_a_checkpoint_needs_a_thread(tmp_path):
    society = moot.Society(agents=[moot.Agent(name="a", model=ScriptedChatModel(respond=str))])
    with pytest.raises(moot.ConfigError, match="needs a thread id"):
        society.run("q", checkpoint=tmp_path / "x.sqlite")


def test_a_moderator_note_reaches_every_agent_in_the_next_round():
    models = [ScriptedChatModel(respond=lambda m: "Answer: 1") for _ in range(2)]
    society = moot.Society(
        agents=[moot.Agent(name=f"a{i}", model=m) for i, m in enumerate(models)],
        protocol=moot.Debate(rounds=3),
    )
    asked = []

    def moderator(round, turns):
        asked.append((round, [turn.agent for turn in turns]))
        return Moderation(note="Check the carry digit.") if round == 1 else None

    result = society.run("q", moderator=moderator)
    assert asked == [(1, ["a0", "a1"]), (2, ["a0", "a1"])]  # not after the last round
    for model in models:
        assert "A moderator adds: Check the carry digit." in model.calls[1][-1].text
        # Round 3 replays the note where it was given, then shows no new one.
        assert "Check the carry digit." in model.calls[2][3].text
        assert "moderator" not in model.calls[2][-1].text
    assert result.rounds == 3 and result.stop_reason == "rounds"


def test_a_moderator_can_stop_the_debate():
    model = ScriptedChatModel(respond=lambda m: "Answer: 2")
    society = moot.Society(
        agents=[moot.Agent(name=f"a{i}", model=model) for i in range(3)],
        protocol=moot.Debate(rounds=4),
    )
    result = society.run("q", moderator=lambda round, turns: Moderation(stop=round == 2))
    assert result.rounds == 2 and result.stop_reason == "moderator" and result.answer == "2"
    assert len(model.calls) == 6


def test_streaming_with_a_moderator_yields_every_turn():
    model = ScriptedChatModel(respond=lambda m: "Answer: 2")
    society = moot.Society(agents=[moot.Agent(name=f"a{i}", model=model) for i in range(2)])
    events = list(society.stream("q", moderator=lambda round, turns: None))
    assert sum(isinstance(e, moot.TurnEvent) for e in events) == 4
    assert json.loads(events[-1].result.model_dump_json())["rounds"] == 2


def test_a_reused_thread_is_refused_and_fresh_starts_it_over(tmp_path):
    model = ScriptedChatModel(respond=lambda m: "Answer: 42")
    society = moot.Society(agents=[moot.Agent(name=f"a{i}", model=model) for i in range(2)])
    database = tmp_path / "run.sqlite"
    first = society.run("What is 12+30?", checkpoint=database, thread_id="t")
    with pytest.raises(moot.ConfigError, match="already holds a run of 'What is 12\\+30\\?'"):
        society.run("What is 7+8?", checkpoint=database, thread_id="t")
    assert society.resume(checkpoint=database, thread_id="t").turns == first.turns
    again = society.run("What is 7+8?", checkpoint=database, thread_id="t", fresh=True)
    assert again.question == "What is 7+8?" and len(again.turns) == 4
    assert society.resume(checkpoint=database, thread_id="t").question == "What is 7+8?"


async def test_async_runs_refuse_a_reused_thread_too(tmp_path):
    model = ScriptedChatModel(respond=lambda m: "Answer: 42")
    society = moot.Society(agents=[moot.Agent(name="a", model=model)])
    database = tmp_path / "run.sqlite"
    await society.arun("q1", checkpoint=database, thread_id="t")
    with pytest.raises(moot.ConfigError, match="already holds a run"):
        await society.arun("q2", checkpoint=database, thread_id="t")
    assert (await society.arun("q2", checkpoint=database, thread_id="t", fresh=True)).turns


async def test_cancelling_an_async_run_keeps_its_finished_turns(tmp_path):
    import asyncio

    round_2 = asyncio.Event()

    class Slow(ScriptedChatModel):
        async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
            if len(messages) > 2:  # a round-2 prompt: hold it until cancelled
                round_2.set()
                await asyncio.sleep(60)
            return await super()._agenerate(messages, stop, run_manager, **kwargs)

    model = Slow(respond=lambda m: "Answer: 5")
    society = moot.Society(
        agents=[moot.Agent(name=f"a{i}", model=model) for i in range(3)],
        protocol=moot.Debate(rounds=2),
    )
    database = tmp_path / "run.sqlite"
    run = asyncio.create_task(society.arun("q", checkpoint=database, thread_id="t"))
    await asyncio.wait_for(round_2.wait(), timeout=10)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    finisher = moot.Society(
        agents=[moot.Agent(name=f"a{i}", model=ScriptedChatModel(respond=lambda m: "Answer: 6"))
                for i in range(3)],
        protocol=moot.Debate(rounds=2),
    )  # fmt: skip
    result = await finisher.aresume(checkpoint=database, thread_id="t")
    assert [(t.round, t.answer) for t in result.turns] == [(1, "5")] * 3 + [(2, "6")] * 3


@pytest.mark.integration
@pytest.mark.parametrize("model", ["test", "local"])
def test_ctrl_c_stops_a_run_at_once(model):
    """A model stuck in a call (scripted: sleeping 60 s; llama.cpp: a 3000-token story, asked
    greedily: sampled, the embedded model may stop early) does not hold up Ctrl-C."""
    options = (
        ["-o", "delay=60"] if model == "test" else ["--max-tokens", "3000", "--temperature", "0"]
    )
    story = "Write a very long story about a lighthouse keeper, at least 3000 words."
    process = subprocess.Popen(
        [sys.executable, "-m", "moot.cli", "debate", story, "--agents", "2",
         "--model", model, *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(8)  # imports done (a slow machine), well inside the first round
    assert process.poll() is None
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, err = process.communicate(timeout=30)
    assert time.monotonic() - started < 3
    assert process.returncode == 130
    assert err.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in err


@pytest.mark.parametrize("when", ["loading", "reading the arguments"])
def test_ctrl_c_before_the_run_is_one_line(monkeypatch, capsys, when):
    """`moot` loads its modules (a second or two) and reads its arguments inside
    `moot.__main__.entry`, so a Ctrl-C then ends it as one during the run does, not with a
    traceback."""
    import moot.cli
    from moot.__main__ import entry

    class Interrupted:
        def find_spec(self, name, path=None, target=None):
            if name == "moot.cli":
                raise KeyboardInterrupt
            return None

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    if when == "loading":
        monkeypatch.delitem(sys.modules, "moot.cli")
        monkeypatch.setattr(sys, "meta_path", [Interrupted(), *sys.meta_path])
    else:
        monkeypatch.setattr(moot.cli, "build_parser", interrupted)
    with pytest.raises(SystemExit) as exited:
        entry()
    assert exited.value.code == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_import_moot_loads_nothing_heavy_until_a_name_is_used():
    """What makes the above matter: before the command's modules load, nothing slow has."""
    probe = (
        "import sys, moot\n"
        "heavy = ('langchain_core', 'langgraph', 'moot.cli')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "moot.Society\n"
        "print('langchain_core' in sys.modules, moot.graphs.cascade.calibrate.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["[]", "True calibrate"]  # as deep as before, once used


@pytest.mark.parametrize(
    "first", ["moot.graphs.base", "moot.aggregate.vote", "moot.tools.sandbox", "moot.spec"]
)
def test_any_module_imported_first_loads_without_a_circle(first):
    probe = f"import {first}, moot\nmoot.Society\nprint(moot.tools.sandbox.run_python.__name__)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout == "run_python\n", out.stderr


def test_every_public_name_resolves():
    assert set(moot.__all__) == set(moot._EXPORTS) and len(moot.__all__) == len(set(moot.__all__))
    for name in moot.__all__:
        value = getattr(moot, name)
        assert getattr(value, "__name__", name) == name and name in dir(moot)
    with pytest.raises(AttributeError, match="no attribute 'Socety'"):
        moot.Socety  # noqa: B018
    assert moot.errors.MootError is moot.MootError  # any subpackage, on first use
    assert {"graphs", "merge", "testing"} <= set(dir(moot))
