"""The live run page of `moot serve`: a real server process (scripted model, a delay per call so
that rounds can be watched), its /runs/<id> page in headless Chromium while the run goes, its
server-sent events read by a plain HTTP client, viewers that come late or hang up, and runs
that are cancelled or unknown."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
AGENTS, ROUNDS, DELAY = 3, 4, 1.0  # a run takes about ROUNDS * DELAY seconds
SOCIETY = (
    f"agents:\n  - {{name: a, copies: {AGENTS}}}\nprotocol: {{kind: debate, rounds: {ROUNDS}}}\n"
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`moot serve` on a free port; yields (base URL, log path)."""
    folder = tmp_path_factory.mktemp("live")
    (folder / "slow.yaml").write_text(SOCIETY)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = folder / "serve.log"
    log = log_path.open("w")
    command = [sys.executable, "-m", "moot.cli", "serve", str(folder / "slow.yaml")]
    command += ["--port", str(port), "--model", "test", "-o", f"delay={DELAY}"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log_path.read_text()
        try:
            urllib.request.urlopen(f"{url}/v1/models", timeout=1)
            break
        except OSError:
            assert time.monotonic() < deadline, "moot serve did not start"
            time.sleep(0.2)
    yield url, log_path
    process.terminate()
    process.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.fail("the live page tests need Chromium: `apt-get install chromium` (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class StreamedRun:
    """A streamed chat request read in a thread: its run id as soon as the headers come, then
    its answer and when the stream ended."""

    def __init__(self, url: str, question: str = "What is 40 + 2?") -> None:
        self.id: str | None = None
        self.answer = ""
        self.done_at: float | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        body = {"model": "slow", "messages": [{"role": "user", "content": question}]}
        self._thread = threading.Thread(target=self._read, args=(url, body), daemon=True)
        self._thread.start()
        assert self._ready.wait(20), "no response headers"
        assert self.id is not None, self.error

    def _read(self, url: str, body: dict) -> None:
        try:
            with httpx.stream(
                "POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=60
            ) as reply:
                self.id = reply.headers.get("X-Moot-Run-Id")
                self._ready.set()
                for line in reply.iter_lines():
                    if line == "data: [DONE]":
                        self.done_at = time.monotonic()
                    elif line.startswith("data: {"):
                        for choice in json.loads(line.removeprefix("data: "))["choices"]:
                            self.answer += choice["delta"].get("content") or ""
        except BaseException as error:  # noqa: BLE001 - re-raised by join
            self.error = error
            self._ready.set()

    def join(self) -> StreamedRun:
        self._thread.join(60)
        assert not self._thread.is_alive() and self.error is None, self.error
        return self


def events(url: str, run_id: str, headers: dict | None = None, until: str | None = None):
    """The run's server-sent events as (id, kind, data); stops (hangs up) after the first event
    of kind `until`."""
    found: list[tuple[int, str, dict]] = []
    fields: dict[str, str] = {}
    with httpx.stream(
        "GET", f"{url}/runs/{run_id}/events", headers=headers or {}, timeout=60
    ) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        for line in reply.iter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            found.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
            fields = {}
            if found[-1][1] == until:
                break
    return found


def test_a_person_watches_the_run_fill_in_turn_by_turn(server, browser):
    url, log = server
    run = StreamedRun(url)
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(f"{url}/runs/{run.id}")
    assert page.locator("#final-answer").inner_text() == "final answer: …"
    # A turn shows while the run still goes: the chat stream has not ended and the page has
    # not yet received the result.
    page.wait_for_function(
        "document.querySelectorAll('#grid td.turn').length > 0 && !document.getElementById('run')"
        ".dataset.over",
        timeout=20_000,
    )
    assert run.done_at is None
    first = page.locator("#grid td.turn").first
    assert first.locator(".answer").inner_text() == "42"
    # the round of the latest turn: 1, or later where the browser was slow to open the page
    assert re.search(r"running · round [1-4]\b", page.locator("#status").inner_text())
    # Round 1 closes with its vote before the run ends.
    page.wait_for_function(
        "(document.querySelector(\"#grid tr[data-round='1'] td.vote\") || {}).textContent"
        "?.includes('42 ×3') && !document.getElementById('run').dataset.over",
        timeout=20_000,
    )
    assert run.done_at is None
    late = browser.new_page()  # a second viewer, mid-run, catches up on what it missed
    late.goto(f"{url}/runs/{run.id}")
    page.wait_for_function("document.getElementById('run').dataset.over", timeout=30_000)
    late.wait_for_function("document.getElementById('run').dataset.over", timeout=30_000)
    assert run.join().answer == "42"
    for viewer in (page, late):
        assert viewer.locator("#final-answer").inner_text() == "final answer: 42"
        assert viewer.locator("#grid td.turn").count() == AGENTS * ROUNDS
        assert viewer.locator("#agreement circle").count() == ROUNDS
        cell = viewer.locator("#grid td.turn[data-round='2']").first
        cell.locator("summary").click()
        assert "in round 2: 40 + 2." in cell.locator("pre").inner_text()
    # The finished run's page is the static page, whole, without a script.
    finished = httpx.get(f"{url}/runs/{run.id}")
    assert finished.status_code == 200 and "<script" not in finished.text
    assert finished.text.count("<td class='turn") == AGENTS * ROUNDS
    listed = httpx.get(f"{url}/runs").text
    assert run.id in listed and "answered → 42" in listed
    assert "Traceback" not in log.read_text()


def test_every_viewer_gets_every_event_however_late(server):
    url, _ = server
    run = StreamedRun(url)
    early = events(url, run.id)  # from the start to the end
    run.join()
    late = events(url, run.id)  # after the end: the same events, replayed
    assert early == late
    assert [number for number, _, _ in early] == list(range(len(early)))
    kinds = [kind for _, kind, _ in early]
    assert kinds[0] == "state" and kinds[-1] == "result"
    assert kinds.count("turn") == AGENTS * ROUNDS and kinds.count("vote") == ROUNDS
    turns = [data for _, kind, data in early if kind == "turn"]
    assert [t["round"] for t in turns] == sorted(t["round"] for t in turns)
    assert all(t["answer"] == "42" and not t["failed"] for t in turns)
    assert early[-1][2]["answer"] == "42" and "final answer: <b>42</b>" in early[-1][2]["html"]
    # A viewer that reconnects says what it saw last, and gets only what followed.
    assert events(url, run.id, {"Last-Event-ID": "3"}) == early[4:]
    for nonsense in ("x", "-1", "9" * 5000, ""):
        assert events(url, run.id, {"Last-Event-ID": nonsense}) == early
    # Nothing more will come: 204 tells an EventSource to stop reconnecting.
    last = str(early[-1][0])
    assert (
        httpx.get(f"{url}/runs/{run.id}/events", headers={"Last-Event-ID": last}).status_code == 204
    )


def test_a_viewer_that_hangs_up_leaves_the_run_and_server_whole(server):
    url, log = server
    run = StreamedRun(url)
    seen = events(url, run.id, until="turn")  # hangs up after the first turn
    assert seen[-1][1] == "turn" and run.done_at is None
    for _ in range(3):  # more viewers come and go mid-run
        with httpx.stream("GET", f"{url}/runs/{run.id}/events", timeout=10) as reply:
            next(reply.iter_lines())
    assert run.join().answer == "42"
    finished = httpx.get(f"{url}/runs/{run.id}")
    assert finished.text.count("<td class='turn") == AGENTS * ROUNDS
    assert httpx.get(f"{url}/v1/models").status_code == 200
    assert "Traceback" not in log.read_text() and "Exception" not in log.read_text()


def test_a_run_whose_client_hangs_up_shows_as_cancelled(server, browser):
    url, log = server
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(
        {"model": "slow", "messages": [{"role": "user", "content": "q"}], "stream": True}
    ).encode()
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        head = connection.recv(65536).decode()
        run_id = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("x-moot-run-id:")
        )
        assert events(url, run_id, until="turn")[-1][1] == "turn"
    seen = events(url, run_id)  # the run is cancelled: its events end with why
    assert seen[-1][1] == "failed" and seen[-1][2]["status"] == "cancelled"
    assert "hung up" in seen[-1][2]["message"]
    assert len([kind for _, kind, _ in seen if kind == "turn"]) < AGENTS * ROUNDS
    page = browser.new_page()
    page.goto(f"{url}/runs/{run_id}")
    page.wait_for_function("document.getElementById('run').dataset.over", timeout=20_000)
    assert page.locator("#final-answer").inner_text() == "final answer: none (cancelled)"
    assert "hung up" in page.locator("#status").inner_text()
    assert page.locator("#grid td.turn").count() >= 1  # what it did is still shown
    assert "cancelled" in httpx.get(f"{url}/runs").text
    assert "Traceback" not in log.read_text()


def test_an_unknown_run_is_a_404_page(server, browser):
    url, _ = server
    page = browser.new_page()
    reply = page.goto(f"{url}/runs/chatcmpl-nope")
    assert reply is not None and reply.status == 404
    assert "no run chatcmpl-nope here" in page.locator("body").inner_text()
    assert httpx.get(f"{url}/runs/chatcmpl-nope/events").status_code == 404
    assert httpx.get(f"{url}/runs/%3Cscript%3E").text.count("<script>") == 0  # escaped
