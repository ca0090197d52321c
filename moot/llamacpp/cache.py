"""Loaded models kept for the whole process, and freed safely at its end."""

from __future__ import annotations

import atexit
import ctypes
import threading
import time
from collections.abc import Callable, Hashable
from typing import Protocol, TypeVar

from moot.llamacpp.cancel import Cancellation, default_cancellation


class Closable(Protocol):
    def close(self, grace: float) -> bool:
        """Free what it holds once no call uses it, waiting at most `grace` seconds; False if
        a call still runs (it then keeps its memory)."""
        ...


Item = TypeVar("Item", bound=Closable)


class ModelCache:
    """Loaded models (engines, fusion decoders), one per key, so agents naming the same file
    with the same options share one. `load_model` uses `default_cache`, closed at exit (before
    interpreter teardown, where llama-cpp-python's destructors print errors); a test makes its
    own.

    A call that timed out may still run in a thread left behind: freeing its context under it
    crashes the process, so `close_all` first stops every generation (`cancellation`) and each
    item waits for its calls to end."""

    grace = 30.0
    """Seconds `close_all` waits, in all, for calls still running (one llama.cpp decode step)."""

    def __init__(self, cancellation: Cancellation | None = None) -> None:
        self.cancellation = cancellation or Cancellation()
        """What `close_all` sets; the calls on this cache's models watch it."""
        self._items: dict[Hashable, Closable] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], Item]) -> Item:
        """The item kept under `key`, loaded by `load()` the first time."""
        with self._lock:
            if key not in self._items:
                self._items[key] = load()
            return self._items[key]  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self._items)

    def close_all(self) -> None:
        """Stop every generation, then free every item (one still inside llama.cpp after the
        grace period is never freed: the OS takes the memory at exit)."""
        self.cancellation.cancel_all()
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
        deadline = time.monotonic() + self.grace
        for item in items:
            if not item.close(max(0.0, deadline - time.monotonic())):
                ctypes.pythonapi.Py_IncRef(ctypes.py_object(item))


default_cache = ModelCache(default_cancellation)
atexit.register(default_cache.close_all)
