"""Latency of one debate through each way of serving it (issue 40), against `moot debate --json`.

The same society (3 agents x 2 rounds on the embedded model, agents seeded 1-3, 128 tokens a
reply, answers read by `auto`) answers the same questions:
- `moot debate --json` as a user runs it (a process per question: start-up and model load
  included), and the same run in a warm process (`Society.run`), the figure the servers are held
  to: a server loads its models once;
- `moot mcp` (stdio; the MCP SDK's client calls its `ask` tool);
- `moot serve` (its OpenAI-compatible endpoint);
- `langgraph dev` on the files `moot langgraph` writes (the LangGraph SDK's `runs.wait`).
The servers start first and answer one question to warm up; then each question goes through
each path in turn, so the paths share the machine's state. Every path must spend the same tokens
on a question (seeded agents): the script checks it, so the paths did the same work.

    python benchmarks/integration_latency.py [--questions 5]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from moot.cli.run import command_society

QUESTIONS = [
    "What is the capital of France?",
    "What is 7 + 5?",
    "Is the sun a star?",
    "What is the largest planet of the solar system?",
    "What is 9 + 8?",
    "What colour is the sky on a clear day?",
    "What is 6 + 3?",
]
SOCIETY = """\
description: The default debate, seeded (the benchmark's society)
models: {default: local}
agents:
  - {name: agent1, model: default, seed: 1, max_tokens: 128}
  - {name: agent2, model: default, seed: 2, max_tokens: 128}
  - {name: agent3, model: default, seed: 3, max_tokens: 128}
protocol: {kind: debate, rounds: 2}
aggregator: {kind: vote, extract: auto}
"""
DEBATE_FLAGS = ["--agents", "3", "--rounds", "2", "--seed", "1", "--max-tokens", "128"]
MOOT = [sys.executable, "-m", "moot"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[Any], seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server for {url} exited")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer in {seconds} s")


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


@asynccontextmanager
async def mcp_session() -> AsyncIterator[Any]:
    """`moot mcp` over stdio with the MCP SDK's client, open for the whole benchmark."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "moot", "mcp", "--model", "local", *DEBATE_FLAGS],
        env=dict(os.environ),
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def mcp_ask(session: Any, question: str) -> int:
    result = await session.call_tool("ask", {"question": question})
    if result.isError:
        raise SystemExit(f"moot mcp failed: {result.content}")
    return int(result.structuredContent["usage"]["total_tokens"])


async def measure() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=5)
    args = parser.parse_args()
    questions = QUESTIONS[: args.questions]
    folder = Path(tempfile.mkdtemp(prefix="moot-latency-"))
    society_file = folder / "debate.yaml"
    society_file.write_text(SOCIETY)
    env = {**os.environ, "LANGGRAPH_CLI_NO_ANALYTICS": "1"}
    env.pop("LANGSMITH_API_KEY", None)
    servers: list[subprocess.Popen[Any]] = []

    def start(command: list[str], cwd: Path | None = None) -> subprocess.Popen[Any]:
        log = (folder / f"server{len(servers)}.log").open("w")
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        servers.append(process)
        return process

    serve_port, graph_port = free_port(), free_port()
    serve = start([*MOOT, "serve", str(society_file), "--port", str(serve_port)])
    subprocess.run([*MOOT, "langgraph", str(society_file), "-o", str(folder / "langgraph.json")],
                   check=True, env=env)  # fmt: skip
    langgraph = Path(sys.executable).parent / "langgraph"
    graph_server = start(
        [str(langgraph), "dev", "--host", "127.0.0.1", "--port", str(graph_port),
         "--no-browser", "--no-reload"],
        cwd=folder,
    )  # fmt: skip
    stack = AsyncExitStack()
    try:
        wait_for(f"http://127.0.0.1:{serve_port}/v1/models", serve)
        wait_for(f"http://127.0.0.1:{graph_port}/ok", graph_server)
        from langgraph_sdk import get_sync_client

        graph_client = get_sync_client(url=f"http://127.0.0.1:{graph_port}", timeout=600)
        mcp = await stack.enter_async_context(mcp_session())
        warm = command_society({"command": "run", "society": str(society_file)})[
            1
        ]  # the same society, in this process

        def cli(question: str) -> int:
            done = subprocess.run(
                [*MOOT, "debate", question, *DEBATE_FLAGS, "--json"],
                capture_output=True, text=True, env=env, check=True,
            )  # fmt: skip
            return int(json.loads(done.stdout)["usage"]["total_tokens"])

        def in_process(question: str) -> int:
            return warm.run(question).usage.total_tokens

        def served(question: str) -> int:
            reply = post(
                f"http://127.0.0.1:{serve_port}/v1/chat/completions",
                {"model": "debate", "messages": [{"role": "user", "content": question}]},
            )
            return int(reply["usage"]["total_tokens"])

        def graph(question: str) -> int:
            thread = graph_client.threads.create()["thread_id"]
            state = graph_client.runs.wait(thread, "debate", input={"question": question})
            return sum(turn["usage"]["total_tokens"] for turn in state["turns"])  # type: ignore[index]

        async def through_mcp(question: str) -> int:
            return await mcp_ask(mcp, question)

        paths: dict[str, Callable[[str], Any]] = {
            "`moot debate --json` (a process per question)": cli,
            "the same run in a warm process (`Society.run`)": in_process,
            "`moot mcp` (stdio, MCP SDK client)": through_mcp,
            "`moot serve` (OpenAI-compatible HTTP)": served,
            "`langgraph dev` (LangGraph SDK, `runs.wait`)": graph,
        }
        for path in paths.values():  # warm-up: models loaded, graphs compiled
            await _call(path, "What is 1 + 1?")
        seconds: dict[str, list[float]] = {name: [] for name in paths}
        for question in questions:
            tokens: dict[str, int] = {}
            for name, path in paths.items():
                started = time.perf_counter()
                tokens[name] = await _call(path, question)
                seconds[name].append(time.perf_counter() - started)
            if len(set(tokens.values())) != 1:
                print(f"warning: the paths spent different tokens on {question!r}: {tokens}")
    finally:
        await stack.aclose()
        for process in servers:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
    base = statistics.median(seconds["the same run in a warm process (`Society.run`)"])
    print(f"| path ({len(questions)} questions, 3 agents x 2 rounds, embedded model) "
          "| median s / question | x warm run |")  # fmt: skip
    print("| --- | ---: | ---: |")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median / base:.2f} |")
    print("(target: each server within 1.2x of `moot debate --json`)")


async def _call(path: Callable[[str], Any], question: str) -> int:
    """A path's tokens for `question`: coroutines awaited, blocking calls in a thread."""
    if inspect.iscoroutinefunction(path):
        return int(await path(question))
    return int(await asyncio.to_thread(path, question))


def main() -> None:
    asyncio.run(measure())


if __name__ == "__main__":
    main()
