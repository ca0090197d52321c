"""Merging GGUF files tensor by tensor, row chunk by row chunk.

Every input tensor is read (dequantized) a chunk of rows at a time, merged in float32 and
written at once, so peak memory is a few chunks, not models. The output is written under a
temporary name and renamed when complete: a killed merge leaves no half-written file.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from moot.errors import ConfigError
from moot.gguf import GGUFFile, check_compatible, gguf_module
from moot.merge.config import (
    MergeConfig,
    check_value,
    describe_recipe,
    merge_parameters,
    resolve,
    value_at,
)
from moot.merge.methods import TensorPlan, gather_stats, merge_chunk, needs_stats

CHUNK_ELEMENTS = 1 << 20
"""At most this many values per row chunk and input (4 MiB of float32). numpy's temporaries of
this size are reused from the heap; 64 MiB ones are fresh memory each time, faulted in page by
page, which made every array operation 7x slower here."""
KEPT_ELEMENTS = 1 << 24
"""Methods that pass over a tensor twice (SLERP, TIES) read tensors up to this size once and keep
them (64 MiB of float32 per input): every tensor of a 1.5B model but the embedding and output."""
WRITABLE = ("F32", "F16", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")
"""Types gguf-py can write; other input types (K-quants, IQ) are written as Q8_0."""
_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_LAYER = re.compile(r"^blk\.(\d+)\.")


def run(
    config: MergeConfig,
    out: str | Path,
    *,
    folder: str | Path = ".",
    progress: bool = True,
    console: Console | None = None,
) -> Path:
    """Merge as `config` says into the GGUF file `out`; model paths are relative to `folder`."""
    out = Path(out)
    check_output(out)
    check_value(config)
    folder = Path(folder)
    files = {path: GGUFFile(path) for path in config.paths(folder)}
    check_compatible(list(files.values()))
    named = files[resolve(config.base_model, folder)] if config.base_model else None
    base = None if config.merge_method == "linear" else named  # linear: the listed models only
    merged = [
        entry
        for entry in config.models
        if base is None or resolve(entry.model, folder) != base.path
    ]
    if not merged:
        raise ConfigError(
            f"{config.merge_method} merges models into base_model {config.base_model}, but "
            "models lists no other: add the models to merge into it"
        )
    inputs = [files[resolve(entry.model, folder)] for entry in merged]
    first = named or inputs[0]
    part = out.with_name(out.name + ".part")
    writer = gguf_module().GGUFWriter(str(part), arch=first.architecture)
    try:
        with terminate_as_exit():
            sources = ([base] if base else []) + inputs
            _write(config, merged, first, sources, writer, progress, console)
            writer.close()
            os.replace(part, out)
    except BaseException as error:
        with contextlib.suppress(OSError):
            writer.close()
        part.unlink(missing_ok=True)
        if isinstance(error, OSError):  # a full disk, a folder made read-only meanwhile
            raise ConfigError(f"cannot write {out}: {error.strerror or error}") from error
        raise
    return out


def _write(
    config: MergeConfig,
    merged: list[Any],
    first: GGUFFile,
    sources: list[GGUFFile],
    writer: Any,
    progress: bool,
    console: Console | None,
) -> None:
    """Header, metadata (`first`'s) and every tensor merged from `sources` (the base first,
    when the method has one), into `writer`."""
    gguf = gguf_module()
    out_types = {name: _output_type(first, name, config) for name in first.tensors}
    _copy_metadata(first, writer, config, sources, out_types)
    for name in first.tensors:
        shape, dtype, nbytes, raw = _tensor_info(first.shape(name), out_types[name])
        writer.add_tensor_info(name, shape, dtype, nbytes, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    with _bar(len(first.tensors), progress, console) as (bars, task):
        for name in first.tensors:
            plan = _plan(config, merged, first, name)
            data = _Streamed(first, sources, name, plan, out_types[name])
            writer.write_tensor_data(
                cast(np.ndarray, data), tensor_endianess=gguf.GGUFEndian.LITTLE
            )
            bars.update(task, advance=1, description=name[:40])


def check_output(out: Path, example: str = "merged.gguf") -> None:
    """Refuse an output path that cannot be written before any work, not after it."""
    if out.is_dir():
        raise ConfigError(
            f"cannot write {out}: it is a folder; name a file in it, e.g. {out / example}"
        )
    if out.exists() and not out.is_file():
        raise ConfigError(f"cannot write {out}: it exists and is not a regular file")
    if not out.parent.is_dir():
        problem = "is not a folder" if out.parent.exists() else "does not exist"
        raise ConfigError(f"cannot write {out}: the folder {out.parent} {problem}")
    if not os.access(out.parent, os.W_OK):
        raise ConfigError(f"cannot write {out}: the folder {out.parent} is not writable")


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """While writing, let SIGTERM unwind the stack as SystemExit(143) instead of killing the
    process on the spot, so the partial output is removed as it is on Ctrl-C. Only where
    SIGTERM has its default action (a program's own handler is left alone) and only in the
    main thread (the one that receives signals); the default is restored afterwards."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _plan(config: MergeConfig, merged: list[Any], first: GGUFFile, name: str) -> TensorPlan:
    position = _position(name, first.block_count())
    parameters = [merge_parameters(config, entry, position) for entry in merged]
    globals_ = config.parameters
    return TensorPlan(
        method=config.merge_method,
        weights=[weight for weight, _ in parameters],
        densities=[density for _, density in parameters],
        t=value_at(globals_.t, position, 0.5),
        normalize=globals_.normalize is not False,
        scale=globals_.lambda_ if globals_.lambda_ is not None else 1.0,
        seed=config.seed,
        name=name,
    )


def _position(name: str, blocks: int | None) -> float | None:
    """Where a tensor sits in the stack: 0 (first layer) to 1 (last), None outside layers."""
    match = _LAYER.match(name)
    if match is None or not blocks:
        return None
    return int(match.group(1)) / max(1, blocks - 1)


class _Streamed:
    """A merged tensor that `GGUFWriter.write_tensor_data` writes chunk by chunk."""

    def __init__(
        self, first: GGUFFile, sources: list[GGUFFile], name: str, plan: TensorPlan, kind: str
    ) -> None:
        self.first, self.sources, self.name, self.plan, self.kind = first, sources, name, plan, kind
        self.nbytes = _tensor_info(first.shape(name), kind)[2]
        columns = first.shape(name)[-1]
        self.rows_per_chunk = max(1, CHUNK_ELEMENTS // max(1, columns))

    def _chunks(self) -> Iterator[list[np.ndarray]]:
        for start, stop in self.first.chunks(self.name, self.rows_per_chunk):
            yield [source.read(self.name, start, stop) for source in self.sources]

    def tofile(self, handle: Any) -> None:
        gguf = gguf_module()
        passes: Callable[[], Iterable[list[np.ndarray]]] = self._chunks
        elements = int(np.prod(self.first.shape(self.name)))
        if needs_stats(self.plan) and elements <= KEPT_ELEMENTS:  # read it once
            whole = list(self._chunks())
            passes = lambda: whole  # noqa: E731
        stats = gather_stats(self.plan, passes)
        qtype = gguf.GGMLQuantizationType[self.kind]
        written = 0
        for index, arrays in enumerate(passes()):
            merged = merge_chunk(self.plan, stats, arrays, index)
            if len(self.first.shape(self.name)) == 1:
                merged = merged.reshape(-1)
            encoded = np.ascontiguousarray(gguf.quants.quantize(merged, qtype))
            encoded.tofile(handle)
            written += encoded.nbytes
        assert written == self.nbytes, (self.name, written, self.nbytes)


def _output_type(first: GGUFFile, name: str, config: MergeConfig) -> str:
    """What a tensor is written as: float32 for 1-D tensors; else the recipe's dtype, or the
    input type where gguf-py can write it, else Q8_0 (F16 when rows do not fit its blocks)."""
    shape = first.shape(name)
    if len(shape) < 2:
        return "F32"
    wanted = config.dtype
    kind = _DTYPES.get(wanted, wanted.upper()) if wanted else first.tensors[name].kind.name
    if kind not in WRITABLE:
        kind = "Q8_0"
    block, _ = gguf_module().GGML_QUANT_SIZES[gguf_module().GGMLQuantizationType[kind]]
    return kind if shape[-1] % block == 0 else "F16"


def _tensor_info(shape: tuple[int, ...], kind: str) -> tuple[tuple[int, ...], Any, int, Any]:
    """(shape, numpy dtype, bytes, raw type) for GGUFWriter.add_tensor_info."""
    gguf = gguf_module()
    qtype = gguf.GGMLQuantizationType[kind]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    elements = int(np.prod(shape))
    nbytes = elements // block * size
    if kind == "F32":
        return shape, np.float32, nbytes, None
    if kind == "F16":
        return shape, np.float16, nbytes, None
    byte_shape = (*shape[:-1], shape[-1] // block * size)
    return byte_shape, np.uint8, nbytes, qtype


_SKIPPED = ("GGUF.", "general.architecture", "general.name", "general.file_type")


def _copy_metadata(
    first: GGUFFile,
    writer: Any,
    config: MergeConfig,
    sources: list[GGUFFile],
    out_types: dict[str, str],
) -> None:
    """All metadata of the base (or first) model, a new name and file type, and the recipe."""
    for key, (value, types) in first.fields.items():
        if key.startswith(_SKIPPED):
            continue
        sub_type = types[-1] if len(types) > 1 else None
        writer.add_key_value(key, value, types[0], sub_type=sub_type)
    names = ", ".join(source.path.stem for source in sources)
    writer.add_name(config.name or f"{config.merge_method} merge of {names}")
    writer.add_file_type(_file_type(out_types))
    writer.add_string("moot.merge.recipe", describe_recipe(config))


def _file_type(out_types: dict[str, str]) -> int:
    """general.file_type: the type most 2-D tensors have."""
    gguf = gguf_module()
    kinds = [kind for kind in out_types.values() if kind != "F32"] or ["F32"]
    common = max(set(kinds), key=kinds.count)
    name = "ALL_F32" if common == "F32" else f"MOSTLY_{common}"
    return int(gguf.LlamaFileType[name].value)


class _bar:
    """A rich progress bar over the tensors (a no-op when disabled)."""

    def __init__(self, total: int, enabled: bool, console: Console | None) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<40}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            disable=not enabled,
        )
        self.task = self.progress.add_task("tensors", total=total)

    def __enter__(self) -> tuple[Progress, Any]:
        self.progress.__enter__()
        return self.progress, self.task

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)  # type: ignore[arg-type]


def differing_tensors(first: str | Path, second: str | Path) -> Iterable[str]:
    """Names of tensors whose stored bytes differ between two GGUF files (for checks)."""
    a, b = GGUFFile(first), GGUFFile(second)
    for name, tensor in a.tensors.items():
        other = b.tensors.get(name)
        if (
            other is None
            or other.kind != tensor.kind
            or not np.array_equal(a.raw(name), b.raw(name))
        ):
            yield name
