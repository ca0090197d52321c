"""`moot serve`: one real server on 127.0.0.1 (embedded model) with the official openai client,
then the app's error and streaming cases in-process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
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
