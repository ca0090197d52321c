"""`moot mcp`: the real server process (`python -m moot mcp ...`) driven by the official MCP SDK
client over stdio and streamable HTTP; the scripted model "test" for the protocol, the embedded
model once."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from mcp.types import (
    CancelledNotification,
    CancelledNotificationParams,
    ClientNotification,
    ResourceLink,
)

ROUTER = """\
agents:
  - {name: maths, description: arithmetic}
  - {name: words, description: spelling}
protocol: {kind: router, rules: {maths: ['\\d'], words: ['spell']}}
aggregator: {kind: vote, extract: text}
"""


@asynccontextmanager
async def served(tmp_path: Path, *args: str) -> AsyncIterator[tuple[ClientSession, Path]]:
    """A `moot mcp ARGS` process over stdio, with an initialised client session and the path
    of the server's stderr."""
    log = tmp_path / f"mcp-{time.monotonic_ns()}.log"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "moot", "mcp", *args], env=dict(os.environ)
    )
    with log.open("w") as errors:
        async with (
            stdio_client(params, errlog=errors) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session, log
    assert "Traceback" not in log.read_text(), log.read_text()


async def read_json(session: ClientSession, uri: str) -> object:
    contents = (await session.read_resource(uri)).contents[0]
    return json.loads(contents.text)  # type: ignore[union-attr]


def moot_mcp(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moot", "mcp", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_ask_answers_with_votes_usage_progress_and_transcript(tmp_path):
    async with served(tmp_path, "--model", "test", "--agents", "3") as (session, log):
        tool = (await session.list_tools()).tools[0]
        assert tool.name == "ask" and "3 LLM agents (debate, 2 rounds)" in (tool.description or "")
        assert set(tool.inputSchema["properties"]) == {"question", "rounds"}
        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message))

        result = await session.call_tool(
            "ask", {"question": "What is 40+2?", "rounds": 3}, progress_callback=on_progress
        )
        assert not result.isError, result.content
        answer = result.structuredContent
        assert answer is not None
        assert answer["answer"] == "42" and answer["rounds"] == 3
        assert answer["votes"] == {"agent1": "42", "agent2": "42", "agent3": "42"}
        assert answer["usage"]["calls"] == 9 and answer["usage"]["total_tokens"] > 0
        assert "cost" in answer["usage"]
        assert json.loads(result.content[0].text) == answer  # type: ignore[union-attr]
        link = result.content[1]
        assert isinstance(link, ResourceLink) and str(link.uri) == answer["transcript"]
        # one notification when the run starts (naming its transcript), one per round
        assert [(done, total) for done, total, _ in progress] == [(0, 3), (1, 3), (2, 3), (3, 3)]
        assert answer["transcript"] in (progress[0][2] or "")
        assert progress[2][2] == "round 2 done (agent1: 42, agent2: 42, agent3: 42)"

        transcript = await read_json(session, answer["transcript"])
        assert isinstance(transcript, dict) and transcript["status"] == "answered"
        assert len(transcript["turns"]) == 9 and transcript["question"] == "What is 40+2?"
        assert transcript["turns"][-1]["text"].startswith("agent3 in round 3")

        # the society's own rounds when none are given
        again = await session.call_tool("ask", {"question": "And 41+1?"})
        assert again.structuredContent and again.structuredContent["rounds"] == 2
        runs = await read_json(session, "moot://runs")
        assert isinstance(runs, list)
        assert [run["status"] for run in runs] == ["answered", "answered"]
        assert runs[0]["question"] == "And 41+1?"  # newest first
    assert "answered '42' after 3 rounds (9 calls" in log.read_text()


