"""When a generation must stop early: its call's deadline or cancel event, or a cancellation of
every generation at once (Ctrl-C, the end of the process)."""

from __future__ import annotations

import threading
import time

from moot.errors import CallCancelledError, CallTimeoutError


class Cancellation:
    """Stops, at their next token, the generations of every call that watches it. One serves
    the whole process (`default_cancellation`, set on Ctrl-C and at exit); a test makes its
    own."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel_all(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


default_cancellation = Cancellation()


class Halt:
    """When one call must stop early: past its deadline (`timeout` seconds from now), cancelled
    by its caller (`cancel`), or by `cancellation` for all."""

    def __init__(
        self,
        timeout: float | None,
        cancel: threading.Event | None,
        cancellation: Cancellation = default_cancellation,
    ) -> None:
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.cancel = cancel
        self.cancellation = cancellation

    def due(self) -> bool:
        return self.reason() is not None

    def reason(self) -> str | None:
        if self.cancellation.is_set() or (self.cancel is not None and self.cancel.is_set()):
            return "cancelled"
        if self.deadline is not None and time.monotonic() > self.deadline:
            return "timeout"
        return None

    def raise_if_due(self) -> None:
        reason = self.reason()
        if reason == "cancelled":
            raise CallCancelledError("the llama.cpp call was cancelled")
        if reason == "timeout":
            raise CallTimeoutError(f"llama.cpp did not finish within {self.timeout:g} s")
