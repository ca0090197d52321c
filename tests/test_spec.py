"""Society specs: every way a society is described (files, bench method names, presets, the CLI's
flags) makes a spec that builds the same society again from `spec_of` of it; protocols and
aggregators join the spec's schema by declaring their kind."""

from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

import moot
from moot.bench import MethodSettings
from moot.bench.methods import method_spec
from moot.cli import main
from moot.config import Config
from moot.kinds import AGGREGATORS, PROTOCOLS, declared_kinds
from moot.presets import machinesom_spec
from moot.society_file import load_spec
from moot.spec import AgentSpec, SocietySpec, society_fields, spec_of
from moot.testing import ScriptedChatModel

EXAMPLES = sorted((Path(__file__).parent.parent / "examples" / "societies").glob("*.yaml"))
METHODS = [
    "default",
    "single",
    "vote-3",
    "self-consistency-2",
    "debate-3x2",
    "debate-2x3-consensus",
    "debate-2x2-answers",
    "debate-2x2-consensus-answers",
    "debate-2x2-keep-anon",
    "debate-3x2-trajectory",
    "vote-3-select",
    "pal-2",
    "debate-2x2-pal1",
    "machinesom-debate-reflect-debate",
    "machinesom-oc2-reflect-debate-debate",
    "moa-3x2",
    "cascade-3",
    str(EXAMPLES[0]),
]


def _takes_du_prompts(method: str) -> bool:
    """Du et al.'s prompts are for single, vote, debate and MachineSoM, without program agents."""
    return not method.startswith(("moa", "cascade")) and "pal" not in method


def society_from_spec(spec) -> moot.Society:
    """What `Society.from_spec(spec)` does."""
    return moot.Society(**society_fields(spec))


def assert_round_trips(spec: SocietySpec) -> moot.Society:
    """spec -> society -> spec -> society: the same society, and the second spec a fixpoint."""
    society = society_from_spec(spec)
    again = spec_of(society)
    rebuilt = society_from_spec(again)
    assert spec_of(rebuilt) == again
    assert rebuilt.agents == society.agents
    assert rebuilt.protocol == society.protocol and type(rebuilt.protocol) is type(society.protocol)
    assert rebuilt.aggregator == society.aggregator
    assert (rebuilt.max_concurrency, rebuilt.vote_on) == (society.max_concurrency, society.vote_on)
    assert rebuilt.answer_schema is society.answer_schema
    return society


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_every_example_file_round_trips(path):
    spec = load_spec(path)
    society = assert_round_trips(spec)
    assert society == moot.load_society(path)
    # ...and so does its file form: what a file holds reads back as the same spec
    assert SocietySpec.model_validate(spec.file_data()) == spec
    rewritten = SocietySpec.model_validate(spec_of(society).file_data())
    assert society_from_spec(rewritten) == society


@pytest.mark.parametrize(
    ("method", "prompts"),
    [(method, "moot") for method in METHODS]
    + [(method, "du-gsm8k") for method in METHODS if _takes_du_prompts(method)],
    ids=lambda value: Path(value).name,
)
def test_every_bench_method_round_trips(method, prompts):
    settings = MethodSettings(model=ScriptedChatModel(respond=str), prompt_set=prompts, seed=3)
    spec = method_spec(method, "number", settings, trial=1)
    society = assert_round_trips(spec)
    assert society == moot.bench.build_method(method, "number", settings, trial=1)
    assert all(agent.seed is not None for agent in society.agents)


def test_presets_round_trip():
    for prompts, extract in (("moot", "choice"), ("som", "choice"), ("som", "boxed")):
        assert_round_trips(machinesom_spec(1, "debate-reflect-debate", "test", extract, prompts))
    agent = moot.Agent(name="a", model="test", seed=4, temperature=0.5)
    society = moot.presets.self_consistency(agent, samples=3)
    assert [a.seed for a in society.agents] == [4, 5, 6]
    assert society == society_from_spec(spec_of(society))


