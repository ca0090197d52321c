"""`moot show`: a run or a benchmark as Markdown, one HTML page, or JSON."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from moot.errors import ConfigError


def add_command(commands: Any) -> None:
    show = commands.add_parser(
        "show", help="a run (--json file or checkpoint) or a bench folder as md, html or json"
    )
    show.add_argument("record", nargs="?", help="a `moot debate --json` file or a bench folder")
    show.add_argument(
        "--checkpoint", metavar="FILE.sqlite|postgresql://...", help="show a checkpointed run"
    )
    show.add_argument("--thread", metavar="ID", help="the checkpointed run's thread")
    show.add_argument("--format", choices=["md", "html", "json"], default="md")
    show.add_argument("-o", "--out", metavar="FILE", help="write to FILE (default: print it)")
    show.set_defaults(handler=show_command)


def show_command(args: argparse.Namespace) -> int:
    from moot.viewer import load_record, render

    if args.record and args.checkpoint:
        raise ConfigError("show either a record or --checkpoint FILE --thread ID, not both")
    record = load_record(args.record, checkpoint=args.checkpoint, thread=args.thread)
    text = render(record, args.format)
    if args.out:
        write_page(args.out, text)
    else:
        print(text, end="")
    return 0


def write_page(out: str | Path, text: str) -> Path:
    """Write `text` to `out`, or say plainly why it cannot be written."""
    path = Path(out)
    if not path.parent.is_dir():
        raise ConfigError(f"cannot write {path}: the folder {path.parent} does not exist")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot write {path}: {error.strerror or error}") from None
    return path
