"""Durable runs: LangGraph checkpoints in a SQLite file or a PostgreSQL database, a human
moderator between rounds, and the table that lets `moot resume` rebuild the society of a run
started from the CLI.

A checkpoint is named by a path (SQLite) or a `postgresql://` URL (PostgreSQL, the extra
`moot[postgres]`): several processes or machines then share its threads, so a run started by
one resumes in another.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from pydantic import BaseModel

from moot.errors import ConfigError, MissingExtraError, MootError
from moot.result import Turn

STATE_TYPES = [
    ("moot.result", "Turn"),
    ("moot.result", "Usage"),
    ("moot.result", "ToolCall"),
    ("moot.result", "FusionStats"),
]
"""moot's own types in checkpointed state, allowed explicitly when a checkpoint is read."""
POSTGRES = ("postgresql://", "postgres://")
"""How a checkpoint that is a PostgreSQL database begins (any other string is a file path)."""
_RUNS_TABLE = "CREATE TABLE IF NOT EXISTS moot_runs (thread TEXT PRIMARY KEY, spec TEXT NOT NULL)"
_SETUP_LOCK = 0x6D6F6F74  # "moot": setting up tables from two processes at once would clash
# (tried, not waited for: LangGraph's setup builds indexes CONCURRENTLY, which waits for every
# open transaction, a wait for the lock included: a deadlock)
_TRY_LOCK = "SELECT pg_try_advisory_lock(%s) AS locked"
_TRIES = 1200  # one every 0.05 s: a minute
_SURROGATE = re.compile("[\ud800-\udfff]")


class Closeable(Protocol):
    def close(self) -> Any: ...


def serializer() -> JsonPlusSerializer:
    return JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES)


def is_postgres(where: object) -> bool:
    """Whether a checkpoint names a PostgreSQL database (a `postgresql://` URL)."""
    return isinstance(where, str) and where.lower().startswith(POSTGRES)


def shown(where: object) -> str:
    """A checkpoint as messages show it: a URL without its password."""
    if not is_postgres(where):
        return str(where)
    try:
        parts = urlsplit(str(where))
    except ValueError:  # (an unreadable address, e.g. "postgresql://[::1")
        return str(where).partition("//")[0] + "//..."
    user, at, host = parts.netloc.rpartition("@")
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "password"]
    netloc = user.partition(":")[0] + at + host
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))


def _passwords(url: str) -> list[str]:
    """The passwords in `url`, raw and decoded, read even from a URL urllib cannot parse."""
    address, _, query = url.partition("//")[2].partition("?")
    given = address.split("/", 1)[0].rpartition("@")[0].partition(":")[2]
    found = [given, *(value for key, value in parse_qsl(query) if key == "password")]
    return [text for password in found if password for text in {password, unquote(password)}]


def open_saver(where: str | Path) -> tuple[BaseCheckpointSaver[Any], Closeable]:
    """A checkpointer on `where`, a SQLite file (created if missing) or a `postgresql://`
    URL (its tables created if missing), and its connection, for the caller to close."""
    if is_postgres(where):
        from langgraph.checkpoint.postgres import PostgresSaver

        connection = _postgres(str(where))
        saver: BaseCheckpointSaver[Any] = PostgresSaver(connection, serde=serializer())
    else:
        connection = _connect(where)
        saver = SqliteSaver(connection, serde=serializer())
    return saver, _ClosedWhenIdle(saver, connection)


@dataclass(frozen=True)
class _ClosedWhenIdle:
    """A saver's connection, closed only between two of the saver's writes: after Ctrl-C the
    run stops at once, but a worker thread may still be saving a finished turn, and closing
    the connection under it crashed the process (a segmentation fault in SQLite)."""

    saver: BaseCheckpointSaver[Any]
    connection: Closeable

    def close(self) -> None:
        with self.saver.lock:  # type: ignore[attr-defined]  # both savers write under it
            self.connection.close()


def _connect(path: str | Path) -> sqlite3.Connection:
    """A connection to the SQLite file `path`, or a ConfigError saying why it cannot be one."""
    if Path(path).is_dir():
        raise ConfigError(f"checkpoint {path} is a folder: give a file name, e.g. runs.sqlite")
    if not Path(path).parent.is_dir():
        raise ConfigError(f"checkpoint {path}: the folder {Path(path).parent} does not exist")
    try:
        connection = sqlite3.connect(str(path), check_same_thread=False)
        connection.execute("PRAGMA schema_version").fetchone()
    except sqlite3.Error as error:
        raise ConfigError(
            f"checkpoint {path} is not a SQLite file ({error}): give a new file name or a "
            "checkpoint file written by moot"
        ) from None
    return connection