async def test_malformed_arguments_are_error_results_and_the_server_goes_on(tmp_path):
    async with served(tmp_path, "--model", "test", "--agents", "2") as (session, log):
        bad = [
            ({}, "question: Field required"),
            ({"question": 42}, "question: Input should be a valid string"),
            ({"question": ""}, "question: String should have at least 1 character"),
            ({"question": "x", "rounds": "2"}, "rounds: Input should be a valid integer"),
            ({"question": "x", "rounds": 2.5}, "rounds: Input should be a valid integer"),
            ({"question": "x", "rounds": 0}, "rounds: Input should be greater than or equal to 1"),
            ({"question": "x", "rounds": 101}, "rounds: Input should be less than or equal"),
            ({"question": "x", "agents": 9}, "agents: unknown field"),
            ({"question": "x" * 1_000_001}, "question: String should have at most 1000000"),
            ({"question": "   "}, "the question is empty"),
        ]
        for arguments, expected in bad:
            result = await session.call_tool("ask", arguments)
            assert result.isError, arguments
            assert expected in result.content[0].text, result.content  # type: ignore[union-attr]
            assert "Traceback" not in result.content[0].text  # type: ignore[union-attr]
        unknown = await session.call_tool("debate", {"question": "x"})
        assert unknown.isError and "Unknown tool: debate" in unknown.content[0].text  # type: ignore[union-attr]
        with pytest.raises(McpError, match="no run nope here"):
            await session.read_resource("moot://runs/nope")
        fine = await session.call_tool("ask", {"question": "What is 40+2?"})
        assert not fine.isError and fine.structuredContent["answer"] == "42"  # type: ignore[index]
    assert "failed: the question is empty" in log.read_text()


async def test_a_cancelled_call_is_an_error_and_stops_its_run(tmp_path):
    # every call takes 3 s: round 1 ends after ~3 s, a run of 3 rounds after ~9 s (room for a
    # busy machine between round 1's progress and the cancel)
    async with served(tmp_path, "--model", "test", "-o", "delay=3", "--agents", "3") as (
        session,
        log,
    ):
        round_one = asyncio.Event()
        messages: list[str] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            messages.append(message or "")
            if done == 1:
                round_one.set()

        request_id = session._request_id  # the SDK's next id: that of the call below
        call = asyncio.create_task(
            session.call_tool(
                "ask", {"question": "What is 40+2?", "rounds": 3}, progress_callback=on_progress
            )
        )
        await asyncio.wait_for(round_one.wait(), 30)
        cancel = CancelledNotificationParams(requestId=request_id, reason="changed my mind")
        await session.send_notification(ClientNotification(CancelledNotification(params=cancel)))
        with pytest.raises(McpError, match="Request cancelled"):
            await asyncio.wait_for(call, 10)
        await asyncio.sleep(7)  # long enough for round 2 (and most of 3) to have finished
        [run] = await read_json(session, "moot://runs")  # type: ignore[misc]
        assert run["status"] == "cancelled"
        transcript = await read_json(session, run["uri"])
        assert isinstance(transcript, dict)
        assert [turn["round"] for turn in transcript["turns"]] == [1, 1, 1]
        assert not any("round 2" in message for message in messages)
        # the server still answers
        fine = await session.call_tool("ask", {"question": "What is 1+1?", "rounds": 1})
        assert not fine.isError
    assert f"run {run['id']}: cancelled after 3 turns" in log.read_text()


async def test_an_unreachable_model_server_is_an_error_result_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    args = ["--model", "openai:gpt-x", "-o", f"base_url={url}", "--retries", "0", "--rounds", "1"]
    async with served(tmp_path, *args) as (session, log):
        result = await session.call_tool("ask", {"question": "What is 2+2?"})
        assert result.isError
        text = result.content[0].text  # type: ignore[union-attr]
        assert "every model call failed; the first error: OpenAIConnectionError" in text
        [run] = await read_json(session, "moot://runs")  # type: ignore[misc]
        assert run["status"] == "failed" and run["uri"] in text
        transcript = await read_json(session, run["uri"])
        assert isinstance(transcript, dict) and len(transcript["turns"]) == 3
        assert all(turn["error"] for turn in transcript["turns"])
    assert f"run {run['id']}: failed: every model call failed" in log.read_text()


async def test_a_society_file_without_rounds_is_served_with_its_own_tool(tmp_path):
    (tmp_path / "router.yaml").write_text(ROUTER)
    async with served(tmp_path, str(tmp_path / "router.yaml"), "--model", "test") as (session, _):
        tool = (await session.list_tools()).tools[0]
        assert "(router)" in (tool.description or "")
        assert set(tool.inputSchema["properties"]) == {"question"}
        refused = await session.call_tool("ask", {"question": "What is 2+2?", "rounds": 2})
        assert refused.isError
        assert "has no rounds: leave out 'rounds'" in refused.content[0].text  # type: ignore[union-attr]
        result = await session.call_tool("ask", {"question": "What is 2+2?"})
        assert not result.isError
        assert result.structuredContent is not None
        assert list(result.structuredContent["votes"]) == ["maths"]  # the routed expert only


