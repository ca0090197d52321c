"""Reading GGUF files with llama.cpp's gguf-py: metadata, tensors by row chunks, and the checks
that several files can be combined (one architecture, one tokenizer, the same tensors). Merging
and token-level fusion both start here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moot.errors import ConfigError, MissingExtraError
from moot.gguf._header import Header, RawTensor, UnsupportedGGUF, read_header

if TYPE_CHECKING:
    import numpy as np

TOKENIZER_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
)
"""What must agree for two models to read and write the same tokens."""


def gguf_module() -> Any:
    try:
        import gguf
    except ImportError as error:
        raise MissingExtraError("gguf", "merge", "reading GGUF files") from error
    return gguf


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lies in its file and how it is stored."""

    name: str
    kind: Any
    """Its gguf.GGMLQuantizationType."""
    shape: tuple[int, ...]
    """In numpy order (rows first)."""
    offset: int
    """Byte offset of its data in the file."""
    nbytes: int


class GGUFFile:
    """One GGUF file: its metadata as Python values and where its tensors are. The header is
    read by `_header` (gguf-py's reader takes 16 s on a large vocabulary); tensor data is read
    on request, a chunk of rows at a time, with plain file reads (a memory map would keep every
    page read resident)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        size, header = _read(self.path)
        gguf = gguf_module()
        try:
            self.fields: dict[str, tuple[Any, list[Any]]] = {
                key: (value, [gguf.GGUFValueType(kind) for kind in kinds])
                for key, (value, kinds) in header.fields.items()
            }
            """Metadata: key -> (value, gguf-py value types)."""
            self.tensors: dict[str, TensorInfo] = {}
            for raw in header.tensors:
                self.tensors[raw.name] = _tensor(gguf, raw)
        except ValueError as error:  # an unknown value or tensor type
            raise _corrupt(self.path, str(error)) from error
        for tensor in self.tensors.values():
            if tensor.offset + tensor.nbytes > size:
                raise _corrupt(
                    self.path,
                    f"tensor {tensor.name} ends at byte {tensor.offset + tensor.nbytes:,} but "
                    f"the file has {size:,} bytes",
                )

    def value(self, key: str) -> Any:
        """The metadata value under `key` (None when absent)."""
        entry = self.fields.get(key)
        return None if entry is None else entry[0]

    @property
    def architecture(self) -> str:
        return str(self.value("general.architecture"))

    def block_count(self) -> int | None:
        count = self.value(f"{self.architecture}.block_count")
        return int(count) if count is not None else None

    def shape(self, name: str) -> tuple[int, ...]:
        """The tensor's shape in numpy order (rows first)."""
        return self.tensors[name].shape

    def rows(self, name: str) -> int:
        shape = self.shape(name)
        return shape[0] if len(shape) > 1 else 1

    def raw(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The stored bytes of rows [start, stop) (a 1-D tensor whole)."""
        import numpy as np

        tensor = self.tensors[name]
        rows = self.rows(name)
        stop = rows if stop is None else min(stop, rows)
        row_bytes = tensor.nbytes // rows
        try:
            with self.path.open("rb") as handle:
                handle.seek(tensor.offset + start * row_bytes)
                data = handle.read((stop - start) * row_bytes)
        except OSError as error:
            raise ConfigError(f"cannot read {self.path}: {error.strerror or error}") from error
        if len(data) != (stop - start) * row_bytes:  # cut short since it was opened
            raise _corrupt(self.path, f"tensor {name} ends early")
        return np.frombuffer(data, dtype=np.uint8).reshape(stop - start, row_bytes)

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of the tensor, dequantized to float32 (a 1-D tensor whole)."""
        import numpy as np

        gguf = gguf_module()
        tensor = self.tensors[name]
        kind = tensor.kind
        raw = self.raw(name, start, stop)
        if kind in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            values = raw.view(np.float32 if kind == gguf.GGMLQuantizationType.F32 else np.float16)
        else:
            values = gguf.quants.dequantize(raw, kind)
        values = np.asarray(values, dtype=np.float32)
        shape = self.shape(name)
        return values.reshape(shape) if len(shape) == 1 else values.reshape(-1, shape[-1])

    def chunks(self, name: str, rows_per_chunk: int) -> Iterator[tuple[int, int]]:
        """(start, stop) row ranges covering the tensor."""
        rows = self.rows(name)
        for start in range(0, rows, rows_per_chunk):
            yield start, min(rows, start + rows_per_chunk)


def _read(path: Path) -> tuple[int, Header]:
    """The file's size and header, or one ConfigError saying why they cannot be had."""
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a GGUF file: {_inside(path)}")
    if not path.exists():
        raise ConfigError(f"GGUF file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"{path} is not a regular file, so not a GGUF file")
    try:
        with path.open("rb") as handle:
            magic, size = handle.read(4), os.fstat(handle.fileno()).st_size
        header = read_header(path) if magic == b"GGUF" else None
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from error
    except UnsupportedGGUF as error:
        raise ConfigError(f"{path}: {error}") from error
    except ValueError as error:
        raise _corrupt(path, str(error)) from error
    if header is None:
        raise ConfigError(
            f"{path} is not a GGUF file (convert other formats with llama.cpp's "
            "convert_hf_to_gguf.py)"
        )
    return size, header


def _tensor(gguf: Any, raw: RawTensor) -> TensorInfo:
    """A tensor table entry, refused (ValueError) where no GGUF writer would have made it."""
    kind = gguf.GGMLQuantizationType(raw.kind)
    block, block_bytes = gguf.GGML_QUANT_SIZES[kind]
    if not raw.shape or min(raw.shape) < 1 or raw.shape[0] % block:
        raise ValueError(f"tensor {raw.name} has the impossible shape {list(raw.shape)}")
    elements = 1
    for size in raw.shape:
        elements *= size
    return TensorInfo(
        name=raw.name,
        kind=kind,
        shape=tuple(reversed(raw.shape)),
        offset=raw.offset,
        nbytes=elements // block * block_bytes,
    )


def _corrupt(path: Path, detail: str) -> ConfigError:
    return ConfigError(f"{path} is truncated or corrupt ({detail}): download or copy it again")


def _inside(folder: Path) -> str:
    """What to name instead of a folder: the GGUF files in it, if any."""
    try:
        names = sorted(path.name for path in folder.glob("*.gguf"))
    except OSError:
        names = []
    if not names:
        return "name the .gguf file itself"
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"name one of the .gguf files in it ({shown})"


def check_compatible(files: list[GGUFFile], what: str = "merged") -> None:
    """Raise one ConfigError naming the first difference that keeps `files` from being
    combined: architecture, tokenizer (tokens, pre-tokenizer, special tokens), tensor names,
    tensor shapes."""
    first = files[0]
    for other in files[1:]:
        pair = f"{first.path} and {other.path}"
        if first.architecture != other.architecture:
            raise ConfigError(
                f"cannot be {what}: {pair} differ in architecture "
                f"({first.architecture} vs {other.architecture})"
            )
        check_same_tokenizer([first, other], what)
        missing = sorted(set(first.tensors) ^ set(other.tensors))
        if missing:
            where = first.path if missing[0] in first.tensors else other.path
            raise ConfigError(
                f"cannot be {what}: tensor {missing[0]} is only in {where} ({pair} hold "
                "different tensors)"
            )
        for name in first.tensors:
            if first.shape(name) != other.shape(name):
                raise ConfigError(
                    f"cannot be {what}: tensor {name} has shape {first.shape(name)} in "
                    f"{first.path} but {other.shape(name)} in {other.path}"
                )


def check_same_tokenizer(files: list[GGUFFile], what: str) -> None:
    """Raise one ConfigError naming the first tokenizer difference (token list, token types,
    pre-tokenizer, special tokens) between the first file and any other."""
    first = files[0]
    for other in files[1:]:
        for key in TOKENIZER_KEYS:
            mine, theirs = first.value(key), other.value(key)
            if mine != theirs:
                detail = _first_difference(mine, theirs)
                raise ConfigError(
                    f"cannot be {what}: {first.path} and {other.path} have different tokenizers "
                    f"({key}{detail}); models must share one vocabulary (mapping between "
                    "different vocabularies, as DeePEn or UniTE do, is not supported)"
                )


def _first_difference(mine: Any, theirs: Any) -> str:
    if isinstance(mine, list) and isinstance(theirs, list):
        if len(mine) != len(theirs):
            return f": {len(mine)} vs {len(theirs)} entries"
        index = next(i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b)
        return f": entry {index} is {mine[index]!r} vs {theirs[index]!r}"
    return f": {mine!r} vs {theirs!r}"
