"""`moot mcp`: serve a society as an MCP server (stdio, or streamable HTTP with --http PORT).

The society is a society file's, or without one `moot debate`'s, built from the same flags by
the same spec-building (`moot.cli.run.command_society`). It is built, its models loaded, before
anything is served: a bad file or model spec is one `error:` line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, get_args

from moot.cli._common import (
    add_model_options,
    add_tool_options,
    errors,
    extract_choices,
    fail,
    finite,
    port,
    positive,
    seconds,
)
from moot.cli._common import count as whole
from moot.cli.run import add_society_flags, command_society
from moot.graphs.debate import PromptSet, answer_format_of

DEBATE_DEFAULTS = {"agents": 3, "rounds": 2, "prompts": "moot"}
"""`moot debate`'s defaults for the flags that shape its society (None here: given or not)."""
DEBATE_ONLY = (
    "agents", "rounds", "model_option", "extract", "temperature", "max_tokens", "seed",
    "max_concurrency", "consensus", "prompts", "tools", "tool_choice", "programs", "update",
    "anonymous", "peers_shown", "decide", "stop_early",
)  # fmt: skip
"""Flags that shape the default debate; a society file sets these itself."""


def add_command(commands: Any) -> None:
    mcp = commands.add_parser(
        "mcp",
        help="serve a society as an MCP server: a tool `ask` that answers questions",
        description="Serve a society over the Model Context Protocol: stdio by default (for a "
        "client that starts `moot mcp`), streamable HTTP at http://HOST:PORT/mcp with --http.",
    )
    mcp.add_argument(
        "society",
        nargs="?",
        metavar="SOCIETY_FILE",
        help="a society file (YAML); without one, `moot debate`'s society from the flags below",
    )
    mcp.add_argument(
        "--model",
        help="model spec (local, llama:PATH, openai:MODEL, test, ...): every agent's model "
        "(default without SOCIETY_FILE: local)",
    )
    mcp.add_argument("--http", type=port, metavar="PORT", help="serve streamable HTTP on PORT")
    mcp.add_argument("--host", help="address to listen on with --http (127.0.0.1)")
    mcp.add_argument(
        "--concurrent-runs", type=positive, default=4, help="runs at once; others wait (4)"
    )
    mcp.add_argument("--timeout", type=seconds, help="seconds one model call may take (none)")
    mcp.add_argument(
        "--retries", type=whole, help="repeats of a call that failed for a passing reason (2)"
    )
    debate = mcp.add_argument_group(
        "the text debate (without SOCIETY_FILE), as `moot debate` builds it for a question "
        "whose answer is neither a number nor a choice"
    )
    debate.add_argument("--agents", type=positive, help="number of agents (3)")
    debate.add_argument("--rounds", type=positive, help="rounds, the first included (2)")
    add_model_options(debate)  # type: ignore[arg-type]  # a group takes arguments alike
    debate.add_argument(
        "--extract", choices=extract_choices(), help="answer format (default: as the prompts ask)"
    )
    debate.add_argument("--temperature", type=finite, help="sampling temperature")
    debate.add_argument("--max-tokens", type=positive, help="most tokens per reply")
    debate.add_argument("--seed", type=whole, help="seed agent N with SEED+N-1")
    debate.add_argument("--max-concurrency", type=positive, help="most calls in flight at once")
    debate.add_argument("--consensus", type=finite, help="stop once this share of agents agree")
    debate.add_argument("--prompts", choices=get_args(PromptSet), help="whose prompts (moot)")
    add_tool_options(debate, "the text agents")
    add_society_flags(debate)
    # (None: not given, so that a society file can refuse them)
    mcp.set_defaults(handler=mcp_command, model_option=None, tools=None, tool_choice=None)


def mcp_command(args: argparse.Namespace) -> int:
    if args.host is not None and args.http is None:
        return fail("--host is for --http PORT (stdio has no address)")
    if args.society is not None:
        given = [name for name in DEBATE_ONLY if getattr(args, name) is not None]
        if given:
            flag = "-o" if given[0] == "model_option" else "--" + given[0].replace("_", "-")
            return fail(
                f"{flag} shapes the default debate: with a society file, set it in the file"
            )
        settings: dict[str, Any] = {"command": "run", "society": args.society}
        name = Path(args.society).stem
    else:
        settings = {"command": "debate", "model": "local", "model_option": [], **DEBATE_DEFAULTS}
        settings.update(
            {key: getattr(args, key) for key in DEBATE_ONLY if getattr(args, key) is not None}
        )
        settings["extract"] = settings.get("extract") or answer_format_of(settings["prompts"])
        if args.stop_early and args.rounds is None:  # (it answers once)
            settings["rounds"] = 1
        name = "debate"
    settings.update(
        {
            key: getattr(args, key)
            for key in ("model", "timeout", "retries")
            if getattr(args, key) is not None
        }
    )
    society = command_society(settings)[1]
    _one_line_logs()

    from moot.integrations.mcp_server import create_server, serve_http, serve_stdio

    def log(line: str) -> None:
        errors.print(line, markup=False, highlight=False, soft_wrap=True)

    host = args.host or "127.0.0.1"
    port_number = args.http or 8000
    server = create_server(
        society,
        name=f"moot-{name}",
        host=host,
        port=port_number,
        concurrent_runs=args.concurrent_runs,
        log=log,
    )
    if args.http is None:
        serve_stdio(server)
    else:
        serve_http(server, host, port_number, announce=lambda line: print(line, flush=True))
    return 0


class _OneLine(logging.Formatter):
    """A log record as one line: the exception's type and message, not its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message += f" ({type(error).__name__}{': ' if str(error) else ''}{error})"
        return f"{record.name} {record.levelname.lower()}: {message}"


def _client_gone(record: logging.LogRecord) -> bool:
    """False for the SDK's report of a stream closed under it (a client that hung up, its
    session ended): the server's business as usual, which it logs as an error."""
    error = record.exc_info[1] if record.exc_info else None
    return type(error).__name__ not in ("ClosedResourceError", "BrokenResourceError")


def _one_line_logs() -> None:
    """Warnings and errors of the SDK on stderr, a line each (set before FastMCP sets up its
    own logging, which then leaves it: it would print whole tracebacks)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    handler.addFilter(_client_gone)
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
