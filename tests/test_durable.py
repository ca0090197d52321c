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
