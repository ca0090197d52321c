"""Engines that run one request at a time, in order, on a worker thread of their own: the
simple engine and token fusion."""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

from moot.errors import ModelSpecError
from moot.llamacpp.engine import Engine, Request

if TYPE_CHECKING:
    from moot.llamacpp.chunks import Chunk


class SerialEngine(Engine):
    """Requests one at a time, in order, on a worker thread; a subclass yields a request's
    chunks from `generate`, checking `request.stopped()`."""

    keeps_worker = False
    """True: the worker thread waits for the next request rather than ending when none does.
    llama.cpp's OpenMP threads belong to the thread that decodes, so a lasting worker keeps
    them; and while they live, OpenMP stops spinning idle threads once threads outnumber the
    cores, which on a busy machine keeps every model of the process fast (measured on 2 loaded
    cores: a batched engine beside an idle simple one, 1-4 tokens/s once the simple one's
    worker had ended, 20-33 with it waiting)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Condition()
        self._queue: deque[Request] = deque()
        self._worker: threading.Thread | None = None
        self._running: Request | None = None
        self._closed = False

    @abstractmethod
    def generate(self, request: Request) -> Iterator[Chunk]:
        """The request's chunks (on the worker thread)."""

    def free(self) -> None:
        """Free what the engine holds (no call runs)."""

    def submit(self, request: Request) -> None:
        with self._lock:
            if self._closed:
                raise ModelSpecError("the llama.cpp engine was closed")
            self._queue.append(request)
            self._lock.notify_all()
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="moot-llama", daemon=True)
                self._worker.start()

    def cancel(self, request: Request, wait: bool = False) -> None:
        with self._lock:
            request.abandoned = True
            if request in self._queue:
                self._queue.remove(request)
            while wait and self._running is request:
                self._lock.wait(timeout=1.0)

    def close(self, grace: float = 30.0) -> bool:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            worker = self._worker
        if worker is threading.current_thread():  # closed from its own call (a finaliser)
            return False
        if worker is not None:
            worker.join(timeout=grace)
            if worker.is_alive():
                return False
        self.free()
        return True

    def _work(self) -> None:
        while True:
            with self._lock:
                while self.keeps_worker and not self._queue and not self._closed:
                    self._lock.wait()
                if not self._queue:
                    self._worker = None
                    return
                request = self._running = self._queue.popleft()
            try:
                if self._closed:
                    raise ModelSpecError("the llama.cpp engine was closed")
                if not request.stopped():  # cancelled while it waited: evaluate no prompt
                    for item in self.generate(request):
                        request.send(item)
                request.send(None)
            except Exception as error:  # noqa: BLE001 - delivered to the request, worker lives
                request.send(error)
            finally:
                with self._lock:
                    self._running = None
                    self._lock.notify_all()
