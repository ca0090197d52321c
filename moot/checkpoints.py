"""Durable runs: LangGraph checkpoints in a SQLite file, a human moderator between rounds, and
the table that lets `moot resume` rebuild the society of a run started from the CLI."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from pydantic import BaseModel

from moot.errors import ConfigError, MootError
from moot.result import Turn

STATE_TYPES = [("moot.result", "Turn"), ("moot.result", "Usage")]
"""moot's own types in checkpointed state, allowed explicitly when a checkpoint is read."""


def serializer() -> JsonPlusSerializer:
    return JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES)


def sqlite_saver(path: str | Path) -> tuple[SqliteSaver, sqlite3.Connection]:
    """A SqliteSaver on `path` (created if missing) and its connection, for the caller to close."""
    connection = sqlite3.connect(str(path), check_same_thread=False)
    return SqliteSaver(connection, serde=serializer()), connection


@asynccontextmanager
async def async_sqlite_saver(path: str | Path) -> AsyncIterator[Any]:
    """An AsyncSqliteSaver on `path` (created if missing), closed on exit."""
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with aiosqlite.connect(str(path)) as connection:
        yield AsyncSqliteSaver(connection, serde=serializer())


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
    with sqlite3.connect(str(database)) as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS moot_runs (thread TEXT PRIMARY KEY, spec TEXT NOT NULL)"
        )
        connection.execute(
            "INSERT OR REPLACE INTO moot_runs VALUES (?, ?)", (thread, json.dumps(spec))
        )


def recall_run(database: str | Path, thread: str) -> dict[str, Any]:
    """The spec `remember_run` kept for `thread`."""
    if not Path(database).is_file():
        raise MootError(f"no checkpoint file {database}: give the --checkpoint of the first run")
    with sqlite3.connect(str(database)) as connection:
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
    spec: dict[str, Any] = json.loads(row[0])
    return spec
