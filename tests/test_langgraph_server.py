"""Societies on a real LangGraph Server: `moot langgraph` writes langgraph.json, `langgraph dev`
serves it on 127.0.0.1 (offline), and the LangGraph SDK's client runs, streams, cancels and
resumes them. One server for the module (the tests marked integration); the societies run on
the scripted test model."""

from __future__ import annotations

import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import moot
from moot.cli import main
from moot.integrations.langgraph_server import (
    MAX_QUESTION,
    SocietyGraph,
    langgraph_files,
    served_graph,
)

pytest.importorskip("langgraph_api", reason="needs the langgraph-server extra")
from langgraph_sdk import get_sync_client  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "langgraph"

FAST = """\
description: Three scripted debaters, two rounds
models: {default: test}
agents:
  - {name: agent, copies: 3, model: default}
protocol: {kind: debate, rounds: 2}
aggregator: {kind: vote, extract: number}
"""
SLOW = """\
models:
  slow: {spec: test, delay: 3.0}
agents:
  - {name: agent, copies: 2, model: slow}
protocol: {kind: debate, rounds: 3}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A project written by `moot langgraph` for two society files."""
    folder = tmp_path_factory.mktemp("project")
    (folder / "fast.yaml").write_text(FAST)
    (folder / "slow.yaml").write_text(SLOW)
    societies = [str(folder / "fast.yaml"), str(folder / "slow.yaml")]
    assert main(["langgraph", *societies, "-o", str(folder / "langgraph.json")]) == 0
    return folder


@pytest.fixture(scope="module")
def url(folder):
    """`langgraph dev` serving the project, with no network: no browser, no analytics, no
    version check (langgraph.json's env), no traces."""
    port = _free_port()
    log_path = folder / "server.log"
    env = {**os.environ, "LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGGRAPH_STRICT_MSGPACK": "true"}
    env.pop("LANGSMITH_API_KEY", None)
    langgraph = Path(sys.executable).parent / "langgraph"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(langgraph), "dev", "--host", "127.0.0.1", "--port", str(port), "--no-browser",
             "--no-reload"],
            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        address = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180  # slow on two busy cores
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"langgraph dev exited: {log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{address}/ok", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"langgraph dev did not start in 180 s: {log_path.read_text()[-3000:]}")
        yield address
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert "Blocked deserialization" not in log_path.read_text()


@pytest.fixture
def client(url):
    return get_sync_client(url=url, timeout=120)


def _stream(client, thread, graph, input, **options):
    return [
        (part.event, part.data)
        for part in client.runs.stream(thread, graph, input=input, **options)
    ]


@pytest.mark.integration
def test_each_society_file_is_an_assistant_with_its_protocol_graph(client):
    assistants = {a["graph_id"]: a for a in client.assistants.search()}
    assert set(assistants) == {"fast", "slow"}
    assert assistants["fast"]["description"] == "Three scripted debaters, two rounds"
    graph = client.assistants.get_graph(assistants["fast"]["assistant_id"])
    assert {node["id"] for node in graph["nodes"]} >= {
        "start",
        "agent_turn",
        "end_round",
        "aggregate",
    }
    schemas = client.assistants.get_schemas(assistants["fast"]["assistant_id"])
    assert schemas["input_schema"]["required"] == ["question"]
    assert {"answer", "turns"} <= set(schemas["output_schema"]["properties"])


@pytest.mark.integration
def test_a_streamed_run_sends_each_agent_turn_as_its_node_update(client):
    thread = client.threads.create()["thread_id"]
    # A context sent over HTTP cannot replace the society's models: it is ignored.
    parts = _stream(client, thread, "fast", {"question": "What is 40+2?"},
                    stream_mode="updates", context={"models": "none"})  # fmt: skip
    updates = [data for event, data in parts if event == "updates"]
    assert [event for event, _ in parts if event == "error"] == []
    turns = [update["agent_turn"]["turns"][0] for update in updates if "agent_turn" in update]
    assert sorted((turn["round"], turn["agent"]) for turn in turns) == [
        (r, f"agent{a}") for r in (1, 2) for a in (1, 2, 3)
    ]
    assert all(turn["answer"] == "42" and turn["error"] is None for turn in turns)
    assert updates[-1] == {"aggregate": {"answer": "42"}}
    state = client.threads.get_state(thread)["values"]
    assert state["answer"] == "42" and len(state["turns"]) == 6


@pytest.mark.integration
def test_a_new_question_on_a_thread_starts_its_state_over(client):
    thread = client.threads.create()["thread_id"]
    first = client.runs.wait(thread, "fast", input={"question": "What is 40+2?"})
    second = client.runs.wait(thread, "fast", input={"question": "And 41+1?"})
    assert first["answer"] == second["answer"] == "42"
    assert second["question"] == "And 41+1?"
    assert len(second["turns"]) == 6  # not the first run's six more
    assert second["round"] == 3
    history = client.threads.get_history(thread, limit=100)
    assert {state["values"].get("question") for state in history} >= {"What is 40+2?", "And 41+1?"}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({"text": "What is 40+2?"}, 'takes {"question": "..."} as its input; got keys [\'text\']'),
        ({"question": 42}, "the question must be a string of text; got int"),
        ({"question": "   "}, "the question is empty"),
        ({"question": "x" * (MAX_QUESTION + 1)}, "over this server's limit of 1,048,576"),
        ("What is 40+2?", "got a str"),
    ],
    ids=["no-question", "number", "blank", "huge", "bare-text"],
)
def test_bad_input_is_a_run_error_and_the_server_goes_on(client, input, message):
    thread = client.threads.create()["thread_id"]
    parts = _stream(client, thread, "fast", input)
    errors = [data for event, data in parts if event == "error"]
    assert len(errors) == 1 and errors[0]["error"] == "ConfigError"
    assert message in errors[0]["message"]
    assert client.runs.list(thread)[0]["status"] == "error"
    assert client.runs.wait(thread, "fast", input={"question": "What is 40+2?"})["answer"] == "42"


