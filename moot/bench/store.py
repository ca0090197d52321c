"""results.jsonl: the benchmark's records, appended as they finish, read back to skip what is
done."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pydantic import ValidationError

from moot.bench.records import BenchRecord


class ResultStore:
    """results.jsonl in a folder: read what is done, append records as they come.

    A line cut short by a killed run is skipped (that question runs again) and the next record
    starts on a line of its own."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / "results.jsonl"
        self._lock = threading.Lock()

    def records(self) -> list[BenchRecord]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(BenchRecord.model_validate_json(line))
            except ValidationError:
                continue
        return records

    def append(self, record: BenchRecord) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a+b") as handle:
                handle.seek(0, os.SEEK_END)
                if handle.tell():
                    handle.seek(-1, os.SEEK_END)
                    if handle.read(1) != b"\n":
                        handle.write(b"\n")
                handle.write(record.model_dump_json().encode() + b"\n")