def test_the_debate_command_stores_a_spec_that_resumes(capsys, tmp_path):
    database = str(tmp_path / "runs.sqlite")
    args = ["debate", "2+3?", "--model", "test", "--agents", "2", "--rounds", "2", "--seed", "7",
            "-o", "delay=0"]  # fmt: skip
    assert main([*args, "--checkpoint", database, "--thread", "t", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    stored = _stored(database, "t")
    assert stored["spec"]["models"] == {"model": {"spec": "test", "delay": 0}}
    assert [agent["seed"] for agent in stored["spec"]["agents"]] == [7, 8]
    assert stored["spec"]["aggregator"] == {"kind": "trajectory", "extract": "auto"}
    assert main(["resume", "--checkpoint", database, "--thread", "t", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["turns"] == first["turns"]


def test_a_run_stored_before_specs_still_resumes(capsys, tmp_path):
    database = str(tmp_path / "runs.sqlite")
    args = ["debate", "2+3?", "--model", "test", "--agents", "2"]
    assert main([*args, "--checkpoint", database, "--thread", "t", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    old = {"command": "debate", "agents": 2, "rounds": 2, "model": "test", "model_option": [],
           "extract": "auto", "temperature": None, "max_tokens": None, "max_concurrency": None,
           "consensus": None}  # fmt: skip
    moot.checkpoints.remember_run(database, "t", old)
    assert main(["resume", "--checkpoint", database, "--thread", "t", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["turns"] == first["turns"]


def test_run_stores_the_files_society_not_its_path(capsys, tmp_path):
    society = tmp_path / "pair.yaml"
    society.write_text("agents:\n  - {name: a, copies: 2}\nprotocol: {kind: debate, rounds: 1}\n")
    database = str(tmp_path / "runs.sqlite")
    run = ["run", str(society), "q", "--model", "test:Answer: 7", "--retries", "0"]
    assert main([*run, "--checkpoint", database, "--thread", "t", "--json"]) == 0
    capsys.readouterr()
    society.write_text("agents:\n  - {name: somebody_else}\n")  # changed after the run started
    assert main(["resume", "--checkpoint", database, "--thread", "t", "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert [turn["agent"] for turn in resumed["turns"]] == ["a1", "a2"]
    agents = _stored(database, "t")["spec"]["agents"]
    assert agents == [{"name": "a", "model": "test:Answer: 7", "retries": 0, "copies": 2}]


def _stored(database: str, thread: str) -> dict:
    with sqlite3.connect(database) as connection:
        (text,) = connection.execute(
            "SELECT spec FROM moot_runs WHERE thread = ?", (thread,)
        ).fetchone()
    return json.loads(text)


def test_what_a_file_cannot_hold_is_named():
    model = ScriptedChatModel(respond=str)
    society = moot.Society(
        agents=[moot.Agent(name="a", model="test"), moot.Agent(name="b", model=model)]
    )
    spec = spec_of(society)
    assert society_from_spec(spec).agents[1].model is model  # in memory it is kept
    with pytest.raises(moot.ConfigError, match=r"agents.1 \(b\): its model is a ScriptedChatModel"):
        spec.file_data()

    def local_tool(text: str) -> str:
        """Echo."""
        return text

    with_tool = moot.Agent(name="t", model="test", tools=[local_tool])
    with pytest.raises(moot.ConfigError, match=r"agents.0 \(t\): tool 'local_tool' is neither"):
        spec_of(moot.Society(agents=[with_tool])).file_data()
    judged = moot.Society(
        agents=[moot.Agent(name="a", model="test")],
        aggregator=moot.Judge(agent=moot.Agent(name="j", model=model)),
    )
    with pytest.raises(moot.ConfigError, match=r"aggregator.agent \(j\): its model is a"):
        spec_of(judged).file_data()
    custom = moot.Society(
        agents=[moot.Agent(name="a", model="test")],
        aggregator=moot.MajorityVote(extract=lambda text: text),
    )
    with pytest.raises(moot.ConfigError, match="aggregator.extract: a function object"):
        spec_of(custom).file_data()


class Reading(BaseModel):
    value: float


def test_answer_schemas_are_written_by_name_or_by_fields():
    agents = [AgentSpec(name="a", model="test")]
    by_name = spec_of(society_from_spec(SocietySpec(agents=agents, answer_schema=Reading)))
    assert by_name.file_data()["answer_schema"] == f"{Reading.__module__}:Reading"
    fields = {"value": "number", "note": "string?", "tags": "list[string]"}
    by_fields = spec_of(society_from_spec(SocietySpec(agents=agents, answer_schema=fields)))
    assert by_fields.file_data()["answer_schema"] == fields

    class Local(BaseModel):
        value: float

    with pytest.raises(moot.ConfigError, match="answer_schema: .*Local cannot be imported"):
        SocietySpec(agents=agents, answer_schema=Local).file_data()


def test_every_declared_kind_is_a_kind_of_society_files():
    assert {"debate", "mixture", "critic", "router", "cascade", "pipeline"} <= set(PROTOCOLS)
    assert {"vote", "weighted", "confidence", "judge", "rank"} <= set(AGGREGATORS)
    for kind, cls in {**PROTOCOLS, **AGGREGATORS}.items():
        part = "protocol" if kind in PROTOCOLS else "aggregator"
        data = {"agents": [{"name": "a"}], part: {"kind": kind}}
        try:
            spec = SocietySpec.model_validate(data)
        except ValueError:
            continue  # a kind with required fields (a judge's agent): the union still knows it
        assert type(getattr(spec, part)) is cls
        assert SocietySpec.model_validate(spec.file_data()) == spec


def test_every_field_of_a_protocol_is_a_key_of_its_file_form():
    debate = moot.Debate(rounds=3, topology="ring", peer_view="tail", peer_chars=50, consensus=0.5)
    spec = SocietySpec(agents=[AgentSpec(name="a", copies=3)], protocol=debate)
    data = spec.file_data()
    assert data["protocol"] == {
        "kind": "debate", "rounds": 3, "consensus": 0.5, "topology": "ring", "peer_view": "tail",
        "peer_chars": 50,
    }  # fmt: skip
    assert SocietySpec.model_validate(data) == spec


def test_a_class_is_a_kind_when_it_declares_one():
    class Settings(Config):  # (a base of their own: moot's kinds stay as they are)
        pass

    class Echo(Settings):
        kind: Literal["echo"] = "echo"

    class LoudEcho(Echo):
        """Inherits the kind "echo": not a kind of its own."""

    assert declared_kinds(Settings, homes=(__name__,)) == {"echo": Echo}
    assert declared_kinds(Settings) == {}  # moot's kinds are moot's classes only

    class Twin(Settings):
        kind: Literal["echo"] = "echo"

    with pytest.raises(TypeError, match="(Echo|Twin) and .*(Echo|Twin) both declare kind 'echo'"):
        declared_kinds(Settings, homes=(__name__,))


def test_a_protocol_of_no_kind_has_no_spec():
    class QuietDebate(moot.Debate):
        """Inherits the kind "debate": written as one, it would come back a plain Debate."""

    society = moot.Society(agents=[moot.Agent(name="a", model="test")], protocol=QuietDebate())
    with pytest.raises(moot.ConfigError, match="no spec can name a QuietDebate"):
        spec_of(society)


def test_spec_errors_name_the_field_without_a_file():
    with pytest.raises(moot.ConfigError, match=r"agents.0.model: 'gpt5' is neither a name"):
        society_from_spec({"agents": [{"name": "a", "model": "gpt5"}]})
    with pytest.raises(moot.ConfigError, match="agents.0.copies: the agents come to 2,000"):
        society_from_spec({"agents": [{"name": "a", "copies": 2000}]})
    with pytest.raises(moot.ConfigError, match="SocietySpec: protocol.debate.rounds"):
        society_from_spec({"agents": [{"name": "a"}], "protocol": {"kind": "debate", "rounds": 0}})


def test_mcp_servers_round_trip_in_each_form():
    """MCP servers are written as "mcp:COMMAND ARG..." or "mcp:URL", or as {mcp: {...}} where
    a field needs its key (env, tools, headers...), and read back as the same servers."""
    forms = [
        "mcp:python 'my server.py'",
        "mcp:http://127.0.0.1:8000/mcp",
        {"mcp": {"command": "uvx", "args": ["srv"], "env": {"KEY": "1"}, "tools": ["search"]}},
        {"mcp": {"url": "https://x.example/mcp", "headers": {"Authorization": "Bearer t"}}},
    ]
    agents = [AgentSpec(name="a", model="test", tools=["calculator", *forms], copies=2)]
    spec = SocietySpec(agents=agents)
    society = assert_round_trips(spec)
    assert spec_of(society).file_data()["agents"][0]["tools"] == ["calculator", *forms]
    assert SocietySpec.model_validate(spec.file_data()) == spec
    assert SocietySpec.model_validate(json.loads(json.dumps(spec.file_data()))) == spec


@pytest.mark.parametrize(
    ("question", "extract", "kinds", "protocol"),
    [
        ("What is the capital of France?", "short", ["text"] * 3, moot.Debate(rounds=2)),
        (
            "What is 17*23?",
            "number",
            ["text"] * 3 + ["program"] * 3,
            moot.Cascade(
                tiers=[["agent1", "program1"], ["agent2", "program2"], ["agent3", "program3"]],
                threshold=1.0,
                decide="all",
            ),
        ),
        (
            "Which is a gas?\nA) iron\nB) helium\nC) salt",
            "choice",
            ["text"] * 3,
            moot.Debate(rounds=1),
        ),
    ],
)
def test_the_default_method_is_the_society_moot_debate_runs_without_flags(
    question, extract, kinds, protocol
):
    from moot.cli import debate as debate_command
    from moot.cli.run import debate_spec
    from moot.presets import default_society_flags

    settings = MethodSettings(model=ScriptedChatModel(respond=lambda messages: "Answer: 1"))
    method = method_spec("default", extract, settings)
    parser = argparse.ArgumentParser()
    debate_command.add_commands(parser.add_subparsers(dest="command"))
    flags = {**vars(parser.parse_args(["debate", question])), "extract": "auto"}
    flags.update(default_society_flags(flags, question))
    command = debate_spec({**flags, "model": "local", "model_option": []})
    assert [agent.kind for agent in method.agents] == [agent.kind for agent in command.agents]
    assert [agent.kind for agent in command.agents] == kinds
    assert method.protocol == command.protocol == protocol
    assert type(method.aggregator) is type(command.aggregator)


@pytest.mark.parametrize(
    ("given", "decide"),
    [
        ({}, "trajectory"),  # a debate in moot's prompts: every round's answers score
        ({"rounds": 3}, "trajectory"),
        ({"rounds": 1}, "vote"),  # one round: the vote is the same
        ({"prompts": "du-gsm8k", "extract": "number"}, "vote"),  # a paper's: its own decision
        ({"decide": "vote"}, "vote"),
    ],
)
def test_the_text_debate_decides_over_every_round_unless_told_otherwise(given, decide):
    from moot.presets import default_society_flags

    settings = {"extract": "auto", **given}
    assert default_society_flags(settings, "What is the capital of France?")["decide"] == decide