@pytest.mark.integration
def test_a_cancelled_run_keeps_its_finished_turns_and_resumes(client):
    thread = client.threads.create()["thread_id"]
    run = client.runs.create(thread, "slow", input={"question": "What is 40+2?"})
    deadline = time.monotonic() + 60
    while not client.threads.get_state(thread)["values"].get("turns"):
        assert time.monotonic() < deadline, "no turn finished in 60 s"
        time.sleep(0.2)
    client.runs.cancel(thread, run["run_id"], wait=True)
    assert client.runs.get(thread, run["run_id"])["status"] == "interrupted"
    kept = client.threads.get_state(thread)["values"]["turns"]
    assert 0 < len(kept) < 6
    resumed = client.runs.wait(thread, "slow", input=None)  # no input: the thread's run goes on
    assert resumed["answer"] == "42"
    assert len(resumed["turns"]) == 6 and resumed["turns"][: len(kept)] == kept


@pytest.mark.integration
def test_nothing_to_go_on_with_is_a_run_error(client):
    thread = client.threads.create()["thread_id"]
    errors = [data for event, data in _stream(client, thread, "fast", None) if event == "error"]
    assert len(errors) == 1 and "this thread holds no run to go on with" in errors[0]["message"]


# -- without a server ---------------------------------------------------------------------------


async def test_a_served_graph_runs_in_process_and_keeps_a_given_context():
    society = moot.Society(agents=[moot.Agent(name=f"a{i}", model="test") for i in range(2)])
    graph = served_graph(society, "pair")
    assert isinstance(graph, SocietyGraph) and graph.name == "pair"
    state = await graph.ainvoke({"question": "What is 40+2?", "turns": ["forged"]})
    assert state["answer"] == "42" and all(isinstance(t, moot.Turn) for t in state["turns"])
    given = society.context("What is 40+2?")
    await graph.ainvoke({"question": "What is 40+2?"}, context=given)
    assert given.memo  # the run used the context it was given


def test_the_written_module_builds_the_default_debate(tmp_path, capsys):
    out = tmp_path / "langgraph.json"
    assert main(["langgraph", "--model", "test", "-o", str(out)]) == 0
    config = json.loads(out.read_text())
    assert config["graphs"] == {"debate": "./moot_graphs.py:debate"}
    assert config["env"]["LANGGRAPH_NO_VERSION_CHECK"] == "true"
    module = runpy.run_path(str(tmp_path / "moot_graphs.py"))
    debate = module["debate"]
    assert isinstance(debate, SocietyGraph) and len(debate.society.agents) == 3
    assert debate.society.agents[0].model == "test"


def test_society_files_are_named_by_stem_and_found_from_the_module(tmp_path):
    (tmp_path / "societies").mkdir()
    (tmp_path / "societies" / "my-debate.yaml").write_text(FAST)
    (tmp_path / "project").mkdir()
    out = tmp_path / "project" / "langgraph.json"
    assert main(["langgraph", str(tmp_path / "societies" / "my-debate.yaml"), "-o", str(out)]) == 0
    entry = json.loads(out.read_text())["graphs"]["my-debate"]
    assert entry["path"] == "./moot_graphs.py:my_debate"
    code = (tmp_path / "project" / "moot_graphs.py").read_text()
    assert 'HERE / "../societies/my-debate.yaml"' in code  # moves with its society files
    assert (
        runpy.run_path(str(tmp_path / "project" / "moot_graphs.py"))["my_debate"].name
        == "my-debate"
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.yaml"], "cannot read society file missing.yaml"),
        (["--model", "nonsense:x"], "--model: unknown model spec 'nonsense:x'"),
        (["a/s.yaml", "b/s.yaml"], "two society files are named 's'"),
        (["-o", "nowhere/langgraph.json"], "the folder nowhere does not exist"),
        (["bad.yaml"], "bad.yaml:"),
    ],
)
def test_bad_arguments_are_one_error_line(tmp_path, monkeypatch, capsys, arguments, message):
    monkeypatch.chdir(tmp_path)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "s.yaml").write_text(FAST)
    (tmp_path / "bad.yaml").write_text("agents: []\n")
    assert main(["langgraph", *arguments]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "langgraph.json").exists()


def test_written_files_are_not_overwritten_without_force(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "moot_graphs.py").write_text("# my own edits\n")
    assert main(["langgraph", "--model", "test"]) == 2
    assert "moot_graphs.py exists: pass --force" in capsys.readouterr().err
    assert (tmp_path / "moot_graphs.py").read_text() == "# my own edits\n"
    assert main(["langgraph", "--model", "test", "--force"]) == 0
    assert "served_graph" in (tmp_path / "moot_graphs.py").read_text()


def test_the_example_project_is_what_moot_langgraph_writes():
    societies = {path.stem: path for path in sorted(EXAMPLE.parent.glob("societies/*.yaml"))}
    for path, text in langgraph_files(societies, EXAMPLE / "langgraph.json").items():
        assert path.read_text() == text, (
            "regenerate it: moot langgraph examples/societies/*.yaml "
            "-o examples/langgraph/langgraph.json --force"
        )
    graphs = runpy.run_path(str(EXAMPLE / "moot_graphs.py"))
    assert {name for name, value in graphs.items() if isinstance(value, SocietyGraph)} == set(
        societies
    )
