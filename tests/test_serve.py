"""`moot serve`: one real server on 127.0.0.1 (embedded model) with the official openai client,
then the app's error and streaming cases in-process."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import openai
import pytest

import moot
from moot.errors import ConfigError
from moot.testing import ScriptedChatModel

SOCIETY = "agents:\n  - {name: a, copies: 2, max_tokens: 24}\nprotocol: {kind: debate, rounds: 1}\n"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    (folder / "pair.yaml").write_text(SOCIETY)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (folder / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "moot.cli", "serve", str(folder / "pair.yaml"), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, Path(log.name).read_text()
        try:
            urllib.request.urlopen(f"{url}/models", timeout=1)
            break
        except OSError:
            assert time.monotonic() < deadline, "moot serve did not start"
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()


@pytest.fixture
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key="unused")


@pytest.mark.integration
def test_a_real_server_answers_the_official_client(client):
    assert [model.id for model in client.models.list()] == ["pair"]
    reply = client.chat.completions.create(
        model="pair", messages=[{"role": "user", "content": "What is 2+2?"}]
    )
    record = reply.model_extra["moot"]
    assert reply.choices[0].message.content == (record["answer"] or "")
    assert len(record["turns"]) == 2 and all(turn["text"] for turn in record["turns"])
    assert reply.usage.total_tokens == record["usage"]["total_tokens"] > 0
    assert reply.usage.prompt_tokens == record["usage"]["input_tokens"]
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "q"}])
    assert caught.value.body["code"] == "model_not_found"
    assert [model.id for model in client.models.list()] == ["pair"]


# -- the same app in-process (Starlette's TestClient), on scripted societies --------------------


def society(reply: str) -> moot.Society:
    model = ScriptedChatModel(respond=lambda messages: reply)
    agents = [moot.Agent(name=f"a{i}", model=model) for i in range(2)]
    return moot.Society(agents=agents, protocol=moot.Debate(rounds=1))


@pytest.fixture
def app_client():
    from starlette.testclient import TestClient

    from moot.integrations.serve import create_app

    app = create_app(
        {"pair": society("Answer: 4"), "silent": society("Hmm, hard to say.\nI cannot tell.")}
    )
    with TestClient(app) as test_client:
        yield test_client


def ask(app_client, body):
    return app_client.post("/v1/chat/completions", json=body)


def test_a_completion_is_the_societys_answer_with_its_usage(app_client):
    reply = ask(app_client, {"model": "pair", "messages": [{"role": "user", "content": "2+2?"}]})
    assert reply.status_code == 200
    body = reply.json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "4"}
    assert body["usage"]["total_tokens"] == body["moot"]["usage"]["total_tokens"] > 0
    assert [turn["agent"] for turn in body["moot"]["turns"]] == ["a0", "a1"]


def test_streaming_sends_the_answer_and_ends_with_usage(app_client):
    body = {
        "model": "pair",
        "messages": [{"role": "user", "content": "What is 3+3?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with app_client.stream("POST", "/v1/chat/completions", json=body) as reply:
        lines = [line for line in reply.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "4"
    assert any(c["choices"] and c["choices"][0]["finish_reason"] == "stop" for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


def test_each_answered_run_has_its_page(app_client):
    question = {"role": "user", "content": "What is <2+2>?"}
    reply = ask(app_client, {"model": "pair", "messages": [question]})
    body = reply.json()
    assert reply.headers["X-Moot-Run-Id"] == body["id"] == body["moot"]["run_id"]
    page = app_client.get(body["moot"]["page"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.count("<td class='turn") == 2 and "What is &lt;2+2&gt;?" in page.text
    stream = {"model": "pair", "messages": [question], "stream": True}
    with app_client.stream("POST", "/v1/chat/completions", json=stream) as reply:
        lines = [line for line in reply.iter_lines() if line.startswith("data: {")]
    streamed = json.loads(lines[0].removeprefix("data: "))["id"]
    assert reply.headers["X-Moot-Run-Id"] == streamed
    assert app_client.get(f"/runs/{streamed}").status_code == 200  # streamed runs too
    listed = app_client.get("/runs").text
    assert body["id"] in listed and streamed in listed
    missing = app_client.get("/runs/chatcmpl-nope")
    assert missing.status_code == 404 and "no run chatcmpl-nope" in missing.text
    assert app_client.get("/runs/chatcmpl-nope/events").status_code == 404


def test_only_the_last_kept_runs_pages_stay():
    from starlette.testclient import TestClient

    from moot.integrations.serve import create_app

    question = {"role": "user", "content": "What is 2+2?"}
    with TestClient(create_app({"pair": society("Answer: 4")}, kept_runs=1)) as client:
        pages = [ask(client, {"model": "pair", "messages": [question]}).json()["moot"]["page"]]
        pages.append(ask(client, {"model": "pair", "messages": [question]}).json()["moot"]["page"])
        assert client.get(pages[1]).status_code == 200  # only the newest page is kept
        assert client.get(pages[0]).status_code == 404
        assert pages[0] not in client.get("/runs").text


def test_no_answer_is_an_empty_reply(app_client):
    reply = ask(app_client, {"model": "silent", "messages": [{"role": "user", "content": "q"}]})
    assert reply.json()["choices"][0]["message"]["content"] == ""
    assert reply.json()["moot"]["answer"] is None


def test_an_unknown_society_is_a_404(app_client):
    reply = ask(app_client, {"model": "nope", "messages": [{"role": "user", "content": "q"}]})
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["code"] == "model_not_found" and "nope" in error["message"]
    assert "pair" in error["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (json.dumps(["a list"]).encode(), "must be a JSON object"),
        (json.dumps({"model": "pair"}).encode(), "'messages' is required"),
        (json.dumps({"model": "pair", "messages": [{"role": "system", "content": "x"}]}).encode(),
         "no user message"),
        (json.dumps({"model": "pair", "messages": [{"role": "user", "content": "  "}]}).encode(),
         "the question is empty"),
        (json.dumps({"messages": [{"role": "user", "content": "q"}]}).encode(),
         "'model' is required"),
    ],
)  # fmt: skip
def test_a_malformed_request_is_a_400(app_client, body, message):
    reply = app_client.post(
        "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert error["code"] is None
    assert app_client.get("/v1/models").json()["data"][0]["id"] == "pair"


# -- clients that misbehave, on a real uvicorn server in this process ----------------------------


class Recorder:
    """A slow scripted society that records which calls started, and which were cancelled."""

    def __init__(self, delay: float, rounds: int = 2) -> None:
        self.started: list[tuple[str | None, int | None]] = []
        self.cancelled: list[str | None] = []
        self.finished: list[str | None] = []
        recorder = self

        class Slow(ScriptedChatModel):
            async def ainvoke(self, input, config=None, **kwargs):
                metadata = (config or {}).get("metadata") or {}
                recorder.started.append((metadata.get("moot_agent"), metadata.get("moot_round")))
                try:
                    await asyncio.sleep(delay)
                except asyncio.CancelledError:
                    recorder.cancelled.append(metadata.get("moot_agent"))
                    raise
                recorder.finished.append(metadata.get("moot_agent"))
                return await super().ainvoke(input, config, **kwargs)

        model = Slow(respond=lambda messages: "Answer: 4")
        agents = [moot.Agent(name=f"a{i}", model=model) for i in range(2)]
        self.society = moot.Society(agents=agents, protocol=moot.Debate(rounds=rounds))


@pytest.fixture
def live_app():
    """Start create_app(...) under uvicorn on a free port in a thread; yield its base URL."""
    import threading

    import uvicorn

    from moot.integrations.serve import create_app

    servers = []

    def start(societies, **options):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = uvicorn.Config(
            create_app(societies, **options), host="127.0.0.1", port=port, log_level="error"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def post(url: str, body: dict, timeout: float = 30) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def question(text, model: str = "slow", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def hang_up_after(url: str, body: dict, seconds: float) -> None:
    """Send a request, then close the connection without reading the reply."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        time.sleep(seconds)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_hangs_up_cancels_its_run(live_app, stream):
    recorder = Recorder(delay=1.5, rounds=3)
    url = live_app({"slow": recorder.society})
    hang_up_after(url, question("What is 2+2?", stream=stream), 0.3)  # inside round 1
    time.sleep(3.5)  # round 2 would have started by now (the server looks every 0.2 s)
    assert recorder.started and {round for _, round in recorder.started} == {1}
    # The server is free again: the next request is answered at once.
    started = time.monotonic()
    status, body = post(url, question("What is 2+2?"))
    assert status == 200 and body["choices"][0]["message"]["content"] == "4"
    assert time.monotonic() - started < 5


