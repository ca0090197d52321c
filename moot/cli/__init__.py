"""The `moot` command: a module per command (debate/run/resume, serve, bench, models), the
terminal display in `display`, what they share in `_common`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from moot.cli import bench, debate, fusion, langgraph, mcp, merge, models, serve, show
from moot.cli._common import Parser, fail
from moot.config import describe
from moot.errors import MootError


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="moot", description="Several LLMs answer a question together.")
    parser.add_argument("--version", action="version", version=f"moot {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    debate.add_commands(commands)
    serve.add_command(commands)
    mcp.add_command(commands)
    langgraph.add_command(commands)
    bench.add_command(commands)
    merge.add_command(commands)
    fusion.add_command(commands)
    models.add_command(commands)
    show.add_command(commands)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("moot")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run `moot ARGS`; return the exit status (2: bad input, 1: every model call failed,
    130: interrupted)."""
    args = build_parser().parse_args(argv)
    previous = _stop_models_on_ctrl_c()
    try:
        status: int = args.handler(args)
        return status
    except MootError as error:
        return fail(str(error))
    except ValidationError as error:
        return fail(describe(error))
    except RecursionError:  # a backstop: readers of user files refuse deep nesting themselves
        return fail("the input is nested too deeply to read: flatten it")
    except MemoryError:
        return fail("out of memory: the input or the run is too large for this machine", 1)
    except KeyboardInterrupt:
        _interrupted.set()
        return fail("interrupted", status=130)
    except BrokenPipeError:  # the reader went away (`moot ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def entry() -> None:
    """The `moot` executable. After Ctrl-C it exits at once: model calls still running in
    worker threads (a model that ignores cancelling) are not waited for."""
    status = main()
    if status == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


_interrupted = threading.Event()
"""Set once `main` has reported an interrupt."""


def _stop_models_on_ctrl_c() -> Any:
    """Make Ctrl-C take effect within a moment, not when the running model calls end: llama.cpp
    generations stop at their next token, and if a call that cannot be stopped (a hung server,
    a stuck thread) still holds the run up after a second, the process exits anyway (finished
    turns are already checkpointed). Returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def give_up() -> None:
        if not _interrupted.is_set():
            fail("interrupted", status=130)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)

    def interrupt(signum: int, frame: Any) -> None:
        llama = sys.modules.get("moot.models.llama")
        if llama is not None:
            llama.cancel_all()
        watchdog = threading.Timer(1.0, give_up)
        watchdog.daemon = True
        watchdog.start()
        raise KeyboardInterrupt

    return signal.signal(signal.SIGINT, interrupt)
