"""What every command shares: the consoles, one-line errors, and argument types."""

from __future__ import annotations

import argparse
import json
import math
import pkgutil
from collections.abc import Callable
from typing import Any, NoReturn, get_args

from rich.console import Console
from rich.text import Text

from moot.agents import ToolChoice
from moot.aggregate.extract import EXTRACT_KINDS
from moot.errors import MootError

console = Console()
"""Where results go (stdout)."""
errors = Console(stderr=True)
"""Where errors and progress go (stderr)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (exit status 2), not the usage block."""

    def error(self, message: str) -> NoReturn:
        print_error(f"{message} (see `{self.prog} --help`)")
        raise SystemExit(2)


def print_error(message: str) -> None:
    """One line on stderr; the message is plain text (not rich markup), never wrapped."""
    errors.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


def fail(message: str, status: int = 2) -> int:
    print_error(message)
    return status


def _parsed(value: str, parse: Callable[[str], Any], expected: str) -> Any:
    try:
        return parse(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got '{value}'") from None


def positive(value: str) -> int:
    number: int = _parsed(value, int, "a whole number")
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def at_most(value: str, limit: int) -> int:
    """A whole number from 1 to `limit` (checked before anything is built from it)."""
    number = positive(value)
    if number > limit:
        raise argparse.ArgumentTypeError(f"must be at most {limit:,}, got {number:,}")
    return number


def count(value: str) -> int:
    """A whole number, 0 or more."""
    number: int = _parsed(value, int, "a whole number")
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {number}")
    return number


def seconds(value: str) -> float:
    number: float = _parsed(value, float, "seconds")
    if not math.isfinite(number) or number <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds above 0, got {value} (leave it out for no limit)"
        )
    return number


def finite(value: str) -> float:
    """A number that is not inf or nan (those pass range checks, then fail every call)."""
    number: float = _parsed(value, float, "a number")
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value}")
    return number


def port(value: str) -> int:
    number = positive(value)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {number}")
    return number


def option(value: str) -> tuple[str, Any]:
    """KEY=VALUE, the value read as JSON when it is JSON (numbers, booleans), else text."""
    key, equals, raw = value.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{value}'")
    try:
        parsed: Any = json.loads(raw)
    except json.JSONDecodeError:
        parsed = raw
    except RecursionError:
        raise argparse.ArgumentTypeError(f"{key}: the value is nested too deeply") from None
    return key, parsed


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--model-option", type=option, action="append", default=[], metavar="KEY=VALUE",
        help="option for the model backend, e.g. -o n_ctx=8192 -o n_gpu_layers=-1",
    )  # fmt: skip


def add_cache_option(parser: Any) -> None:
    """--cache: the file of model calls a run may be answered from (`moot.CallCache`)."""
    parser.add_argument(
        "--cache",
        metavar="FILE.sqlite",
        help="answer identical seeded or temperature-0 model calls from this file (an earlier "
        "run's)",
    )


def add_tool_options(parser: Any, agents: str = "every agent") -> None:
    """--tools and --tool-choice, for the commands that build agents."""
    parser.add_argument(
        "--tools",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=[],
        metavar="NAME[,NAME]",
        help=f"tools {agents} may call: calculator, MODULE:NAME, or an MCP server's tools: "
        "'mcp:COMMAND ARG...' (stdio) or mcp:URL (streamable HTTP)",
    )
    parser.add_argument(
        "--tool-choice",
        choices=get_args(ToolChoice),
        default="auto",
        help="first: each turn starts with a tool call (small local models need it); "
        "reason-first: the same, after reasoning in text",
    )


def extract_choices() -> list[str]:
    return list(EXTRACT_KINDS)


def imported(spec: str, option: str) -> Any:
    """MODULE:FUNCTION, imported; `option` names the flag in errors."""
    try:
        found = pkgutil.resolve_name(spec)
    except (ImportError, AttributeError, ValueError) as error:
        raise MootError(
            f"{option} {spec}: cannot import it ({error}); use MODULE:FUNCTION"
        ) from None
    if not callable(found):
        raise MootError(f"{option} {spec}: not a function")
    return found
