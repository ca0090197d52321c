"""What a newcomer met following the README (issue 42), each pinned by a test."""

from __future__ import annotations

import json

import moot
from moot.cli import main
from moot.testing import CallInfo, ScriptedChatModel


def moot_cli(capsys, *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def _two_agree_one_mumbles(messages, info: CallInfo) -> str:
    return "I am not sure." if info.agent == "c" else "Answer: 30"


def test_consensus_counts_an_agent_without_an_answer_as_disagreeing():
    model = ScriptedChatModel(respond=_two_agree_one_mumbles)
    society = moot.Society(
        agents=[moot.Agent(name=name, model=model) for name in "abc"],
        protocol=moot.Debate(rounds=3, consensus=1.0),
    )
    result = society.run("What is 10+20?")
    assert result.rounds == 3 and result.stop_reason == "rounds"
    assert [round(stats.agreement, 3) for stats in result.conformity] == [0.667] * 3
    assert result.conformity[0].answers == {"30": 2}


def test_consensus_below_one_is_a_share_of_every_agent_of_the_round():
    model = ScriptedChatModel(respond=_two_agree_one_mumbles)
    society = moot.Society(
        agents=[moot.Agent(name=name, model=model) for name in "abc"],
        protocol=moot.Debate(rounds=3, consensus=0.6),
    )
    result = society.run("What is 10+20?")
    assert (result.rounds, result.stop_reason) == (1, "consensus")


def test_the_cli_cache_answers_a_seeded_debate_the_second_time(capsys, tmp_path):
    cache = str(tmp_path / "c.sqlite")
    args = (
        "debate",
        "What is 2+2?",
        "--model",
        "test",
        "--rounds",
        "2",
        "--cache",
        cache,
        "--json",
    )
    first = moot_cli(capsys, *args, "--seed", "1")
    second = moot_cli(capsys, *args, "--seed", "1")
    assert first[0] == second[0] == 0
    assert json.loads(first[1])["usage"]["calls"] == 6
    assert json.loads(second[1])["usage"] == {
        **json.loads(first[1])["usage"],
        "calls": 0,
        "cached_calls": 6,
    }
    assert "note:" not in first[2]


def test_the_cli_says_once_when_its_cache_can_never_answer(capsys, tmp_path):
    cache = str(tmp_path / "c.sqlite")
    status, _, err = moot_cli(capsys, "debate", "q?", "--model", "test", "--cache", cache, "--json")
    assert status == 0
    assert err.count("note: --cache stores no call of agent1, agent2, agent3") == 1
    assert "--seed" in err


def test_seeded_agents_differ_from_each_other(capsys):
    status, out, _ = moot_cli(capsys, "debate", "q?", "--model", "test", "--seed", "5", "--json")
    assert status == 0
    from moot.cli.debate import society_of

    spec = {"command": "debate", "agents": 3, "rounds": 1, "model": "test", "model_option": [],
            "extract": None, "temperature": None, "max_tokens": None, "max_concurrency": None,
            "consensus": None, "seed": 5}  # fmt: skip
    assert [agent.seed for agent in society_of(spec).agents] == [5, 6, 7]


def test_a_paper_prompt_set_brings_its_own_answer_format_in_python_as_on_the_cli():
    model = ScriptedChatModel(respond=lambda messages: "I pick (B).")
    society = moot.Society(
        agents=[moot.Agent(name=f"a{i}", model=model) for i in range(3)],
        protocol=moot.Debate(rounds=1, prompt_set="du-mmlu"),
    )
    assert society.aggregator.extract == "choice"
    assert society.run("Which? (A) x (B) y (C) z (D) w").answer == "B"


def test_a_named_aggregator_that_misreads_a_paper_prompt_set_is_still_refused():
    import pytest

    with pytest.raises(moot.ConfigError, match="extract"):
        moot.Society(
            agents=[moot.Agent(name="a", model="test")],
            protocol=moot.Debate(prompt_set="du-mmlu"),
            aggregator=moot.MajorityVote(extract="number"),
        )


def test_the_subpackages_the_readme_calls_are_there_after_import_moot_alone():
    import subprocess
    import sys

    names = ["presets.machinesom", "viewer.render", "bench.run_bench", "merge.run"]
    code = "import moot\n" + "".join(f"moot.{name}\n" for name in names)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
