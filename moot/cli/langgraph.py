"""`moot langgraph`: write the `langgraph.json` that serves society files with LangGraph Server."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from moot.cli._common import console
from moot.errors import ConfigError


def add_command(commands: Any) -> None:
    langgraph = commands.add_parser(
        "langgraph",
        help="write a langgraph.json that serves society files with `langgraph dev`",
    )
    langgraph.add_argument(
        "societies", nargs="*", metavar="SOCIETY_FILE",
        help="graphs named by file stem (none: the default debate, 3 agents x 2 rounds)",
    )  # fmt: skip
    langgraph.add_argument("--model", help="model spec that replaces every agent's model")
    langgraph.add_argument(
        "-o", "--out", default="langgraph.json", metavar="FILE",
        help="where to write it (langgraph.json); the graph module goes beside it",
    )  # fmt: skip
    langgraph.add_argument("--force", action="store_true", help="overwrite the files if they exist")
    langgraph.set_defaults(handler=langgraph_command)


def langgraph_command(args: argparse.Namespace) -> int:
    from moot.integrations.langgraph_server import langgraph_files
    from moot.models import backends

    out = Path(args.out)
    if args.model and args.model != "local" and args.model.partition(":")[0] not in backends():
        raise ConfigError(f"--model: unknown model spec '{args.model}' (see `moot models`)")
    societies: dict[str, Path] = {}
    for path in map(Path, args.societies):
        if path.stem in societies:
            raise ConfigError(
                f"two society files are named '{path.stem}': graph names come from file stems"
            )
        societies[path.stem] = path
    if not out.parent.is_dir():
        raise ConfigError(f"cannot write {out}: the folder {out.parent} does not exist")
    files = langgraph_files(societies, out, model=args.model)
    existing = [str(path) for path in files if path.exists()]
    if existing and not args.force:
        raise ConfigError(f"{existing[0]} exists: pass --force to overwrite it")
    for path, text in files.items():
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot write {path}: {error.strerror or error}") from None
    names = ", ".join(societies) or "debate"
    wrote = ", ".join(map(str, files))
    console.print(f"wrote {wrote} (graphs: {names})", soft_wrap=True, markup=False)
    folder = "" if out.parent == Path(".") else f"cd {out.parent} && "
    config = "" if out.name == "langgraph.json" else f" --config {out.name}"
    console.print(f"serve them: {folder}langgraph dev{config}", soft_wrap=True, markup=False)
    return 0