def test_requests_are_served_first_come_first_served(live_app):
    from concurrent.futures import ThreadPoolExecutor

    recorder = Recorder(delay=0.4, rounds=2)  # one run: 2 rounds of 0.4 s
    url = live_app({"slow": recorder.society}, concurrent_runs=1)
    finished: list[int] = []

    def ask(number: int) -> float:
        time.sleep(0.3 * number)  # arrive in order, with room for a busy machine
        started = time.monotonic()
        status, _ = post(url, question(f"q{number}"))
        assert status == 200
        finished.append(number)
        return time.monotonic() - started

    with ThreadPoolExecutor(4) as pool:
        waits = list(pool.map(ask, range(4)))
    assert finished == [0, 1, 2, 3]
    assert waits[0] < 1.6  # the first comer is not held up by the others (0.8 s each)


def test_too_many_waiting_requests_get_a_429(live_app):
    from concurrent.futures import ThreadPoolExecutor

    recorder = Recorder(delay=1.0)  # all three arrive while the first run is going
    url = live_app({"slow": recorder.society}, concurrent_runs=1, queue=1)
    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda n: (time.sleep(0.05 * n), post(url, question("q")))[1],
                                range(3)))  # fmt: skip
    assert sorted(status for status, _ in replies) == [200, 200, 429]
    busy = next(body for status, body in replies if status == 429)["error"]
    assert busy["code"] == "server_busy" and busy["type"] == "rate_limit_error"