async def test_streamable_http_serves_the_same_tool(tmp_path):
    port = free_port()
    log = (tmp_path / "http.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "moot", "mcp", "--model", "test", "--http", str(port)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once the port is bound
        assert line.strip() == f"serving moot-debate over MCP at http://127.0.0.1:{port}/mcp"
        # listening by the time it says so: a client that connects at once is not refused
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        progress: list[float] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(done)

        async with (
            streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool(
                "ask", {"question": "What is 40+2?"}, progress_callback=on_progress
            )
            assert not result.isError and result.structuredContent is not None
            assert result.structuredContent["answer"] == "42"
            assert progress == [0, 1, 2]
            transcript = await read_json(session, result.structuredContent["transcript"])
            assert isinstance(transcript, dict) and len(transcript["turns"]) == 6
            bad = await session.call_tool("ask", {"question": ["not", "text"]})
            assert bad.isError and "question: Input should be a valid string" in bad.content[0].text  # type: ignore[union-attr]

        taken = moot_mcp("--model", "test", "--http", str(port))  # the port is in use
        assert taken.returncode == 2
        assert taken.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}")
        assert taken.stderr.count("\n") == 1 and taken.stdout == ""
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    assert "Traceback" not in (tmp_path / "http.log").read_text()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "nope:x"], "error: unknown model spec 'nope:x'"),
        (["--model", "llama:/no/such.gguf"], "error: GGUF file not found: /no/such.gguf"),
        (["{folder}/bad.yaml", "--model", "test"], "error: {folder}/bad.yaml:1: agents:"),
        (["{folder}/missing.yaml", "--model", "test"], "error: cannot read society file"),
        (["{folder}/bad.yaml", "--agents", "2"], "error: --agents shapes the default debate"),
        (["{folder}/bad.yaml", "--tools", "calculator"], "error: --tools shapes the default"),
        (["--model", "test", "--tools", "nosuchtool"], "error: AgentSpec: tools: unknown tool"),
        (["--model", "test", "--host", "0.0.0.0"], "error: --host is for --http PORT"),
        (["--model", "test", "--http", "70000"], "error: argument --http: a port is 1 to 65535"),
        (["--model", "test", "--rounds", "0"], "error: argument --rounds: must be at least 1"),
        (["--model", "test", "--stop-early", "--rounds", "2"], "error: --stop-early answers"),
        (["{folder}/bad.yaml", "--stop-early"], "error: --stop-early shapes the default debate"),
    ],
)
def test_bad_setup_is_one_error_line_before_serving(tmp_path, args, expected):
    (tmp_path / "bad.yaml").write_text("agents: 3\n")
    done = moot_mcp(*(arg.format(folder=tmp_path) for arg in args))
    assert done.returncode == 2
    assert done.stderr.startswith(expected.format(folder=tmp_path)), done.stderr
    assert done.stderr.count("\n") == 1 and done.stdout == ""


@pytest.mark.integration
async def test_the_embedded_model_answers_and_a_question_longer_than_its_context_is_refused(
    tmp_path,
):
    args = ["--model", "local", "--agents", "2", "--rounds", "1", "--max-tokens", "24"]
    async with served(tmp_path, *args) as (session, log):
        huge = await session.call_tool("ask", {"question": "Add these up: " + "7 + " * 6000})
        assert huge.isError
        text = huge.content[0].text  # type: ignore[union-attr]
        assert "prompt tokens but the model's context window is" in text
        [refused] = await read_json(session, "moot://runs")  # type: ignore[misc]
        transcript = await read_json(session, refused["uri"])
        assert isinstance(transcript, dict)
        assert transcript["status"] == "failed" and transcript["turns"] == []  # no call made

        result = await session.call_tool("ask", {"question": "What is 2+3?"})
        assert not result.isError and result.structuredContent is not None
        usage = result.structuredContent["usage"]
        assert usage["calls"] >= 2 and usage["output_tokens"] > 0  # (+1 per unreadable reply)
        assert set(result.structuredContent["votes"]) == {"agent1", "agent2"}
        transcript = await read_json(session, result.structuredContent["transcript"])
        assert isinstance(transcript, dict)
        assert all(turn["text"].strip() for turn in transcript["turns"])  # a real model wrote
    assert "answered" in log.read_text()
