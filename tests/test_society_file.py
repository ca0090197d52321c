"""Society files: every example loads and runs, and mistakes are reported by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import moot
from moot.cli import main
from moot.testing import ScriptedChatModel

EXAMPLES = sorted((Path(__file__).parent.parent / "examples" / "societies").glob("*.yaml"))


def test_there_is_an_example_per_protocol():
    names = {path.stem for path in EXAMPLES}
    assert {"debate", "machinesom", "topology", "critic", "mixture", "judge"} <= names
    for stem in names:
        assert (EXAMPLES[0].parent.parent / f"{stem}.py").is_file(), f"no Python twin of {stem}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_each_example_runs_on_a_scripted_model(path):
    model = ScriptedChatModel(respond=lambda m: "Fine.\nVerdict: ACCEPT\nAnswer: 42")
    society = moot.load_society(path, model=model)
    result = society.run("What is 6*7?")
    assert result.answer == "42"
    assert result.usage.calls == len(model.calls) > 0
    assert not any(turn.failed for turn in result.turns)


def test_machinesom_example_matches_its_description():
    society = moot.load_society(EXAMPLES[0].parent / "machinesom.yaml")
    assert [agent.name for agent in society.agents] == ["bold", "calm1", "calm2"]
    assert [agent.trait for agent in society.agents] == [
        "overconfident",
        "easy-going",
        "easy-going",
    ]
    assert society.protocol.strategy == ["debate", "reflect", "debate"]
    assert society.protocol.rounds == 4
    assert society.aggregator.min_votes == 2


def test_named_models_are_shared(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "models:\n  small: {spec: local, n_ctx: 1024}\n"
        "agents:\n  - {name: a, copies: 2, model: small}\n  - {name: b, model: local}\n"
    )
    society = moot.load_society(path)
    models = society.context().models
    assert models[0] is models[1]
    assert models[0].context_window == 1024 and models[2].context_window != 1024


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "agents:\n  - {name: a}\nprotocol: {kind: debate, rouns: 2}\n",
            ":3: protocol.rouns: unknown field",
        ),
        (
            "agents:\n  - name: a\n    temperature: hot\n",
            ":3: agents.0.temperature: Input should be a valid number",
        ),
        (
            "agents:\n  - {name: a}\nprotocol: {kind: chat}\n",
            ":3: protocol: unknown kind: use one of 'cascade', 'critic', 'debate'",
        ),
        ("agents: []\n", ":1: agents: List should have at least 1 item"),
        (
            "agents:\n  - {name: a}\n  - {name: b, model: gpt5}\n",
            ":3: agents.1.model: 'gpt5' is neither a name under 'models' nor a model spec",
        ),
        ("agents:\n  - {name: a\n", ":3: not valid YAML"),
        (
            "agents:\n  - {name: a}\nprotocol:\n  kind: debate\n  rounds: 4\n"
            "  strategy: [debate]\n",
            ":3: protocol: strategy has 1 moves but rounds=4 needs 3",
        ),
        ("- just a list\n", "a society file is a mapping"),
        ("agents:\n  - {name: a}\n  - {name: a}\n", "agent names must be unique; repeated: a"),
    ],
)
def test_mistakes_name_the_line_and_the_field(tmp_path, text, expected):
    path = tmp_path / "society.yaml"
    path.write_text(text)
    with pytest.raises(moot.ConfigError) as caught:
        moot.load_society(path)
    assert expected in str(caught.value)
    assert str(caught.value).startswith(str(path))
    assert "\n" not in str(caught.value)


def test_missing_file():
    with pytest.raises(moot.ConfigError, match="cannot read society file nowhere.yaml"):
        moot.load_society("nowhere.yaml")


def test_cli_run_reports_a_bad_file_in_one_line(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("agents:\n  - {name: a, mood: happy}\n")
    assert main(["run", str(path), "What is 1+1?"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: agents.0.mood: unknown field" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.integration
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_each_example_runs_from_the_cli_on_the_embedded_model(path, capsys):
    assert main(["run", str(path), "What is 12+30?", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    turns = result["turns"]
    # A local model that states no readable answer is asked once more for its answer line.
    assert result["usage"]["calls"] == sum(t["usage"]["calls"] for t in turns) >= len(turns) > 0
    assert result["usage"]["total_tokens"] > 0
    assert result["stop_reason"] in {"rounds", "consensus", "accepted", "confident"}
    assert result["conformity"]


def test_agents_take_a_timeout_and_retries(tmp_path):
    path = tmp_path / "limits.yaml"
    path.write_text(
        "agents:\n  - {name: a, timeout: 2.5, retries: 0, retry_delay: 0.1}\n  - {name: b}\n"
    )
    a, b = moot.load_society(path, model=ScriptedChatModel(respond=str)).agents
    assert (a.timeout, a.retries, a.retry_delay) == (2.5, 0, 0.1)
    assert (b.timeout, b.retries) == (None, 2)
    path.write_text("agents:\n  - {name: a, timeout: -1}\n")
    with pytest.raises(moot.ConfigError, match=":2: agents.0.timeout: Input should be greater"):
        moot.load_society(path)
