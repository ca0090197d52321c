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

import openai
import pytest

import moot
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


@pytest.fixture
def app_client():
    from starlette.testclient import TestClient

    from moot.integrations.serve import create_app

    def society(reply: str) -> moot.Society:
        model = ScriptedChatModel(respond=lambda messages: reply)
        agents = [moot.Agent(name=f"a{i}", model=model) for i in range(2)]
        return moot.Society(agents=agents, protocol=moot.Debate(rounds=1))

    app = create_app({"pair": society("Answer: 4"), "silent": society("no idea")})
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


def test_each_answered_run_has_its_page(app_client, monkeypatch):
    import moot.integrations.serve as serve_module

    question = {"role": "user", "content": "What is <2+2>?"}
    body = ask(app_client, {"model": "pair", "messages": [question]}).json()
    page = app_client.get(body["moot"]["page"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.count("<td class='turn") == 2 and "What is &lt;2+2&gt;?" in page.text
    stream = {"model": "pair", "messages": [question], "stream": True}
    with app_client.stream("POST", "/v1/chat/completions", json=stream) as reply:
        lines = [line for line in reply.iter_lines() if line.startswith("data: {")]
    streamed = json.loads(lines[0].removeprefix("data: "))["id"]
    assert app_client.get(f"/runs/{streamed}").status_code == 200  # streamed runs too
    listed = app_client.get("/runs").text
    assert body["id"] in listed and streamed in listed
    missing = app_client.get("/runs/chatcmpl-nope")
    assert missing.status_code == 404 and "no run chatcmpl-nope" in missing.text
    monkeypatch.setattr(serve_module, "KEPT_RUNS", 1)  # only the newest page is kept
    newest = ask(app_client, {"model": "pair", "messages": [question]}).json()["moot"]["page"]
    assert app_client.get(newest).status_code == 200
    assert app_client.get(body["moot"]["page"]).status_code == 404


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
    assert app_client.get("/v1/models").json()["data"][0]["id"] == "pair"


# -- clients that misbehave, on a real uvicorn server in this process ----------------------------


class Recorder:
    """A slow scripted society that records which calls started."""

    def __init__(self, delay: float, rounds: int = 2) -> None:
        self.started: list[tuple[str | None, int | None]] = []
        recorder = self

        class Slow(ScriptedChatModel):
            async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
                metadata = run_manager.metadata if run_manager else {}
                recorder.started.append((metadata.get("moot_agent"), metadata.get("moot_round")))
                await asyncio.sleep(delay)
                return await super()._agenerate(messages, stop, run_manager, **kwargs)

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
    recorder = Recorder(delay=0.4, rounds=3)
    url = live_app({"slow": recorder.society})
    hang_up_after(url, question("What is 2+2?", stream=stream), 0.2)  # inside round 1
    time.sleep(1.5)  # rounds 2 and 3 would have started by now
    assert recorder.started and {round for _, round in recorder.started} == {1}
    # The server is free again: the next request is answered at once.
    started = time.monotonic()
    status, body = post(url, question("What is 2+2?"))
    assert status == 200 and body["choices"][0]["message"]["content"] == "4"
    assert time.monotonic() - started < 5


def test_requests_are_served_first_come_first_served(live_app):
    from concurrent.futures import ThreadPoolExecutor

    recorder = Recorder(delay=0.15, rounds=2)  # one run: 2 rounds of 0.15 s
    url = live_app({"slow": recorder.society}, concurrent_runs=1)
    finished: list[int] = []

    def ask(number: int) -> float:
        time.sleep(0.05 * number)  # arrive in order
        started = time.monotonic()
        status, _ = post(url, question(f"q{number}"))
        assert status == 200
        finished.append(number)
        return time.monotonic() - started

    with ThreadPoolExecutor(4) as pool:
        waits = list(pool.map(ask, range(4)))
    assert finished == [0, 1, 2, 3]
    assert waits[0] < 1.0  # the first comer is not held up by the others


def test_too_many_waiting_requests_get_a_429(live_app):
    from concurrent.futures import ThreadPoolExecutor

    recorder = Recorder(delay=0.3)
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
        async def arun(self, question, **options):
            raise RuntimeError("disk full")

    model = ScriptedChatModel(respond=lambda m: "Answer: 1")
    society = Exploding(agents=[moot.Agent(name="a", model=model)])
    with TestClient(create_app({"boom": society}), raise_server_exceptions=False) as client:
        reply = client.post("/v1/chat/completions", json=question("q", model="boom"))
        assert reply.status_code == 500
        error = reply.json()["error"]
        assert error["type"] == "server_error" and "RuntimeError: disk full" in error["message"]
        assert client.get("/v1/models").status_code == 200
