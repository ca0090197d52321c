"""A call cache: identical model calls answered from a SQLite file.

Re-running a benchmark, or a changed aggregator over the same samples, then costs no model time.
A call is identical when the model and its settings (LangChain's own cache key for the model),
the messages and the call's sampling options (seed included) are. Only calls whose reply is
meant to repeat are cached: seeded ones and those at temperature 0; others only when the user
says so (`unseeded=True`), since a second sample at temperature > 0 is meant to differ.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict

from moot.errors import ConfigError


class CallCache:
    """Model replies stored in a SQLite file, keyed by model, messages and sampling options.

    Safe to share between the threads and tasks of a run and between processes (SQLite's WAL
    journal); a file that is not a cache is refused with an error naming it.
    """

    def __init__(self, path: str | Path, *, unseeded: bool = False) -> None:
        self.path = Path(path)
        self.unseeded = unseeded
        """Also cache calls that are neither seeded nor at temperature 0."""
        if not self.path.parent.is_dir():
            raise ConfigError(
                f"cannot open the call cache {self.path}: no folder {self.path.parent}"
            )
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master")}
            if tables - {"calls", "sqlite_autoindex_calls_1"}:
                raise ConfigError(
                    f"{self.path} holds other tables ({', '.join(sorted(tables))}): it is not a "
                    "moot call cache; give the cache a file of its own"
                )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, reply TEXT NOT NULL)"
            )
            self._db.commit()
        except sqlite3.DatabaseError as error:
            raise ConfigError(f"{self.path} is not a moot call cache: {error}") from None

    def keys(
        self, model: BaseChatModel, messages: list[BaseMessage], options: dict[str, Any]
    ) -> list[str]:
        """The call's keys: the one its reply is stored under, then those earlier versions of
        moot stored the same call under (a model's `earlier_llm_strings`), read after it;
        none when the call is not to be cached."""
        if not self.unseeded and not repeats(model, options):
            return []
        try:
            llms = [model._get_llm_string(**options)]
        except Exception:  # noqa: BLE001 - a model LangChain cannot describe is not cached
            return []
        try:
            earlier = getattr(model, "earlier_llm_strings", None)
            llms += [llm for llm in (earlier(**options) if earlier else []) if llm not in llms]
        except Exception:  # noqa: BLE001 - the current key alone
            pass
        listed = [message_to_dict(message) for message in messages]
        texts = [json.dumps([llm, listed], sort_keys=True, default=str) for llm in llms]
        return [hashlib.sha256(text.encode()).hexdigest() for text in texts]

    def find(self, keys: list[str]) -> BaseMessage | None:
        """The reply stored under the first of `keys` that holds one."""
        for key in keys:
            reply = self.get(key)
            if reply is not None:
                return reply
        return None

    def get(self, key: str) -> BaseMessage | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return messages_from_dict([json.loads(row[0])])[0]
        except (ValueError, KeyError, TypeError):  # a damaged entry is a miss
            return None

    def put(self, key: str, reply: BaseMessage) -> None:
        text = json.dumps(message_to_dict(reply), default=str)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO calls VALUES (?, ?)", (key, text))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def repeats(model: BaseChatModel, options: dict[str, Any]) -> bool:
    """Whether the call's reply is meant to repeat: seeded, or greedy (temperature 0)."""
    if options.get("seed", getattr(model, "seed", None)) is not None:
        return True
    temperature = options.get("temperature", getattr(model, "temperature", None))
    return temperature is not None and float(temperature) == 0.0
