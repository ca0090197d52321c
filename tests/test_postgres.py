"""Checkpoints in a real PostgreSQL server, started here in a temporary folder: runs shared by
processes (killed in one, resumed in another), async runs, and the errors of a bad URL."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import moot
from moot.checkpoints import held_run, open_saver, shown
from moot.cli import main
from moot.testing import ScriptedChatModel

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-pw"


def postgres_binaries() -> Path | None:
    """The folder of initdb and postgres: on PATH, or where Debian puts them (newest first)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    return debian[-1].parent if debian else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A PostgreSQL server in a temporary folder on 127.0.0.1, password auth over TCP. As root
    it runs as the `postgres` user, else `nobody` (PostgreSQL refuses to run as root)."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.as_user: dict[str, object] = {}
        folder = None
        if os.geteuid() == 0:
            name = "postgres" if _user_exists("postgres") else "nobody"
            user = pwd.getpwnam(name)
            self.as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            folder = "/tmp"  # any user can reach it
        self.folder = Path(tempfile.mkdtemp(prefix="moot-pg-", dir=folder))
        if self.as_user:
            os.chown(self.folder, int(user.pw_uid), int(user.pw_gid))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        secret = self.folder / "password"
        secret.write_text(PASSWORD + "\n")
        if self.as_user:
            os.chown(secret, int(user.pw_uid), int(user.pw_gid))
        made = subprocess.run(
            [str(binaries / "initdb"), "-D", str(self.folder / "data"), "-U", "moot",
             f"--pwfile={secret}", "--auth-host=scram-sha-256", "--auth-local=trust",
             "-E", "UTF8", "--no-sync"],
            capture_output=True, text=True, cwd=self.folder, timeout=120, **self.as_user,  # type: ignore[call-overload]
        )  # fmt: skip
        if made.returncode != 0:
            pytest.fail(f"initdb failed: {made.stderr[-2000:]}")

    def url(self, database: str = "moot", password: str = PASSWORD) -> str:
        return f"postgresql://moot:{password}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        log = open(self.folder / "log", "ab")  # noqa: SIM115 (the server writes it)
        self.process = subprocess.Popen(
            [str(self.binaries / "postgres"), "-D", str(self.folder / "data"),
             "-k", str(self.folder), "-h", "127.0.0.1", "-p", str(self.port),
             "-c", "fsync=off", "-c", "full_page_writes=off"],
            stdout=log, stderr=log, cwd=self.folder, preexec_fn=_stop_with_parent(),
            **self.as_user,  # type: ignore[call-overload]
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"PostgreSQL did not start: {self.log()[-2000:]}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)  # fast shutdown
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def create(self, database: str) -> str:
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{database}"')
        return self.url(database)

    def log(self) -> str:
        path = self.folder / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _stop_with_parent():
    """On Linux, the server shuts down (SIGINT: fast) if pytest itself is killed."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    return lambda: prctl(1, int(signal.SIGINT))  # 1: PR_SET_PDEATHSIG


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def new_server() -> Server:
    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip(
            "PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin): "
            "apt-get install postgresql"
        )
    server = Server(binaries)
    try:
        server.start()
    except BaseException:
        server.remove()
        raise
    return server


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    started = new_server()
    yield started
    started.remove()


_databases = iter(range(1, 10_000))


@pytest.fixture
def url(server: Server) -> str:
    """A new, empty database on the shared server."""
    return server.create(f"db{next(_databases)}")


def society(respond=lambda messages: "Answer: 7", agents: int = 3, rounds: int = 2, **kw):
    model = ScriptedChatModel(respond=respond, **kw)
    return moot.Society(
        agents=[moot.Agent(name=f"a{i}", model=model) for i in range(agents)],
        protocol=moot.Debate(rounds=rounds),
    ), model


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moot.cli", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


# -- runs ---------------------------------------------------------------------------------------


def test_a_run_is_saved_in_postgres_and_resumes_from_another_society(url):
    first, model = society()
    result = first.run("What is 3+4?", checkpoint=url, thread_id="t")
    assert result.answer == "7" and len(result.turns) == 6 and model.call_count == 6
    saver, connection = open_saver(url)
    try:
        held = held_run(saver, "t")
    finally:
        connection.close()
    assert held is not None and held["question"] == "What is 3+4?"
    assert held["turns"] == result.turns  # moot's own types come back as themselves
    second, again = society()
    resumed = second.resume(checkpoint=url, thread_id="t")
    assert resumed.turns == result.turns and again.call_count == 0
    with pytest.raises(moot.ConfigError, match="already holds a run") as refused:
        second.run("another question", checkpoint=url, thread_id="t")
    assert PASSWORD not in str(refused.value) and "postgresql://moot@127.0.0.1" in str(
        refused.value
    )
    assert second.run("q2", checkpoint=url, thread_id="t", fresh=True).question == "q2"


def test_a_killed_run_resumes_in_another_process_without_calling_finished_agents(url, tmp_path):
    log = tmp_path / "calls.log"
    first = subprocess.Popen(
        [sys.executable, "-m", "tests.resume_helper", str(log), url, "t1"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while "start a0 2\n" not in (log.read_text() if log.exists() else ""):
        assert first.poll() is None, "the run ended before round 2 began"
        assert time.monotonic() < deadline, "round 2 never began"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # round 1 is saved; round 2 is in flight
    first.wait()
    assert "done a0 2" not in log.read_text()

    second = subprocess.run(
        [sys.executable, "-m", "tests.resume_helper", str(log), url, "t1", "--resume"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    result = moot.Result.model_validate_json(second.stdout)
    assert result.rounds == 3 and len(result.turns) == 9 and result.answer == "3"
    lines = log.read_text().splitlines()
    done = Counter(line for line in lines if line.startswith("done"))
    assert done == Counter({f"done a{i} {r}": 1 for i in range(3) for r in (1, 2, 3)})


def test_a_cli_debate_killed_after_round_1_is_finished_by_moot_resume(url):
    process = subprocess.Popen(
        [sys.executable, "-m", "moot.cli", "debate", "What is 40+2?", "--model", "test",
         "-o", "delay=1.5", "--agents", "3", "--rounds", "3", "--checkpoint", url,
         "--thread", "t", "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    saver, connection = open_saver(url)
    try:
        deadline = time.monotonic() + 60
        while len((held_run(saver, "t") or {}).get("turns", [])) < 3:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "round 1 was never saved"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)  # round 2 sleeps in its calls
        process.communicate()
        saved = (held_run(saver, "t") or {})["turns"]
    finally:
        connection.close()
    assert sorted((turn.round, turn.agent) for turn in saved) == [
        (1, f"agent{i}") for i in (1, 2, 3)
    ]

    resumed = cli("resume", "--checkpoint", url, "--thread", "t", "--json")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["rounds"] == 3 and result["answer"] == "42"
    assert sorted((t["round"], t["agent"]) for t in result["turns"]) == [
        (r, f"agent{i}") for r in (1, 2, 3) for i in (1, 2, 3)
    ]
    assert all(t["error"] is None for t in result["turns"])
    first_round = [t["text"] for t in result["turns"] if t["round"] == 1]
    assert first_round == [turn.text for turn in saved]
    # The same thread now holds a run: a new question there is refused, without the password.
    again = cli("debate", "Another?", "--model", "test", "--checkpoint", url, "--thread", "t")
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert PASSWORD not in again.stderr and "Traceback" not in again.stderr


async def test_async_runs_checkpoint_and_resume_in_postgres(url):
    round_2 = asyncio.Event()

    class Slow(ScriptedChatModel):
        async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
            if len(messages) > 2:  # a round-2 prompt: hold it until cancelled
                round_2.set()
                await asyncio.sleep(60)
            return await super()._agenerate(messages, stop, run_manager, **kwargs)

    slow = moot.Society(
        agents=[moot.Agent(name=f"a{i}", model=Slow(respond=lambda m: "Answer: 5"))
                for i in range(3)],
        protocol=moot.Debate(rounds=2),
    )  # fmt: skip
    run = asyncio.create_task(slow.arun("q", checkpoint=url, thread_id="t"))
    await asyncio.wait_for(round_2.wait(), timeout=20)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    finisher, model = society(lambda m: "Answer: 6")
    result = await finisher.aresume(checkpoint=url, thread_id="t")
    assert [(t.round, t.answer) for t in result.turns] == [(1, "5")] * 3 + [(2, "6")] * 3
    assert model.call_count == 3
    with pytest.raises(moot.ConfigError, match="already holds a run"):
        await finisher.arun("q", checkpoint=url, thread_id="t")
    with pytest.raises(moot.ConfigError, match="holds no run to resume"):
        await finisher.aresume(checkpoint=url, thread_id="other")


def test_processes_setting_up_one_new_database_at_once_do_not_clash(url):
    failures: list[BaseException] = []

    def open_and_close() -> None:
        try:
            open_saver(url)[1].close()
        except BaseException as error:  # noqa: BLE001 (reported below)
            failures.append(error)

    threads = [threading.Thread(target=open_and_close) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []


def test_a_database_lost_mid_run_is_one_error_and_the_run_resumes_when_it_is_back():
    server = new_server()
    try:
        url = server.create("lost")
        stopped = threading.Event()

        def respond(messages):
            if len(messages) > 2 and not stopped.is_set():  # round 2: the server goes away
                stopped.set()
                server.stop()
            return "Answer: 9"

        first, _ = society(respond, agents=2)
        with pytest.raises(moot.MootError, match="lost the checkpoint database") as lost:
            first.run("q", checkpoint=url, thread_id="t")
        assert PASSWORD not in str(lost.value) and "moot resume" in str(lost.value)
        with pytest.raises(moot.ConfigError, match="check that PostgreSQL runs"):
            first.resume(checkpoint=url, thread_id="t")
        server.start()
        result = first.resume(checkpoint=url, thread_id="t")
        assert sorted((t.round, t.agent) for t in result.turns) == [
            (r, f"a{i}") for r in (1, 2) for i in (0, 1)
        ]
    finally:
        server.remove()


# -- errors before any model runs ---------------------------------------------------------------


def bad_urls(server: Server) -> list[tuple[str, str]]:
    closed = free_port()
    return [
        (server.url(password="wrong-pw"), "check the user name and password"),
        (server.url().replace("moot:", "nobody-here:"), "check the user name and password"),
        (server.url(database="missing_db"), "create the database"),
        (f"postgresql://moot:{PASSWORD}@127.0.0.1:{closed}/moot", "PostgreSQL runs at that host"),
        (f"postgresql://moot:{PASSWORD}@127.0.0.1:port/moot", "check the URL"),
        (f"postgresql://moot:{PASSWORD}@127.0.0.1:{server.port}/moot?bogus=1", "check the URL"),
        (f"postgresql://moot:{PASSWORD}@[::1/moot", "check the URL"),
        (f"postgres://moot:{PASSWORD}@no-such-host.invalid/moot", "check the host name"),
    ]


def test_bad_urls_are_one_clear_error_before_any_model_runs(server, url):
    for bad, hint in bad_urls(server):
        runner, model = society()
        with pytest.raises(moot.ConfigError) as refused:
            runner.run("q", checkpoint=bad, thread_id="t")
        message = str(refused.value)
        assert message.startswith(f"cannot open the checkpoint database {shown(bad)}"), message
        assert hint in message and PASSWORD not in message and "wrong-pw" not in message
        assert "\n" not in message and model.call_count == 0
        with pytest.raises(moot.ConfigError, match="cannot open the checkpoint database"):
            runner.resume(checkpoint=bad, thread_id="t")


async def test_bad_urls_refuse_async_runs_too(server):
    runner, model = society()
    for bad, hint in bad_urls(server)[:4]:
        with pytest.raises(moot.ConfigError, match=hint):
            await runner.arun("q", checkpoint=bad, thread_id="t")
    assert model.call_count == 0


@pytest.mark.parametrize("command", ["debate", "resume"])
def test_the_cli_says_what_is_wrong_with_the_url_in_one_line(server, capsys, command):
    for bad, hint in bad_urls(server):
        args = ["What is 1+1?", "--model", "test"] if command == "debate" else []
        status = main([command, *args, "--checkpoint", bad, "--thread", "t"])
        out, err = capsys.readouterr()
        assert status == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("error: cannot open the checkpoint"), err
        assert hint in " ".join(err.split()) and PASSWORD not in err


def test_a_missing_extra_names_moot_postgres(monkeypatch, server, capsys):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    runner, _ = society()
    with pytest.raises(moot.MootError, match=r"moot\[postgres\]") as missing:
        runner.run("q", checkpoint=server.url(), thread_id="t")
    assert PASSWORD not in str(missing.value)
    assert main(["resume", "--checkpoint", server.url(), "--thread", "t"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the checkpoint postgresql://moot@") and "moot[postgres]" in err


def test_shown_drops_every_password():
    assert shown("postgresql://u:pw@h:5/d?password=pw2&sslmode=require") == (
        "postgresql://u@h:5/d?sslmode=require"
    )
    assert shown("runs.sqlite") == "runs.sqlite"


def test_text_postgres_cannot_store_is_refused_before_any_model_runs(url, capsys):
    runner, model = society()
    with pytest.raises(moot.ConfigError, match="cannot store the NUL character"):
        runner.run("What is\x00 1+1?", checkpoint=url, thread_id="t")
    with pytest.raises(moot.ConfigError, match="cannot store the NUL character"):
        runner.run("q", checkpoint=url, thread_id="a\x00b")
    with pytest.raises(moot.ConfigError, match="cannot store the NUL character"):
        runner.resume(checkpoint=url, thread_id="a\x00b")
    assert model.call_count == 0
    # An undecodable byte in --thread (as Python reads it from the command line):
    status = main(["debate", "q", "--model", "test", "--checkpoint", url, "--thread", "\udcff"])
    _, err = capsys.readouterr()
    assert status == 2 and "is not valid text" in err and "Traceback" not in err
    status = main(["resume", "--checkpoint", url, "--thread", "\udcff"])
    assert status == 2 and "is not valid text" in capsys.readouterr().err


def test_the_password_may_come_from_pgpassword_instead_of_the_url(server, url, monkeypatch):
    bare = url.replace(f":{PASSWORD}@", "@")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(server.folder / "no-such-file"))
    with pytest.raises(moot.ConfigError, match="no password supplied"):
        open_saver(bare)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    runner, _ = society()
    assert runner.run("q", checkpoint=bare, thread_id="t").answer == "7"
