"""A society's runs trace per agent and per round: through OpenTelemetry (OpenInference's
LangChain instrumentor, spans caught by an in-memory exporter) and to LangSmith (LangChain's
environment variables, runs caught by a LangSmith-shaped server on 127.0.0.1)."""

from __future__ import annotations

import email.parser
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import moot
from moot.testing import ScriptedChatModel

pytest.importorskip("openinference.instrumentation.langchain", reason="the 'tracing' extra")


def scripted_debate(rounds: int = 2) -> moot.Society:
    model = ScriptedChatModel(respond=lambda messages, info: f"{info.agent}\nAnswer: 5")
    agents = [
        moot.Agent(name="alice", model=model),
        moot.Agent(name="bob", model=model, role="critic"),
    ]
    return moot.Society(agents=agents, protocol=moot.Debate(rounds=rounds))


@pytest.fixture
def spans():
    from openinference.instrumentation.langchain import LangChainInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        instrumentor.uninstrument()


def test_opentelemetry_has_one_span_per_agent_turn_with_agent_role_round_and_usage(spans):
    question = "What is 2 + 3? (the tracing test's own question)"
    result = scripted_debate(rounds=2).run(question)
    finished = spans.get_finished_spans()
    # This run's trace only: a call an earlier test left running may end its span meanwhile.
    root = next(
        s for s in finished if s.parent is None and question in str(s.attributes.get("input.value"))
    )
    llm = [
        s
        for s in finished
        if s.attributes.get("openinference.span.kind") == "LLM"
        and s.context.trace_id == root.context.trace_id
    ]
    assert len(llm) == len(result.turns) == 4
    seen = set()
    for span in llm:
        metadata = json.loads(span.attributes["metadata"])
        agent, round = metadata["moot_agent"], metadata["moot_round"]
        seen.add((agent, round))
        assert span.name == f"{agent} round {round}"
        assert metadata["moot_role"] == ("critic" if agent == "bob" else "debater")
        turn = next(t for t in result.turns if (t.agent, t.round) == (agent, round))
        assert span.attributes["llm.token_count.prompt"] == turn.usage.input_tokens
        assert span.attributes["llm.token_count.completion"] == turn.usage.output_tokens
    assert seen == {("alice", 1), ("bob", 1), ("alice", 2), ("bob", 2)}


class _LangSmith(BaseHTTPRequestHandler):
    """Enough of LangSmith's API to take the runs a client posts."""

    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.received.append((self.path, self.headers.get("content-type", ""), body))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    do_PATCH = do_POST

    def do_GET(self) -> None:  # /info: an unknown server, so the client uses its defaults
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def posted_runs(received: list[tuple[str, str, bytes]]) -> dict[str, dict]:
    """Runs by id, from the multipart bodies: "post.ID" or "patch.ID" parts hold the run,
    "post.ID.outputs" and the like its fields."""
    runs: dict[str, dict] = {}
    for _, content_type, body in received:
        if not content_type.startswith("multipart/"):
            continue
        message = email.parser.BytesParser().parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        for part in message.get_payload():
            name = part.get_param("name", header="content-disposition")
            _, run_id, *field = name.split(".")
            value = json.loads(part.get_payload(decode=True))
            run = runs.setdefault(run_id, {})
            run.update({field[0]: value} if field else value)
    return runs


def test_langsmith_gets_one_llm_run_per_agent_turn_named_and_tagged():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LangSmith)
    _LangSmith.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {
        **os.environ,
        "LANGSMITH_TRACING": "true",
        "LANGSMITH_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
        "LANGSMITH_API_KEY": "test-key",
        "LANGSMITH_PROJECT": "moot-tests",
    }
    script = (
        "import json; from tests.test_tracing import scripted_debate; "
        "from langchain_core.tracers.langchain import wait_for_all_tracers; "
        "result = scripted_debate().run('What is 2 + 3?'); wait_for_all_tracers(); "
        "print(json.dumps([[t.agent, t.round, t.usage.input_tokens] for t in result.turns]))"
    )
    try:
        run = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        server.shutdown()
    assert run.returncode == 0, run.stderr
    turns = json.loads(run.stdout.splitlines()[-1])
    runs = posted_runs(_LangSmith.received)
    llm = [r for r in runs.values() if r.get("run_type") == "llm"]
    assert len(llm) == len(turns) == 4
    for agent, round, input_tokens in turns:
        (traced,) = [r for r in llm if r["name"] == f"{agent} round {round}"]
        metadata = traced["extra"]["metadata"]
        assert (metadata["moot_agent"], metadata["moot_round"]) == (agent, round)
        assert metadata["moot_role"] == ("critic" if agent == "bob" else "debater")
        assert f"moot:agent:{agent}" in traced["tags"]
        message = traced["outputs"]["generations"][0][0]["message"]["kwargs"]
        assert message["usage_metadata"]["input_tokens"] == input_tokens
