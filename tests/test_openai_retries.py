"""moot owns retries on the `openai:` path: the SDK's own are off, so every request a server
sees is one moot counted, and none arrives after a run returned."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import moot

REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "fake",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Answer: 7"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
}


@pytest.fixture
def fake_api() -> Iterator[Callable[[Callable[[int], tuple[int, float]]], tuple[str, list[float]]]]:
    """Start a chat-completions server on 127.0.0.1 whose n-th request (from 1) is answered by
    `behave(n) -> (status, delay)`; returns its URL and the arrival times of its requests."""
    servers: list[ThreadingHTTPServer] = []

    def start(behave: Callable[[int], tuple[int, float]]) -> tuple[str, list[float]]:
        arrivals: list[float] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                arrivals.append(time.monotonic())
                status, delay = behave(len(arrivals))
                time.sleep(delay)
                body = json.dumps(REPLY if status == 200 else {"error": {"message": "busy"}})
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body.encode())
                except OSError:  # the client gave up first
                    pass

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}/v1", arrivals

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_rate_limited_call_counts_every_request_the_server_saw(fake_api):
    url, arrivals = fake_api(lambda n: (429 if n <= 2 else 200, 0.0))
    model = moot.load_model("openai:fake", base_url=url)
    agent = moot.Agent(name="a", model=model, retries=2, retry_delay=0.01)
    result = moot.Society(agents=[agent], protocol=moot.Debate(rounds=1)).run("What is 3+4?")
    (turn,) = result.turns
    assert turn.answer == "7"
    assert (turn.usage.calls, turn.usage.retries) == (3, 2)
    assert len(arrivals) == 3


def test_a_hanging_api_gets_one_request_per_allowed_try_and_none_after_the_run(fake_api):
    url, arrivals = fake_api(lambda n: (200, 6.0))
    model = moot.load_model("openai:fake", base_url=url)
    agent = moot.Agent(name="a", model=model, timeout=1, retries=0)
    started = time.monotonic()
    result = moot.Society(agents=[agent], protocol=moot.Debate(rounds=1)).run("What is 3+4?")
    assert time.monotonic() - started < 4
    (turn,) = result.turns
    assert turn.failed and turn.usage.retries == 0
    time.sleep(3)  # an SDK retry would arrive about 1-2 s after the first request gave up
    assert len(arrivals) == 1
