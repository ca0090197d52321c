"""Agents that call MCP servers' tools: the entry forms and their errors, then a real FastMCP
server (tests/mcp_tool_server.py) over stdio and over streamable HTTP on 127.0.0.1, driven by
scripted tool-calling models: results, tool errors, hangs, servers that are unreachable, fail
at start, never answer or die, and the command line."""

from __future__ import annotations

import asyncio
import json
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import moot
from moot.cli import main
from moot.testing import ScriptedChatModel
from moot.tools.mcp import MCPServer, server_of
from moot.tools.mcp_sessions import close_sessions, tools_of
from tests.conftest import tool_calls_message as calls
from tests.conftest import tool_results as results

SERVER = Path(__file__).parent / "mcp_tool_server.py"
STDIO = "mcp:" + shlex.join([sys.executable, str(SERVER)])


@pytest.fixture(scope="module", autouse=True)
def _sessions_end():
    yield
    close_sessions()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def http_server():
    """The test server over streamable HTTP on a free port: (its URL, its process)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("the MCP test server did not start")
            time.sleep(0.1)
    yield f"mcp:http://127.0.0.1:{port}/mcp", process
    close_sessions()  # (while the server is there to end its session)
    process.terminate()
    process.wait(10)


def debate(*agents: moot.Agent, rounds: int = 1) -> moot.Society:
    return moot.Society(agents=list(agents), protocol=moot.Debate(rounds=rounds))


# -- the forms of an entry ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry, fields, written",
    [
        ("mcp:python my_server.py -v", {"command": "python", "args": ["my_server.py", "-v"]},
         "mcp:python my_server.py -v"),
        ("mcp:http://127.0.0.1:8000/mcp", {"url": "http://127.0.0.1:8000/mcp"},
         "mcp:http://127.0.0.1:8000/mcp"),
        ({"mcp": {"command": "npx", "args": ["-y", "a server"]}},
         {"command": "npx", "args": ["-y", "a server"]}, "mcp:npx -y 'a server'"),
        ({"mcp": {"command": "uvx", "env": {"KEY": "1"}, "tools": ["search"]}},
         {"command": "uvx", "env": {"KEY": "1"}, "tools": ["search"]},
         {"mcp": {"command": "uvx", "env": {"KEY": "1"}, "tools": ["search"]}}),
        ({"mcp": "https://tools.example/mcp"}, {"url": "https://tools.example/mcp"},
         "mcp:https://tools.example/mcp"),
        ({"mcp": {"url": "https://x.example/mcp", "headers": {"Authorization": "Bearer t"}}},
         {"url": "https://x.example/mcp", "headers": {"Authorization": "Bearer t"}},
         {"mcp": {"url": "https://x.example/mcp", "headers": {"Authorization": "Bearer t"}}}),
    ],
)  # fmt: skip
def test_an_entry_names_a_server_and_is_written_back_in_its_shortest_form(entry, fields, written):
    agent = moot.Agent(name="a", model="test", tools=[entry, "calculator"])
    server, calculator = agent.tools
    assert server == MCPServer(**fields) and calculator.name == "calculator"
    assert server.written() == written and server_of(written) == server


@pytest.mark.parametrize(
    "tools, message",
    [
        (["mcp:"], "'mcp:' needs a server"),
        (["mcp:  "], "'mcp:' needs a server"),
        (["mcp:ftp://host/x"], "'ftp://host/x' is not an http:// or https:// URL"),
        (["mcp:http://"], "is not an http:// or https:// URL"),
        (["mcp:python 'server.py"], "cannot read the command .*No closing quotation"),
        ([{"mcp": {"command": "x", "url": "http://h/mcp"}}], "either a command .* not both"),
        ([{"mcp": {}}], "either a command"),
        ([{"mcp": {"command": "  "}}], "command is empty"),
        ([{"mcp": {"url": "http://h/mcp", "env": {"A": "1"}}}], "env do not apply .* a url"),
        ([{"mcp": {"command": "x", "headers": {"A": "1"}}}], "headers do not apply"),
        ([{"mcp": {"command": "x", "tools": []}}], "tools lists the names"),
        ([{"mcp": {"command": "x", "tools": ["a", "a"]}}], "names a tool twice"),
        ([{"mcp": {"command": "x", "start_timeout": 0}}], "start_timeout"),
        ([{"mcp": {"command": "x", "bogus": 1}}], "bogus: unknown field"),
        ([{"mcp": "x", "tools": ["a"]}], "holds one key, mcp"),
        ([{"mcp": 3}], "give a command, a URL"),
        (["mcp:python s.py", "mcp:python  s.py"], "given twice: mcp:python s.py"),
        (["mpc:python s.py"], "tool 'mpc:python s.py' cannot be imported"),
        (["mcpserver"], "or an MCP server's tools: mcp:COMMAND or mcp:URL"),
    ],
)
def test_bad_entries_are_refused_with_what_is_wrong(tools, message):
    with pytest.raises(moot.ConfigError, match=message):
        moot.Agent(name="a", tools=tools)


# -- a real server, over stdio and over streamable HTTP -----------------------------------------


def worker(messages, info):
    """adder: adds, makes a failing and a malformed call, then answers with the sum;
    sleeper: calls the tool that hangs; plain: answers at once."""
    shown = results(messages)
    if info.agent == "adder" and not shown:
        return calls(("add", {"a": 2, "b": 3}), ("fail", {"reason": "no"}), ("add", {"a": "x"}))
    if info.agent == "sleeper" and not shown:
        return calls(("hang", {}))
    return f"Answer: {shown[0] if shown else 5}"


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_tools_are_called_recorded_and_a_hang_is_bounded(transport, asynchronous, request):
    server = STDIO if transport == "stdio" else request.getfixturevalue("http_server")[0]
    tools_of([server_of(server)])  # started (and held) before the clock of the hanging turn
    model = ScriptedChatModel(respond=worker)
    agents = [
        moot.Agent(name=name, model=model, tools=[server], timeout=2, retries=0)
        for name in ("adder", "sleeper", "plain")
    ]
    started = time.perf_counter()
    team = debate(*agents)
    result = asyncio.run(team.arun("2 + 3?")) if asynchronous else team.run("2 + 3?")
    assert time.perf_counter() - started < 8
    adder, sleeper, plain = result.turns
    assert adder.answer == "5" and plain.answer == "5" and result.answer == "5"
    added, failed, malformed = adder.tool_calls
    assert (added.name, added.arguments, added.result, added.error) == (
        "add",
        {"a": 2, "b": 3},
        "5",
        None,
    )
    assert failed.error == "MCPToolError: Error executing tool fail: failed on purpose: no"
    assert malformed.result is None and "validation error" in (malformed.error or "")
    assert all(call.seconds is not None and call.seconds < 2 for call in adder.tool_calls)
    (shown_to_adder,) = [call for call in model.calls if len(results(call)) == 3]
    assert results(shown_to_adder)[1] == f"error: {failed.error}"
    assert sorted(model.bound_tools) == ["add", "crash", "fail", "hang", "length", "pid"]
    assert sleeper.failed and "within 2 s" in (sleeper.error or "")
    # The hang was cancelled on the session, which serves the next turn at once.
    assert debate(agents[0]).run("2 + 3?").turns[0].answer == "5"


def test_one_session_serves_every_agent_and_a_server_that_dies_is_started_again():
    close_sessions()

    def respond(messages, info):
        shown = results(messages)
        script = [("pid", {}), ("crash", {}), ("add", {"a": 1, "b": 1})]
        if info.round == 2:  # both agents, on the server started again
            script = [("pid", {})]
        elif info.agent != "a0":
            script = []
        if len(shown) < len(script):
            return calls(script[len(shown)])
        return "Answer: 2"

    model = ScriptedChatModel(respond=respond)
    agents = [moot.Agent(name=f"a{i}", model=model, tools=[STDIO]) for i in range(2)]
    result = debate(*agents, rounds=2).run("1 + 1?")
    first, _, again, other = result.turns
    pid, crash, added = first.tool_calls
    assert crash.result is None and (crash.error or "").startswith(
        f"MCPServerError: the connection to MCP server {STDIO} failed during the call"
    )
    assert "it is started again when next needed" in crash.error
    assert added.result == "2"  # the next call started the server again
    assert again.tool_calls[0].result == other.tool_calls[0].result != pid.result
    assert first.answer == "2" and result.answer == "2"


def test_an_unreachable_server_fails_its_agents_turn_after_retries_and_the_others_go_on():
    url = f"mcp:http://127.0.0.1:{free_port()}/mcp"
    model = ScriptedChatModel(respond=lambda messages: "Answer: 4")
    remote = moot.Agent(name="remote", model=model, tools=[url], retries=1, retry_delay=0.01)
    local = moot.Agent(name="local", model=model, tools=["calculator"])
    failed, answered = debate(remote, local).run("2 + 2?").turns
    assert failed.failed and failed.usage.retries == 1  # a refused connection is retried
    assert failed.error.startswith(f"MCPUnreachableError: MCP server {url} cannot be reached")
    assert "check that it runs" in failed.error
    assert answered.answer == "4"


def test_servers_that_fail_at_start_or_never_answer_fail_only_their_turns(capfd, caplog):
    code = "import sys; print('no config file at ~/.srv', file=sys.stderr); sys.exit(3)"
    crashing = "mcp:" + shlex.join([sys.executable, "-c", code])
    silent = {"mcp": {"command": sys.executable, "args": ["-c", "import time; time.sleep(60)"],
                      "start_timeout": 1}}  # fmt: skip
    model = ScriptedChatModel(respond=lambda messages: "Answer: 4")
    agents = [
        moot.Agent(name="crashing", model=model, tools=[crashing], retries=0),
        moot.Agent(name="silent", model=model, tools=[silent], retries=0),
        moot.Agent(name="chatty", model=model, tools=["mcp:echo not a message"], retries=0),
        moot.Agent(name="fine", model=model),
    ]
    started = time.perf_counter()
    crashed, quiet, chatty, fine = debate(*agents).run("2 + 2?").turns
    assert time.perf_counter() - started < 10
    assert crashed.error.startswith(f"MCPServerError: MCP server {crashing} did not start (")
    assert "its stderr ended: no config file at ~/.srv): run the command on its own" in (
        crashed.error
    )
    assert "did not start within 1 s (start_timeout)" in (quiet.error or "")
    assert chatty.error.startswith("MCPServerError: MCP server mcp:echo not a message did not")
    assert fine.answer == "4" and model.call_count == 1
    assert "no config file" not in capfd.readouterr().err  # a server's stderr is kept apart
    # A line on stdout that is not a message is logged in one line, without a traceback.
    (logged,) = [record for record in caplog.records if record.name == "mcp.client.stdio"]
    assert logged.getMessage().startswith(
        "Failed to parse JSONRPC message from server (a stdio MCP server may write only"
    )
    assert "input_value='not a message'" in logged.getMessage() and logged.exc_info is None


def test_what_is_wrong_before_any_call_is_a_config_error(capsys, tmp_path):
    model = ScriptedChatModel(respond=lambda messages: "Answer: 4")
    agent = moot.Agent(name="a", model=model, tools=["mcp:no-such-mcp-server --flag"])
    with pytest.raises(moot.ConfigError, match="command 'no-such-mcp-server' is not found on PATH"):
        debate(agent).run("2 + 2?")
    relative = moot.Agent(name="b", model=model, tools=["mcp:./missing/server"])
    with pytest.raises(moot.ConfigError, match=r"command './missing/server' is not found: "):
        debate(relative).run("2 + 2?")
    unset = {
        "mcp": {
            "url": "http://127.0.0.1:9/mcp",
            "headers": {"Authorization": "Bearer ${MOOT_NO_SUCH_TOKEN}"},
        }
    }
    secret = moot.Agent(name="c", model=model, tools=[unset])
    with pytest.raises(
        moot.ConfigError, match=r"headers.Authorization takes \$\{MOOT_NO_SUCH_TOKEN\}"
    ):
        debate(secret).run("2 + 2?")
    nowhere = {"mcp": {"command": sys.executable, "cwd": str(tmp_path / "gone")}}
    with pytest.raises(moot.ConfigError, match="its cwd .*gone is not a folder"):
        debate(moot.Agent(name="d", model=model, tools=[nowhere])).run("2 + 2?")
    assert model.call_count == 0
    command = ["debate", "2+2?", "--model", "test", "--tools", "mcp:no-such-mcp-server"]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: MCP server mcp:no-such-mcp-server: the command")
    assert "Traceback" not in error


def test_header_values_take_variables_from_the_environment(monkeypatch):
    monkeypatch.setenv("MOOT_TEST_TOKEN", "s3cret")
    headers = {"Authorization": "Bearer ${MOOT_TEST_TOKEN}", "X-Plain": "$HOME"}
    server = MCPServer(url="http://127.0.0.1:9/mcp", headers=headers)
    server.check()
    sent = server.expanded("headers")
    assert sent == {"Authorization": "Bearer s3cret", "X-Plain": "$HOME"}
    assert server.written() == {"mcp": {"url": "http://127.0.0.1:9/mcp", "headers": headers}}


def test_the_missing_extra_is_named(monkeypatch):
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *rest: None if name == "langchain_mcp_adapters" else found(name, *rest),
    )
    agent = moot.Agent(name="a", model="test", tools=[STDIO])
    with pytest.raises(moot.errors.MissingExtraError, match=r"moot\[mcp\]"):
        debate(agent).run("2 + 2?")


def test_a_choice_of_tools_binds_only_those_and_clashes_and_gaps_fail_the_turn():
    def respond(messages, info):
        if info.agent == "chooser" and not results(messages):
            return calls(("length", {"text": "x" * 1_000_000}))  # huge input reaches the tool
        return f"Answer: {(results(messages) or ['0'])[0]}"

    model = ScriptedChatModel(respond=respond)
    chosen = {"mcp": {"command": sys.executable, "args": [str(SERVER)], "tools": ["length"]}}
    chooser = moot.Agent(name="chooser", model=model, tools=[chosen], tool_choice="first")
    turn = debate(chooser).run("How long?").turns[0]
    assert turn.answer == "1000000" and turn.tool_calls[0].result == "1000000"
    assert model.bound_tools == ["length"] and model.tool_choices[-1] == "length"

    def add(a: int, b: int) -> int:
        """Adds, locally."""
        return a + b

    missing = {"mcp": {"command": sys.executable, "args": [str(SERVER)], "tools": ["nope"]}}
    agents = [
        moot.Agent(name="clash", model=model, tools=[add, STDIO]),
        moot.Agent(name="gap", model=model, tools=[missing]),
        moot.Agent(name="fine", model=model),
    ]
    clash, gap, fine = debate(*agents).run("q").turns
    assert "two tools are named 'add' (the agent's tools, mcp:" in (clash.error or "")
    assert "has no tool 'nope' (it has: add, fail, hang, length, pid, crash)" in (gap.error or "")
    assert fine.answer == "0"


# -- files and the command line -----------------------------------------------------------------


def test_the_cli_and_society_files_take_mcp_servers_and_resume_keeps_them(tmp_path, capsys):
    database = str(tmp_path / "runs.sqlite")
    command = ["debate", "2+3?", "--model", "test", "--agents", "2", "--rounds", "1"]
    checkpoint = ["--checkpoint", database, "--thread", "t", "--json"]
    assert main([*command, "--tools", f"calculator,{STDIO}", *checkpoint]) == 0
    first = json.loads(capsys.readouterr().out)
    assert [turn["answer"] for turn in first["turns"]] == ["42", "42"]
    assert main(["resume", "--checkpoint", database, "--thread", "t", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["turns"] == first["turns"]

    path = tmp_path / "society.yaml"
    path.write_text(
        "agents:\n"
        "  - name: a\n"
        "    model: test\n"
        f"    tools: [{{mcp: {{command: {json.dumps(sys.executable)}, args: "
        f"[{json.dumps(str(SERVER))}], tools: [add]}}}}]\n"
        "protocol: {kind: debate, rounds: 1}\n"
    )
    (agent,) = moot.load_society(path).agents
    assert agent.tools == [MCPServer(command=sys.executable, args=[str(SERVER)], tools=["add"])]
    assert main(["run", str(path), "2+3?", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["turns"][0]["answer"] == "42"
    path.write_text(path.read_text().replace("tools: [add]", "url: http://h/mcp"))
    with pytest.raises(moot.ConfigError, match=r"society.yaml:4: agents.0.tools: .*not both"):
        moot.load_society(path)
