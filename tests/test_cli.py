"""The `moot` command, run as a user runs it: a subprocess, its exit code, stdout and stderr."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def moot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moot.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_debate_json_on_the_embedded_model():
    run = moot(
        "debate", "What is 12+30?", "--agents", "3", "--rounds", "2", "--max-tokens", "64", "--json"
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["rounds"] == 2
    assert len(result["turns"]) == 6
    assert {(t["round"], t["agent"]) for t in result["turns"]} == {
        (r, f"agent{i}") for r in (1, 2) for i in (1, 2, 3)
    }
    for turn in result["turns"]:
        assert {"round", "agent", "role", "text", "answer"} <= set(turn)
    usage = result["usage"]
    assert usage["calls"] == 6
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_debate_live_view_prints_rounds_usage_and_answer():
    run = moot("debate", "What is 2+3?", "--agents", "2", "--rounds", "2", "--max-tokens", "32")
    assert run.returncode == 0, run.stderr
    for expected in ("agent1 · round 1", "agent2 · round 2", "usage", "total", "final answer"):
        assert expected in run.stdout


def test_models_lists_the_embedded_model():
    run = moot("models")
    assert run.returncode == 0
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in run.stdout
    assert "llama:" in run.stdout and "openai:" in run.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "gpt5"], "unknown model spec 'gpt5'"),
        (["--model", "llama:/nowhere/model.gguf"], "GGUF file not found: /nowhere/model.gguf"),
        (["--rounds", "0"], "argument --rounds: must be at least 1, got 0"),
        (["--agents", "0"], "argument --agents: must be at least 1, got 0"),
        (["--agents", "three"], "expected a whole number, got 'three'"),
        (["-o", "n_kontext=5"], "unknown llama option(s) n_kontext"),
        (["--model", "openai:gpt-4o-mini"], "needs OPENAI_API_KEY"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, message, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    run = moot("debate", "What is 1+1?", *args)
    assert run.returncode == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_empty_question_is_refused():
    run = moot("debate", "  ")
    assert run.returncode == 2
    assert "the question is empty" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_question_longer_than_the_context_is_refused_before_any_call():
    run = moot("debate", "word " * 5000, "-o", "n_ctx=1024")
    assert run.returncode == 2
    assert "context window is 1024" in run.stderr
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_checkpointed_debate_resumes_from_the_cli(tmp_path):
    database = str(tmp_path / "runs.sqlite")
    args = ("What is 2+3?", "--agents", "2", "--rounds", "2", "--max-tokens", "24")
    first = moot("debate", *args, "--checkpoint", database, "--thread", "t1", "--json")
    assert first.returncode == 0, first.stderr
    resumed = moot("resume", "--checkpoint", database, "--thread", "t1", "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["turns"] == json.loads(first.stdout)["turns"]
    missing = moot("resume", "--checkpoint", database, "--thread", "t2")
    assert missing.returncode == 2 and "holds no run 't2'" in missing.stderr
    no_thread = moot("debate", *args, "--checkpoint", database)
    assert no_thread.returncode == 2 and "--checkpoint needs --thread" in no_thread.stderr


def test_moderator_stops_a_debate_from_stdin():
    run = subprocess.run(
        [sys.executable, "-m", "moot.cli", "debate", "What is 2+3?", "--agents", "2",
         "--rounds", "3", "--max-tokens", "24", "--moderate"],
        input="stop\n",
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "moderator after round 1" in run.stdout
    assert "stopped: moderator" in run.stdout
    assert "round 2" not in run.stdout