@asynccontextmanager
async def async_saver(where: str | Path) -> AsyncIterator[Any]:
    """An async checkpointer on `where` (as `open_saver`), closed on exit."""
    if is_postgres(where):
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        async with await _apostgres(str(where)) as connection:
            yield AsyncPostgresSaver(connection, serde=serializer())
        return
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    _connect(where).close()  # the same checks as sync runs
    async with aiosqlite.connect(str(where)) as connection:
        yield AsyncSqliteSaver(connection, serde=serializer())


def _psycopg(url: str) -> Any:
    """The psycopg module, or the error naming the extra that brings it."""
    try:
        import langgraph.checkpoint.postgres  # noqa: F401
        import psycopg
    except ImportError as error:
        package = "psycopg" if (error.name or "").startswith("psycopg") else None
        raise MissingExtraError(
            package or "langgraph-checkpoint-postgres", "postgres", f"the checkpoint {shown(url)}"
        ) from None
    return psycopg


def _options(url: str) -> dict[str, Any]:
    """How moot connects: as LangGraph's savers need (autocommit, dict rows, no prepared
    statements, which poolers refuse), giving up after 10 s unless the URL says otherwise."""
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.rows import dict_row

    options: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    if "connect_timeout" not in conninfo_to_dict(url):
        options["connect_timeout"] = 10
    return options


def _postgres(url: str) -> Any:
    """An open, set-up connection to the database at `url`, or a ConfigError saying why not."""
    psycopg = _psycopg(url)
    from langgraph.checkpoint.postgres import PostgresSaver

    connection = None
    try:
        connection = psycopg.Connection.connect(url, **_options(url))
        for _ in range(_TRIES):
            if connection.execute(_TRY_LOCK, (_SETUP_LOCK,)).fetchone()["locked"]:
                break
            time.sleep(0.05)
        else:
            raise _busy(url)
        PostgresSaver(connection).setup()
        connection.execute(_RUNS_TABLE)
        connection.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))
    except BaseException as error:
        if connection is not None:
            connection.close()
        if isinstance(error, psycopg.Error):
            raise cannot_open(url, error) from None
        raise
    return connection


async def _apostgres(url: str) -> Any:
    """`_postgres` for async runs."""
    psycopg = _psycopg(url)
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    connection = None
    try:
        connection = await psycopg.AsyncConnection.connect(url, **_options(url))
        for _ in range(_TRIES):
            found = await connection.execute(_TRY_LOCK, (_SETUP_LOCK,))
            if (await found.fetchone())["locked"]:
                break
            await asyncio.sleep(0.05)
        else:
            raise _busy(url)
        await AsyncPostgresSaver(connection).setup()
        await connection.execute(_RUNS_TABLE)
        await connection.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))
    except BaseException as error:
        if connection is not None:
            await connection.close()
        if isinstance(error, psycopg.Error):
            raise cannot_open(url, error) from None
        raise
    return connection


def _busy(url: str) -> ConfigError:
    return ConfigError(
        f"another process has been setting up the tables of {shown(url)} for a minute: "
        "check what holds the database"
    )


_URL_HINT = "check the URL, e.g. postgresql://USER:PASSWORD@HOST:5432/DATABASE"
_CREDENTIALS = "check the user name and password in the URL"
_RUNNING = "check that PostgreSQL runs at that host and port"
_HINTS = (  # phrases of libpq's messages (with spaces: no host name holds one)
    ("password authentication failed", _CREDENTIALS),
    ("no password supplied", _CREDENTIALS),
    ("role ", _CREDENTIALS),  # role "x" does not exist
    ("does not exist", "create the database (createdb NAME) or name one that exists"),
    ("permission denied", "give the user the right to create tables in the database"),
    ("connection option", _URL_HINT),
    ("connection refused", _RUNNING),
    ("no such file or directory", _RUNNING),
    ("timeout expired", _RUNNING),
    ("resolve host", "check the host name in the URL"),
    ("translate host name", "check the host name in the URL"),
)


def cannot_open(url: str, error: Exception) -> ConfigError:
    """The one-line error for a database that cannot be opened, with what to check (a URL
    psycopg cannot read is a ProgrammingError)."""
    said = _one_line(url, error)
    hints = [] if type(error).__name__ == "ProgrammingError" else _HINTS
    hint = next((hint for phrase, hint in hints if phrase in said.lower()), _URL_HINT)
    return ConfigError(f"cannot open the checkpoint database {shown(url)}: {said}: {hint}")


def _one_line(url: str, error: Exception) -> str:
    """psycopg's message on one line, without its preamble or the URL's password."""
    said = " ".join(str(error).split()).rsplit(" failed: ", 1)[-1].removeprefix("FATAL: ")
    for password in _passwords(url):
        said = said.replace(password, "***")
    return said