def test_list_content_and_invalid_unicode_are_answered(app_client):
    parts = [{"type": "text", "text": "What is"}, {"type": "text", "text": "2+2?"}]
    reply = ask(app_client, {"model": "pair", "messages": [{"role": "user", "content": parts}]})
    assert reply.status_code == 200 and reply.json()["moot"]["answer"] == "4"
    body = '{"model": "pair", "messages": [{"role": "user", "content": "What is 2+2? \\ud800"}]}'
    reply = app_client.post(
        "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "4"
    images = [{"type": "image_url", "image_url": {"url": "x"}}]
    reply = ask(app_client, {"model": "pair", "messages": [{"role": "user", "content": images}]})
    assert reply.status_code == 400 and "list of text parts" in reply.json()["error"]["message"]


def test_a_failure_inside_the_server_is_a_500_with_an_openai_body():
    from starlette.testclient import TestClient

    from moot.integrations.serve import create_app

    class Exploding(moot.Society):
        async def astream(self, question, **options):
            raise RuntimeError("disk full")
            yield  # an async generator, as Society.astream gives

    model = ScriptedChatModel(respond=lambda m: "Answer: 1")
    society = Exploding(agents=[moot.Agent(name="a", model=model)])
    with TestClient(create_app({"boom": society}), raise_server_exceptions=False) as client:
        reply = client.post("/v1/chat/completions", json=question("q", model="boom"))
        assert reply.status_code == 500
        error = reply.json()["error"]
        assert error["type"] == "server_error" and "RuntimeError: disk full" in error["message"]
        assert client.get("/v1/models").status_code == 200
        # The run's page tells why it ended.
        run_id = reply.headers["X-Moot-Run-Id"]
        events = client.get(f"/runs/{run_id}/events").text.strip().split("\n\n")
        assert events[-1].startswith(f"id: {len(events) - 1}\nevent: failed\ndata: ")
        assert "failed: RuntimeError: disk full" in events[-1]
        assert "failed" in client.get("/runs").text


# -- hardening (issue 36): nothing starts before the whole request is read and checked ----------


@pytest.mark.parametrize(
    ("extra", "param", "message"),
    [
        ({"stream": True, "stream_options": "x"}, "stream_options", "must be a JSON object"),
        ({"stream": True, "stream_options": {"include_usage": "yes"}},
         "stream_options.include_usage", "valid boolean"),
        ({"stream": "false"}, "stream", "valid boolean"),
        ({"stream": 1}, "stream", "valid boolean"),
        ({"max_tokens": "10"}, "max_tokens", "valid integer"),
        ({"max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"temperature": "hot"}, "temperature", "valid number"),
        ({"temperature": 3}, "temperature", "less than or equal to 2"),
        ({"n": 2}, "n", "one choice"),
        ({"user": 5}, "user", "valid string"),
        ({"model": 5}, "model", "the name of a served society"),
        ({"messages": "What is 2+2?"}, "messages", "valid list"),
        ({"messages": []}, "messages", "at least 1 item"),
        ({"messages": [{"content": "q"}]}, "messages[0].role", "'messages[0].role' is required"),
        ({"messages": [{"role": 3, "content": "q"}]}, "messages[0].role", "valid string"),
    ],
)  # fmt: skip
def test_a_request_is_checked_whole_before_any_work_starts(extra, param, message):
    from starlette.testclient import TestClient

    from moot.integrations.serve import create_app

    recorder = Recorder(delay=0.01)
    with TestClient(create_app({"slow": recorder.society})) as client:
        reply = client.post("/v1/chat/completions", json={**question("What is 2+2?"), **extra})
        assert reply.status_code == 400, reply.text
        assert reply.json() == {
            "error": {
                "message": reply.json()["error"]["message"],
                "type": "invalid_request_error",
                "param": param,
                "code": None,
            }
        }
        assert message in reply.json()["error"]["message"]
        time.sleep(0.3)  # a run started in the background would have called its model by now
    assert recorder.started == []


def test_a_burst_beyond_the_queue_gets_429s_at_once():
    """Requests that arrive together are counted on arrival, before any of their runs starts."""
    import httpx

    from moot.integrations.serve import create_app

    recorder = Recorder(delay=0.05, rounds=1)
    app = create_app({"slow": recorder.society}, concurrent_runs=1, queue=2)

    async def burst() -> tuple[list[int], list[int]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://moot") as client:
            replies = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=question("q")) for _ in range(12))
            )
            # Refused and answered requests give their places back.
            later = [
                await client.post("/v1/chat/completions", json=question("q", stream="no")),
                await client.post("/v1/chat/completions", json=question("q")),
            ]
        busy = [r.json()["error"] for r in replies if r.status_code == 429]
        assert all(e["code"] == "server_busy" and e["type"] == "rate_limit_error" for e in busy)
        return sorted(r.status_code for r in replies), [r.status_code for r in later]

    statuses, later = asyncio.run(burst())
    assert statuses == [200] * 3 + [429] * 9  # one run, two waiting, the rest refused
    assert later == [400, 200]


def raw_request(url: str, head: str, body_parts: list[bytes], timeout: float = 5) -> bytes:
    """Send a request's head and some of its body, then read what the server answers."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(head.encode())
        for part in body_parts:
            connection.sendall(part)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            data = connection.recv(65536)
            if not data:
                break
            reply += data
    return reply


def test_a_body_over_the_limit_is_a_413_before_it_is_read(live_app):
    recorder = Recorder(delay=0.01, rounds=1)
    url = live_app({"slow": recorder.society}, max_body=1000)
    head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    # 100 MB announced, 100 bytes sent: the answer comes without waiting for the rest.
    reply = raw_request(url, head + "Content-Length: 100000000\r\n\r\n", [b"{" * 100])
    assert reply.startswith(b"HTTP/1.1 413")
    error = json.loads(reply.partition(b"\r\n\r\n")[2])["error"]
    assert error["type"] == "invalid_request_error" and "1000 bytes" in error["message"]
    # A chunked body (no length announced) is counted as it comes: past 1000 bytes, a 413.
    chunk = b"258\r\n" + b" " * 600 + b"\r\n"
    reply = raw_request(url, head + "Transfer-Encoding: chunked\r\n\r\n", [chunk, chunk])
    assert reply.startswith(b"HTTP/1.1 413")
    assert post(url, question("What is 2+2?"))[0] == 200  # a body within the limit
    assert len(recorder.started) == 2  # only that request ran


def test_the_default_body_limit_is_one_mebibyte(app_client):
    from moot.integrations.serve import MAX_BODY

    assert MAX_BODY == 1 << 20
    reply = ask(
        app_client, {"model": "pair", "messages": [{"role": "user", "content": "q" * MAX_BODY}]}
    )
    assert reply.status_code == 413
    assert reply.json()["error"]["type"] == "invalid_request_error"


def test_json_nested_too_deeply_is_a_400(app_client):
    deep = "[" * 100_000 + "]" * 100_000
    request = f'{{"model": "pair", "messages": [{{"role": "user", "content": "q"}}], "x": {deep}}}'
    for body in (deep, request):
        reply = app_client.post(
            "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
        )
        assert reply.status_code == 400
        assert "nested too deeply" in reply.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_hang_up_stops_the_model_call_in_flight(live_app, stream):
    """A long generation (here 10 s) stops within a moment of the hang-up, streaming or not."""
    recorder = Recorder(delay=10, rounds=1)
    url = live_app({"slow": recorder.society})
    hang_up_after(url, question("What is 2+2?", stream=stream), 0.3)
    deadline = time.monotonic() + 4
    while len(recorder.cancelled) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(recorder.cancelled) == ["a0", "a1"] and recorder.finished == []


def test_unknown_paths_and_methods_get_an_openai_error_body(app_client):
    missing = app_client.get("/v1/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"
    wrong = app_client.get("/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["message"] == "Method Not Allowed"


def test_a_failure_inside_a_streamed_run_is_an_error_event():
    from starlette.testclient import TestClient

    from moot.integrations.serve import create_app

    class Exploding(moot.Society):
        async def astream(self, question, **options):
            raise RuntimeError("disk full")
            yield  # an async generator, as Society.astream gives

    model = ScriptedChatModel(respond=lambda m: "Answer: 1")
    society = Exploding(agents=[moot.Agent(name="a", model=model)])
    with TestClient(create_app({"boom": society})) as client:
        body = question("q", model="boom", stream=True)
        with client.stream("POST", "/v1/chat/completions", json=body) as reply:
            lines = [line for line in reply.iter_lines() if line.startswith("data: ")]
    error = json.loads(lines[-1].removeprefix("data: "))["error"]
    assert error["type"] == "server_error" and "RuntimeError: disk full" in error["message"]


def test_an_ipv6_address_is_printed_in_brackets(monkeypatch, capsys):
    import types

    import uvicorn

    import moot.integrations.serve as serve_module

    class Socket:
        def __init__(self, family):
            assert family == socket.AF_INET6

        def setsockopt(self, *args):
            pass

        def bind(self, address):
            assert address == ("::1", 8123)

        def listen(self, backlog):
            pass

    fake = types.SimpleNamespace(**{**vars(socket), "socket": Socket})  # nothing is bound
    monkeypatch.setattr(serve_module, "socket", fake)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: None)
    serve_module.serve({"slow": Recorder(delay=0).society}, "::1", 8123)
    assert capsys.readouterr().out == (
        "serving slow on http://[::1]:8123/v1; runs live at http://[::1]:8123/runs\n"
    )
    assert serve_module.address("127.0.0.1", 80) == "127.0.0.1:80"


def test_the_socket_accepts_connections_before_the_server_has_started():
    """`moot serve` and `moot mcp --http` announce themselves once this returns; a client that
    connects then waits in the backlog instead of being refused (a flaky CI failure)."""
    from moot.integrations.serve import listening_socket

    listening = listening_socket("127.0.0.1", 0, "choose another port")
    try:
        socket.create_connection(listening.getsockname(), timeout=5).close()
        with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1:\d+ .*: pick one"):
            listening_socket("127.0.0.1", listening.getsockname()[1], "pick one")
    finally:
        listening.close()


def test_a_client_gone_while_sending_its_body_frees_its_place(live_app, caplog, monkeypatch):
    """...and leaves no traceback in the server's log."""
    import logging

    recorder = Recorder(delay=0.01, rounds=1)
    url = live_app({"slow": recorder.society}, concurrent_runs=1, queue=0)
    server_log = logging.getLogger("uvicorn.error")  # uvicorn's loggers do not reach the root
    monkeypatch.setattr(server_log, "handlers", [*server_log.handlers, caplog.handler])
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 500\r\n\r\n{"
        )
        time.sleep(0.3)
    deadline = time.monotonic() + 10  # its place is given back once the server sees it gone
    while (status := post(url, question("What is 2+2?"))[0]) == 429 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 200
    assert not [record.getMessage() for record in caplog.records if record.exc_info]


def test_the_command_passes_its_limits_to_the_server(monkeypatch, tmp_path, capsys):
    import moot.integrations.serve as serve_module
    from moot.cli import main

    society = tmp_path / "pair.yaml"
    society.write_text("agents:\n  - {name: a, copies: 2}\n")
    seen = {}
    monkeypatch.setattr(serve_module, "serve", lambda societies, *where, **limits: seen.update(
        limits, names=list(societies), where=where))  # fmt: skip
    options = ["--model", "test", "--host", "::1", "--max-body", "2048", "--queue", "0"]
    assert main(["serve", str(society), *options, "--kept-runs", "3", "-o", "delay=0.5"]) == 0
    assert seen == {
        "names": ["pair"],
        "where": ("::1", 8000),
        "concurrent_runs": 4,
        "queue": 0,
        "max_body": 2048,
        "kept_runs": 3,
    }
    assert main(["serve", str(society), "-o", "delay=0.5"]) == 2  # options of which model?
    assert "error: -o sets options of the --model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", str(society), "--kept-runs", "-1"])
    assert "--kept-runs" in capsys.readouterr().err


