"""The `openai:` path against a real OpenAI-compatible server (llama-cpp-python's) on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from pydantic import BaseModel

import moot
from moot.models.embedded import embedded_model_path

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(tmp_path_factory, *options: str):
    """llama-cpp-python's server on the embedded model, on a free port; yields its URL."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    log = log_path.open("w")  # a file, not a pipe: llama.cpp's load log would fill a pipe
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(embedded_model_path()),
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
            *options,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("llama_cpp.server did not start within 120 s")
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    yield from _serve(tmp_path_factory)


@pytest.fixture(scope="module")
def tools_server_url(tmp_path_factory):
    """The server with llama-cpp-python's OpenAI-style tool calls (a grammar forces a named
    tool's call; SmolLM2 would not call one of its own accord)."""
    yield from _serve(tmp_path_factory, "--chat_format", "chatml-function-calling")


def test_openai_spec_talks_to_a_compatible_server(server_url, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = moot.load_model("openai:smollm2", base_url=server_url, max_tokens=16)
    reply = model.invoke("What is 2+2?")
    assert reply.text
    assert reply.usage_metadata["input_tokens"] > 0
    assert reply.usage_metadata["output_tokens"] > 0


def test_debate_over_the_openai_path_counts_usage(server_url):
    model = moot.load_model("openai:smollm2", base_url=server_url, max_tokens=32)
    agents = [moot.Agent(name=f"a{i}", model=model) for i in range(2)]
    result = moot.Society(agents=agents, protocol=moot.Debate(rounds=2)).run("What is 12+30?")
    assert len(result.turns) == 2 * 2
    assert not any(turn.failed for turn in result.turns)
    assert result.usage.calls == 4
    assert all(
        turn.usage.input_tokens > 0 and turn.usage.output_tokens > 0 for turn in result.turns
    )


def test_streamed_debate_over_the_openai_path_keeps_usage(server_url):
    # This server sends no usage in streams, so replies come whole (one text event per turn).
    model = moot.load_model("openai:smollm2", base_url=server_url, max_tokens=16)
    agents = [moot.Agent(name=f"a{i}", model=model) for i in range(2)]
    events = list(moot.Society(agents=agents, protocol=moot.Debate(rounds=1)).stream("Say hi."))
    result = events[-1].result
    texts = {e.agent: e.text for e in events if isinstance(e, moot.TokenEvent)}
    assert texts == {turn.agent: turn.text for turn in result.turns}
    assert all(turn.usage.output_tokens > 0 for turn in result.turns)


def test_a_server_that_streams_without_usage_loses_the_count_when_asked_to_stream(server_url):
    # The reason for the default above: streaming from this server yields no usage.
    model = moot.load_model("openai:smollm2", base_url=server_url, max_tokens=16, stream_usage=True)
    chunks = list(model.stream("Say hi."))
    assert len(chunks) > 2
    assert sum(chunks[1:], chunks[0]).usage_metadata is None


def test_an_unreachable_agent_fails_alone(server_url):
    live = moot.load_model("openai:smollm2", base_url=server_url, max_tokens=16)
    dead = moot.load_model(
        "openai:smollm2", base_url=f"http://127.0.0.1:{_free_port()}/v1", max_retries=0, timeout=5
    )
    agents = [
        moot.Agent(name="live1", model=live),
        moot.Agent(name="dead", model=dead, retry_delay=0.01),
        moot.Agent(name="live2", model=live),
    ]
    result = moot.Society(agents=agents, protocol=moot.Debate(rounds=2)).run("What is 1+1?")
    failed = [turn for turn in result.turns if turn.failed]
    assert [turn.agent for turn in failed] == ["dead", "dead"]
    assert "Connection" in failed[0].error
    # A refused connection may pass: it is tried 1 + 2 times before the turn fails.
    assert [(turn.usage.calls, turn.usage.retries) for turn in failed] == [(3, 2), (3, 2)]
    assert all(turn.text for turn in result.turns if turn.agent != "dead")
    assert result.usage.calls == 10
    # The token limit reaches the server (langchain-openai alone sends only a limit that
    # llama-cpp-python's server ignores).
    assert all(turn.usage.output_tokens <= 16 for turn in result.turns if not turn.failed)


def test_a_society_file_mixes_a_local_gguf_and_a_served_model(server_url, tmp_path):
    path = tmp_path / "mixed.yaml"
    path.write_text(
        "models:\n"
        "  here: {spec: local, n_ctx: 2048}\n"
        f"  there: {{spec: 'openai:smollm2', base_url: '{server_url}', max_tokens: 32}}\n"
        "agents:\n"
        "  - {name: quick, copies: 2, model: here, max_tokens: 32}\n"
        "  - {name: remote, model: there}\n"
        "protocol: {kind: cascade, tiers: [[quick1, quick2], [remote]], threshold: 1.0,\n"
        "           confidence: reported}\n"
    )
    society = moot.load_society(path)
    models = society.context().models
    from langchain_openai import ChatOpenAI

    assert type(models[0]).__name__ == "ChatLlama" and isinstance(models[2], ChatOpenAI)
    result = society.run("What is 2+2?")
    first, second = result.details["tiers"]  # no reported confidence: always escalates
    assert first["agents"] == ["quick1", "quick2"] and second["agents"] == ["remote"]
    calls = {turn.agent: turn.usage.calls for turn in result.turns}  # (a re-ask for the format
    assert calls["quick1"] >= 1 and calls["quick2"] >= 1 and calls["remote"] >= 1  # adds one)
    assert first["usage"]["calls"] == calls["quick1"] + calls["quick2"]
    assert second["usage"]["calls"] == calls["remote"]
    assert all(t.usage.output_tokens > 0 and not t.failed for t in result.turns)


def test_an_agent_calls_a_tool_through_the_openai_path(tools_server_url):
    model = moot.load_model("openai:smollm2", base_url=tools_server_url, max_tokens=48)
    agent = moot.Agent(
        name="counter", model=model, tools=["calculator"], tool_choice="first", max_tool_calls=2
    )
    result = moot.Society(agents=[agent], protocol=moot.Debate(rounds=1)).run(
        "Use the calculator to compute 1234 * 5678."
    )
    turn = result.turns[0]
    assert not turn.failed, turn.error
    # The first step was forced (tool_choice names the calculator), so the server's grammar
    # made a call; the calculator ran on what SmolLM2 wrote and its result or error is kept.
    first = turn.tool_calls[0]
    assert first.name == "calculator" and isinstance(first.arguments.get("expression"), str)
    assert (first.result is None) != (first.error is None)
    assert turn.usage.calls >= 2  # the forced call, then the answer (or more calls)
    assert turn.usage.input_tokens > 0 and turn.usage.output_tokens > 0


class _Reading(BaseModel):
    value: int


def test_typed_answers_are_held_by_the_servers_response_format(server_url):
    # llama-cpp-python's server takes a "json_object" format with a schema: a grammar holds
    # the whole reply to reasoning + answer, which moot writes back as text, then the JSON.
    model = moot.load_model(
        "openai:smollm2", base_url=server_url, max_tokens=160, structured_output="json_object"
    )
    agents = [moot.Agent(name=f"a{i}", model=model) for i in range(2)]
    society = moot.Society(agents=agents, protocol=moot.Debate(rounds=1), answer_schema=_Reading)
    result = society.run("What is 12+30?")
    for turn in result.turns:
        assert not turn.failed and turn.answer is not None, turn.answer_error
        assert not turn.text.startswith("{")  # unwrapped: the reasoning comes first
        assert turn.text.rstrip().endswith("}")
    assert isinstance(result.answer_object, _Reading)


def test_a_server_without_structured_output_is_asked_in_the_prompt(server_url):
    # The default for a custom server: no response format (this one refuses "json_schema").
    model = moot.load_model("openai:smollm2", base_url=server_url, max_tokens=48)
    agent = moot.Agent(name="a", model=model)
    society = moot.Society(agents=[agent], protocol=moot.Debate(rounds=1), answer_schema=_Reading)
    turn = society.run("What is 12+30?").turns[0]
    assert not turn.failed, turn.error
    assert turn.answer is not None or turn.answer_error  # SmolLM2 rarely fits it unaided
