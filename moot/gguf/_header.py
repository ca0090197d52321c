"""A GGUF file's header (metadata and tensor table), read in a fraction of a second.

gguf-py's `GGUFReader` builds a numpy view for every part of every field: on a Qwen2.5 GGUF
(151,936 tokens, 151,387 merges) that takes 16 s before a single value can be read, which is too
slow for a check made each time models are loaded. This reads the same header with `struct`
(format: ggml's docs/gguf.md) and returns what `GGUFReader.fields[...].contents()` and
`.types` would, so gguf-py's writer can copy the values back.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCALARS = {  # GGUFValueType -> struct format
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_DEFAULT_ALIGNMENT = 32
_MAX_NESTING = 8
"""Arrays of arrays nested deeper than this are refused (real files nest one or two deep)."""


class UnsupportedGGUF(ValueError):
    """A well-formed GGUF that this reader does not read (another version or byte order)."""


@dataclass(frozen=True)
class RawTensor:
    name: str
    shape: tuple[int, ...]
    """In ggml order (fastest-varying dimension first), as the file stores it."""
    kind: int
    """The GGMLQuantizationType number."""
    offset: int
    """Byte offset of its data in the file."""


@dataclass(frozen=True)
class Header:
    fields: dict[str, tuple[Any, list[int]]]
    """key -> (value, value types: [type] or [ARRAY, element type...])."""
    tensors: list[RawTensor]


class _Cursor:
    def __init__(self, data: mmap.mmap) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str) -> Any:
        try:
            (value,) = struct.unpack_from(fmt, self.data, self.at)
        except struct.error as error:
            raise ValueError(f"the header ends early (at byte {self.at})") from error
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        size = self.take("<Q")
        end = self.at + size
        if end > len(self.data):
            raise ValueError(f"a string at byte {self.at} runs past the end of the file")
        text = self.data[self.at : end].decode("utf-8", errors="replace")
        self.at = end
        return text

    def value(self, kind: int, depth: int = 0) -> tuple[Any, list[int]]:
        if kind == _STRING:
            return self.string(), [kind]
        if kind == _ARRAY:
            if depth == _MAX_NESTING:
                raise ValueError(f"arrays nested over {_MAX_NESTING} deep at byte {self.at}")
            item_kind, count = self.take("<I"), self.take("<Q")
            if item_kind in _SCALARS:
                fmt = _SCALARS[item_kind]
                size = struct.calcsize(fmt)
                if self.at + size * count > len(self.data):
                    raise ValueError(f"an array at byte {self.at} runs past the end of the file")
                values = list(struct.unpack_from(f"<{count}{fmt[1]}", self.data, self.at))
                self.at += size * count
                return values, [kind, item_kind]
            items = [self.value(item_kind, depth + 1) for _ in range(count)]
            item_types = items[0][1] if items else [item_kind]
            return [item for item, _ in items], [kind, *item_types]
        if kind not in _SCALARS:
            raise ValueError(f"unknown value type {kind} at byte {self.at}")
        return self.take(_SCALARS[kind]), [kind]


def read_header(path: Path) -> Header:
    """The header of the GGUF at `path`, tensor offsets counted from the file's start. Raises
    UnsupportedGGUF for a file that is not a little-endian GGUF of version 2 or 3, ValueError
    for one that is cut short or malformed."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        cursor = _Cursor(data)
        if data[:4] != b"GGUF":
            raise ValueError("no GGUF magic")
        cursor.at = 4
        version = cursor.take("<I")
        if version not in (2, 3):
            raise UnsupportedGGUF(
                f"GGUF version {version} (big-endian or unknown): moot reads little-endian GGUF "
                "of version 2 or 3; convert the model again with a recent llama.cpp"
            )
        n_tensors, n_fields = cursor.take("<Q"), cursor.take("<Q")
        fields: dict[str, tuple[Any, list[int]]] = {}
        for _ in range(n_fields):
            key = cursor.string()
            fields[key] = cursor.value(cursor.take("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = cursor.string()
            dims = cursor.take("<I")
            shape = tuple(cursor.take("<Q") for _ in range(dims))
            tensors.append(RawTensor(name, shape, cursor.take("<I"), cursor.take("<Q")))
        alignment = fields.get("general.alignment", (_DEFAULT_ALIGNMENT, []))[0]
        if not isinstance(alignment, int) or alignment < 1:
            raise ValueError(f"general.alignment is {alignment!r}, not a positive whole number")
        start = -(-cursor.at // alignment) * alignment
        return Header(fields, [_at(t, start) for t in tensors])


def _at(tensor: RawTensor, start: int) -> RawTensor:
    return RawTensor(tensor.name, tensor.shape, tensor.kind, start + tensor.offset)