@contextmanager
def database_errors(where: object) -> Iterator[None]:
    """Turn a PostgreSQL database lost during a run into a MootError (the finished turns are
    saved there)."""
    lost: tuple[type[Exception], ...] = ()
    if is_postgres(where):
        lost = (_psycopg(str(where)).OperationalError,)
    try:
        yield
    except lost as error:
        raise MootError(
            f"lost the checkpoint database {shown(where)} ({_one_line(str(where), error)}): "
            "the finished turns are saved there; resume the run once it is back "
            "(`moot resume`, society.resume)"
        ) from None


def check_storable(where: object, thread: str | None, question: str | None = None) -> None:
    """Refuse, before a run, a thread id or question its checkpoint cannot store: text that is
    not Unicode (an undecodable byte from the command line), or in PostgreSQL the NUL
    character."""
    if isinstance(thread, str) and _SURROGATE.search(thread):
        raise ConfigError(
            f"the thread id {thread!r} is not valid text (an undecodable byte): name the "
            "thread in plain text"
        )
    texts = [text for text in (thread, question) if isinstance(text, str)]
    if is_postgres(where) and any("\x00" in text for text in texts):
        raise ConfigError(
            f"the checkpoint database {shown(where)} cannot store the NUL character (\\x00): "
            "remove it from the question and the thread id"
        )


def held_run(saver: BaseCheckpointSaver[Any], thread: str) -> dict[str, Any] | None:
    """The state of the run saved under `thread` (None: the thread is free)."""
    check_storable(None, thread)
    saved = saver.get_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
    return _values(saved)


async def aheld_run(saver: BaseCheckpointSaver[Any], thread: str) -> dict[str, Any] | None:
    check_storable(None, thread)
    saved = await saver.aget_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
    return _values(saved)


def _values(saved: Any) -> dict[str, Any] | None:
    values = saved.checkpoint.get("channel_values", {}) if saved is not None else {}
    return values if values.get("question") else None


def thread_taken(thread: str, values: dict[str, Any], where: str) -> ConfigError:
    """The error for a new question on a thread that holds a run: a new run there would mix
    the two runs' turns."""
    question = values["question"]
    short = question if len(question) <= 60 else question[:57] + "..."
    return ConfigError(
        f"thread '{thread}' in {shown(where)} already holds a run of {short!r} "
        f"({len(values.get('turns', []))} turns): resume it (`moot resume`, society.resume), "
        "choose another thread id, or start it over with --fresh (fresh=True)"
    )


def nothing_to_resume(thread: str, where: str) -> ConfigError:
    """The error for resuming a thread that saved no turn (its run stopped before starting)."""
    return ConfigError(
        f"thread '{thread}' in {shown(where)} holds no run to resume (it stopped before its first "
        "step): start it again with the question (`moot debate`/`moot run` with --fresh, "
        "society.run)"
    )


class Moderation(BaseModel):
    """A moderator's decision after a round."""

    note: str | None = None
    """A message shown to every agent in the next round."""
    stop: bool = False
    """End the debate now and aggregate what exists."""


Moderator = Callable[[int, list[Turn]], "Moderation | None | Awaitable[Moderation | None]"]
"""Called after each round (but the last) with the round number and its turns; async runs
also take a coroutine function."""


def remember_run(database: str | Path, thread: str, spec: dict[str, Any]) -> None:
    """Keep how to rebuild a run's society (a JSON `spec`) beside LangGraph's checkpoints."""
    check_storable(database, thread)
    if is_postgres(database):
        with _postgres(str(database)) as connection:
            connection.execute(
                "INSERT INTO moot_runs VALUES (%s, %s) "
                "ON CONFLICT (thread) DO UPDATE SET spec = EXCLUDED.spec",
                (thread, json.dumps(spec)),
            )
        return
    with _connect(database) as connection:
        connection.execute(_RUNS_TABLE)
        connection.execute(
            "INSERT OR REPLACE INTO moot_runs VALUES (?, ?)", (thread, json.dumps(spec))
        )


def recall_run(database: str | Path, thread: str) -> dict[str, Any]:
    """The spec `remember_run` kept for `thread`."""
    check_storable(database, thread)
    row: Any = None
    if is_postgres(database):
        with _postgres(str(database)) as connection:
            found = connection.execute("SELECT spec FROM moot_runs WHERE thread = %s", (thread,))
            row = found.fetchone()
        row = row and (row["spec"],)
    else:
        if not Path(database).exists():
            raise MootError(
                f"no checkpoint file {database}: give the --checkpoint of the first run"
            )
        with _connect(database) as connection:
            try:
                row = connection.execute(
                    "SELECT spec FROM moot_runs WHERE thread = ?", (thread,)
                ).fetchone()
            except sqlite3.OperationalError:
                row = None
    if row is None:
        raise ConfigError(
            f"{shown(database)} holds no run '{thread}' started by `moot debate` or `moot run`"
        )
    try:
        spec = json.loads(row[0])
    except (ValueError, RecursionError):
        spec = None
    if not isinstance(spec, dict):
        raise ConfigError(f"{shown(database)}: the stored settings of run '{thread}' are damaged")
    return spec
