"""Counts from files and method names are checked against their bounds before anything is built:
`copies: 10000000` or `vote-10000000` used to build ten million agents (a minute, gigabytes)
before the society refused them."""

from __future__ import annotations

from pathlib import Path

import pytest

import moot
import moot.bench.methods as methods
import moot.spec as spec
from moot.bench import MethodSettings, build_method
from moot.bench.methods import check_method
from moot.cli import main
from moot.graphs._rounds import MAX_ROUNDS
from moot.society import MAX_AGENTS
from moot.testing import ScriptedChatModel

HUGE = "1" + "0" * 7


@pytest.fixture
def no_agents_built(monkeypatch):
    """Fail the test if any agent is made."""

    def refuse(*args, **kwargs):
        raise AssertionError("an agent was built before the count was checked")

    monkeypatch.setattr(spec, "Agent", refuse)  # a society's agents
    monkeypatch.setattr(spec.AgentSpec, "each", refuse)  # a file's copies
    monkeypatch.setattr(methods, "AgentSpec", refuse)  # a method's agents


def society_file_at(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "society.yaml"
    path.write_text(text)
    return path


LONG_LIST = "agents:\n" + "".join(f"  - {{name: a{i}}}\n" for i in range(MAX_AGENTS + 1))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (f"agents:\n  - {{name: a}}\n  - name: b\n    copies: {HUGE}\n", ":4: agents.1.copies:"),
        (
            "agents:\n  - {name: a, copies: 600}\n  - {name: b, copies: 401}\n",
            ":2: agents.0.copies:",
        ),
        (LONG_LIST, ":1: agents:"),
    ],
    ids=["one entry", "entries together", "a long list"],
)
def test_a_society_file_with_too_many_agents_is_refused_before_they_are_built(
    tmp_path, no_agents_built, text, where
):
    path = society_file_at(tmp_path, text)
    with pytest.raises(moot.ConfigError) as caught:
        moot.load_society(path)
    message = str(caught.value)
    assert message.startswith(f"{path}{where}")
    assert "a society takes at most 1,000 (moot.society.MAX_AGENTS)" in message


def test_a_society_file_at_the_bound_still_loads(tmp_path):
    path = society_file_at(tmp_path, f"agents:\n  - {{name: a, copies: {MAX_AGENTS}}}\n")
    society = moot.load_society(path, model=ScriptedChatModel(respond=str))
    assert len(society.agents) == MAX_AGENTS


@pytest.mark.parametrize("protocol", ["debate, rounds", "critic, rounds", "mixture, layers"])
def test_a_society_file_with_absurd_rounds_is_refused_before_agents_are_built(
    tmp_path, no_agents_built, protocol
):
    kind, field = protocol.split(", ")
    path = society_file_at(
        tmp_path, f"agents:\n  - {{name: a}}\nprotocol: {{kind: {kind}, {field}: {HUGE}}}\n"
    )
    with pytest.raises(moot.ConfigError, match=rf":3: protocol.*{field}.* 100") as caught:
        moot.load_society(path)
    assert "more problem" not in str(caught.value)


def test_moot_run_refuses_huge_copies_in_one_error_line(tmp_path, capsys, no_agents_built):
    path = society_file_at(tmp_path, f"agents:\n  - {{name: a, copies: {HUGE}}}\n")
    assert main(["run", str(path), "What is 1+1?", "--model", "test"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:2: agents.0.copies: the agents come to 10,000,000")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("method", "message"),
    [
        (f"vote-{HUGE}", "at most 1,000 agents (moot.society.MAX_AGENTS)"),
        (f"self-consistency-{MAX_AGENTS + 1}", "at most 1,000 agents"),
        (f"debate-{HUGE}x2", "at most 1,000 agents"),
        (f"debate-3x{HUGE}", "a protocol runs at most 100 rounds"),
        (f"debate-3x{HUGE}-consensus-answers", "at most 100 rounds"),
        (f"moa-3x{HUGE}", "at most 100 layers"),
        (f"cascade-{MAX_AGENTS}", "at most 1,000 agents (moot.society.MAX_AGENTS); cascade-N adds"),
        ("vote-" + "9" * 5000, "at most 1,000 agents"),  # past int()'s 4,300 digits
        (f"vote-{HUGE}-stop2", "at most 1,000 agents"),
        ("vote-1000-stop" + "9" * 5000, "W must be from 2"),
    ],
)
def test_bench_methods_beyond_the_bounds_are_refused_before_agents_are_built(
    no_agents_built, method, message
):
    with pytest.raises(moot.ConfigError) as caught:
        check_method(method)
    assert message in str(caught.value) and len(str(caught.value)) < 200
    with pytest.raises(moot.ConfigError, match=message.split(" (")[0]):
        build_method(method, "number", MethodSettings(model=ScriptedChatModel(respond=str)))


def test_bench_methods_at_the_bounds_are_accepted():
    for method in (
        f"vote-{MAX_AGENTS}",
        f"debate-2x{MAX_ROUNDS}",
        f"cascade-{MAX_AGENTS - 1}",
        f"moa-1x{MAX_ROUNDS}",
        f"vote-{MAX_AGENTS}-stop{MAX_AGENTS}",
        f"vote-{MAX_AGENTS}-stop2",
    ):
        check_method(method)


def test_moot_bench_refuses_vote_ten_million_in_one_error_line(tmp_path, capsys, no_agents_built):
    args = ["bench", "--data", "arithmetic", "--limit", "2", "--model", "test"]
    assert main([*args, "--methods", f"vote-{HUGE}", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: method vote-{HUGE}: a society takes at most 1,000 agents " + (
        "(moot.society.MAX_AGENTS)"
    )
    assert not any("Traceback" in line for line in err)


def test_the_test_model_keeps_no_call_so_a_long_debate_stays_small():
    model = moot.load_model("test")
    society = moot.Society(
        agents=[moot.Agent(name=f"a{i}", model=model) for i in range(2)],
        protocol=moot.Debate(rounds=MAX_ROUNDS),
    )
    result = society.run("q")
    assert result.rounds == MAX_ROUNDS and model.calls == []
    assert result.turns[-1].text.startswith(f"a1 in round {MAX_ROUNDS}")


def test_moot_bench_refuses_absurd_trials_before_planning(tmp_path, capsys):
    args = ["bench", "--data", "arithmetic", "--limit", "2", "--model", "test", "--methods"]
    with pytest.raises(SystemExit) as exited:
        main([*args, "single", "--trials", "100000000", "--out", str(tmp_path / "b")])
    assert exited.value.code == 2
    assert "--trials: must be at most 1,000" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
