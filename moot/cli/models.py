"""`moot models`: the embedded model, the registered model backends, and what llama.cpp runs
local models on here (its build, GPU offload, threads)."""

from __future__ import annotations

import argparse
import multiprocessing
from typing import Any

from rich.table import Table

from moot.cli._common import console
from moot.errors import MootError


def add_command(commands: Any) -> None:
    models = commands.add_parser("models", help="list the embedded model and the model backends")
    models.set_defaults(handler=models_command)


def models_command(args: argparse.Namespace) -> int:
    from moot.models import backends
    from moot.models.embedded import EMBEDDED_FILE, embedded_model_path

    table = Table(title="model specs", show_edge=False)
    table.add_column("spec")
    table.add_column("what")
    try:
        where = str(embedded_model_path())
    except MootError as error:
        where = f"not installed: {error}"
    table.add_row("local", f"embedded {EMBEDDED_FILE} (offline) at {where}")
    for prefix, usage in backends().items():
        spec, _, what = usage.partition("  ")
        table.add_row(spec or prefix, what.strip())
    table.add_row("(object)", "any langchain_core BaseChatModel, from Python")
    # Piped, rich would wrap at 80 columns and cut the model's path: print it whole.
    console.print(table, width=max(console.width, 200) if not console.is_terminal else None)
    console.print("Pass backend options with -o KEY=VALUE, e.g. -o n_ctx=8192 -o n_gpu_layers=-1.")
    console.print()
    for line in llama_lines():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return 0


def llama_lines() -> list[str]:
    """What local models run on: llama.cpp's build and devices, whether layers go to a GPU by
    default, and the threads each engine takes unless told."""
    try:
        import llama_cpp
    except ImportError:
        return ["llama.cpp: not installed (pip install -e '.[local]')"]
    from moot.llamacpp.devices import (
        backend_devices,
        default_gpu_layers,
        gpu_offload_supported,
        usable_cores,
    )

    devices = backend_devices()
    backends = ", ".join(dict.fromkeys(device.backend for device in devices)) or "unknown"
    found = "; ".join(
        f"{d.name} ({d.description}, {d.kind}, {d.memory_gib:.1f} GiB)" for d in devices
    )
    system = llama_cpp.llama_print_system_info().decode(errors="replace").strip(" |")
    if gpu_offload_supported():
        offload = (
            f"GPU offload: on; local models offload every layer unless told "
            f"(n_gpu_layers={default_gpu_layers()}; -o n_gpu_layers=0 keeps them on the CPU)"
        )
    else:
        offload = (
            "GPU offload: off (llama.cpp has no GPU backend, or it found no device); local "
            f"models run every layer on the CPU (n_gpu_layers={default_gpu_layers()}). For a "
            "GPU build see the README, 'Local models on a GPU'"
        )
    cores, counted = usable_cores(), multiprocessing.cpu_count()
    threads = (
        f"threads: {cores} usable cores; simple engine {max(counted // 2, 1)} for generation "
        f"and {counted} for prompts (llama-cpp-python's defaults), batched engine {cores} "
        f"shared among its contexts, fusion {cores} per model; -o n_threads=N sets them"
    )
    return [
        f"llama.cpp (llama-cpp-python {llama_cpp.__version__}): backends {backends}",
        f"devices: {found or 'not listed by this llama.cpp'}",
        f"system info: {system}",
        offload,
        threads,
    ]
