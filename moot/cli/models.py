"""`moot models`: the embedded model and the registered model backends."""

from __future__ import annotations

import argparse
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
    console.print(table)
    console.print("Pass backend options with -o KEY=VALUE, e.g. -o n_ctx=8192 -o n_gpu_layers=-1.")
    return 0
