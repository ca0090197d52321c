"""The official openai client against `moot serve` on 127.0.0.1 (embedded model)."""

from __future__ import annotations

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

pytestmark = pytest.mark.integration
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


def test_models_lists_the_societies(client):
    assert [model.id for model in client.models.list()] == ["pair"]


def test_a_completion_is_the_societys_answer_with_its_usage(client):
    reply = client.chat.completions.create(
        model="pair", messages=[{"role": "user", "content": "What is 2+2?"}]
    )
    record = reply.model_extra["moot"]
    assert reply.choices[0].message.content == (record["answer"] or "")
    assert len(record["turns"]) == 2
    assert reply.usage.total_tokens == record["usage"]["total_tokens"] > 0
    assert reply.usage.prompt_tokens == record["usage"]["input_tokens"]


def test_streaming_ends_with_usage(client):
    stream = client.chat.completions.create(
        model="pair",
        messages=[{"role": "user", "content": "What is 3+3?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage.total_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    assert isinstance(text, str)


def test_an_unknown_society_is_a_404_and_the_server_stays_up(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "q"}])
    assert caught.value.body["code"] == "model_not_found"
    assert "nope" in caught.value.body["message"]
    assert [model.id for model in client.models.list()] == ["pair"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (json.dumps({"model": "pair"}).encode(), "'messages' is required"),
        (json.dumps({"model": "pair", "messages": [{"role": "system", "content": "x"}]}).encode(),
         "no user message"),
        (json.dumps({"model": "pair", "messages": [{"role": "user", "content": "  "}]}).encode(),
         "the question is empty"),
    ],
)  # fmt: skip
def test_a_malformed_request_is_a_400(base_url, client, body, message):
    request = urllib.request.Request(
        f"{base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    error = json.loads(caught.value.read())["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert [model.id for model in client.models.list()] == ["pair"]