def test_a_body_that_trickles_in_is_a_408_and_frees_its_place(live_app, monkeypatch):
    import moot.integrations.serve as serve_module

    monkeypatch.setattr(serve_module, "BODY_SECONDS", 0.5)
    recorder = Recorder(delay=0.01, rounds=1)
    url = live_app({"slow": recorder.society}, concurrent_runs=1, queue=0)
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 500\r\n\r\n{"
        )
        connection.settimeout(10)
        answer = connection.recv(4096)  # the server gives up on the body first
        assert answer.startswith(b"HTTP/1.1 408")
    assert post(url, question("What is 2+2?"))[0] == 200  # its place was given back


def test_an_idle_event_stream_is_kept_alive_and_ends_with_the_run(live_app, monkeypatch):
    import moot.integrations.live as live

    monkeypatch.setattr(live, "KEEP_ALIVE", 0.1)
    recorder = Recorder(delay=2, rounds=1)
    url = live_app({"slow": recorder.society})
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=question("q", stream=True), timeout=10
    ) as reply:
        run_id = reply.headers["X-Moot-Run-Id"]
        with httpx.stream("GET", f"{url}/runs/{run_id}/events", timeout=10) as events:
            lines = list(events.iter_lines())  # ends when the run does
        assert "".join(reply.iter_lines()).endswith("data: [DONE]")
    assert ": keep-alive" in lines  # while the agents thought, nothing but keep-alives
    assert lines.index(": keep-alive") < lines.index("event: turn")
    assert [line for line in lines if line.startswith("event: ")][-1] == "event: result"
