"""results.jsonl: the benchmark's records, appended as they finish, read back to skip what is
done; transcripts.jsonl beside it: each record's turns, for `moot show`."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from pydantic import BaseModel, ValidationError

from moot.bench.records import BenchRecord
from moot.errors import ConfigError
from moot.result import Turn


class ResultStore:
    """results.jsonl in a folder: read what is done, append records as they come.

    A line cut short by a killed run is skipped (that question runs again) and the next record
    starts on a line of its own. Lines are read as bytes, split at b"\\n": a line cut inside a
    character, or any other byte that is not UTF-8, spoils that line only, and U+2028 in a
    text is not taken for a line end."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / "results.jsonl"
        self.transcripts_path = Path(folder) / "transcripts.jsonl"
        self._lock = threading.Lock()

    def records(self) -> list[BenchRecord]:
        if not self.path.exists():
            return []
        records = []
        for line in _lines(self.path):
            try:
                records.append(BenchRecord.model_validate_json(line))
            except ValidationError:
                continue
        return records

    def records_with_transcripts(self) -> list[BenchRecord]:
        """The records, each with its turns where transcripts.jsonl holds them."""
        turns: dict[str, list[Turn]] = {}
        if self.transcripts_path.exists():
            for line in _lines(self.transcripts_path):
                try:
                    kept = _Transcript.model_validate_json(line)
                except ValidationError:
                    continue
                turns[json.dumps(kept.key)] = kept.turns
        return [
            record.model_copy(update={"transcript": turns.get(json.dumps(record.key()), [])})
            for record in self.records()
        ]

    def append(self, record: BenchRecord) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if record.transcript:
                kept = _Transcript(key=list(record.key()), turns=record.transcript)
                _append_line(self.transcripts_path, kept.model_dump_json().encode())
            _append_line(self.path, record.model_dump_json().encode())


class _Transcript(BaseModel):
    """One line of transcripts.jsonl: a record's key and its turns."""

    key: list[str | int]
    turns: list[Turn]


def _lines(path: Path) -> list[bytes]:
    try:
        return path.read_bytes().split(b"\n")
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None


def _append_line(path: Path, line: bytes) -> None:
    """Append `line`, on a line of its own even after a line cut short by a killed run."""
    with path.open("a+b") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell():
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
        handle.write(line + b"\n")
