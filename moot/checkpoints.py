"""Durable runs: LangGraph checkpoints in a SQLite file, a human moderator between rounds, and
the table that lets `moot resume` rebuild the society of a run started from the CLI."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from pydantic import BaseModel

from moot.errors import ConfigError, MootError
from moot.result import Turn

STATE_TYPES = [
    ("moot.result", "Turn"),
    ("moot.result", "Usage"),
    ("moot.result", "ToolCall"),
    ("moot.result", "FusionStats"),
]
"""moot's own types in checkpointed state, allowed explicitly when a checkpoint is read."""


def serializer() -> JsonPlusSerializer:
    return JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES)


def sqlite_saver(path: str | Path) -> tuple[SqliteSaver, sqlite3.Connection]:
    """A SqliteSaver on `path` (created if missing) and its connection, for the caller to close."""
    connection = _connect(path)
    return SqliteSaver(connection, serde=serializer()), connection


def _connect(path: str | Path) -> sqlite3.Connection:
    """A connection to the SQLite file `path`, or a ConfigError saying why it cannot be one."""
    if Path(path).is_dir():
        raise ConfigError(f"checkpoint {path} is a folder: give a file name, e.g. runs.sqlite")
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
async def async_sqlite_saver(path: str | Path) -> AsyncIterator[Any]:
    """An AsyncSqliteSaver on `path` (created if missing), closed on exit."""
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    _connect(path).close()  # the same checks as sync runs
    async with aiosqlite.connect(str(path)) as connection:
        yield AsyncSqliteSaver(connection, serde=serializer())


def held_run(saver: BaseCheckpointSaver[Any], thread: str) -> dict[str, Any] | None:
    """The state of the run saved under `thread` (None: the thread is free)."""
    saved = saver.get_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
    return _values(saved)


async def aheld_run(saver: BaseCheckpointSaver[Any], thread: str) -> dict[str, Any] | None:
    saved = await saver.aget_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})
    return _values(saved)


def _values(saved: Any) -> dict[str, Any] | None:
    values = saved.checkpoint.get("channel_values", {}) if saved is not None else {}
    return values if values.get("question") else None


def thread_taken(thread: str, values: dict[str, Any], where: str) -> ConfigError:
    """The error for a new question on a thread that holds a run: a new run there would mix
    the two runs' turns."""
    question = values["question"]
    shown = question if len(question) <= 60 else question[:57] + "..."
    return ConfigError(
        f"thread '{thread}' in {where} already holds a run of {shown!r} "
        f"({len(values.get('turns', []))} turns): resume it (`moot resume`, society.resume), "
        "choose another thread id, or start it over with --fresh (fresh=True)"
    )


def nothing_to_resume(thread: str, where: str) -> ConfigError:
    """The error for resuming a thread that saved no turn (its run stopped before starting)."""
    return ConfigError(
        f"thread '{thread}' in {where} holds no run to resume (it stopped before its first "
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
    with _connect(database) as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS moot_runs (thread TEXT PRIMARY KEY, spec TEXT NOT NULL)"
        )
        connection.execute(
            "INSERT OR REPLACE INTO moot_runs VALUES (?, ?)", (thread, json.dumps(spec))
        )


def recall_run(database: str | Path, thread: str) -> dict[str, Any]:
    """The spec `remember_run` kept for `thread`."""
    if not Path(database).exists():
        raise MootError(f"no checkpoint file {database}: give the --checkpoint of the first run")
    with _connect(database) as connection:
        try:
            row = connection.execute(
                "SELECT spec FROM moot_runs WHERE thread = ?", (thread,)
            ).fetchone()
        except sqlite3.OperationalError:
            row = None
    if row is None:
        raise ConfigError(
            f"{database} holds no run '{thread}' started by `moot debate` or `moot run`"
        )
    try:
        spec = json.loads(row[0])
    except (ValueError, RecursionError):
        spec = None
    if not isinstance(spec, dict):
        raise ConfigError(f"{database}: the stored settings of run '{thread}' are damaged")
    return spec
