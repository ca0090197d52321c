"""Durable runs: LangGraph checkpoints in a SQLite file, and a human moderator between rounds."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from pydantic import BaseModel

from moot.result import Turn

STATE_TYPES = [("moot.result", "Turn"), ("moot.result", "Usage")]
"""moot's own types in checkpointed state, allowed explicitly when a checkpoint is read."""


def serializer() -> JsonPlusSerializer:
    return JsonPlusSerializer(allowed_msgpack_modules=STATE_TYPES)


def sqlite_saver(path: str | Path) -> tuple[SqliteSaver, sqlite3.Connection]:
    """A SqliteSaver on `path` (created if missing) and its connection, for the caller to close."""
    connection = sqlite3.connect(str(path), check_same_thread=False)
    return SqliteSaver(connection, serde=serializer()), connection


class Moderation(BaseModel):
    """A moderator's decision after a round."""

    note: str | None = None
    """A message shown to every agent in the next round."""
    stop: bool = False
    """End the debate now and aggregate what exists."""


Moderator = Callable[[int, list[Turn]], Moderation | None]
"""Called after each round (but the last) with the round number and its turns."""
