"""`moot serve`: society files behind an OpenAI-compatible API."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from moot.cli._common import add_model_options, count, fail, port, positive


def add_command(commands: Any) -> None:
    serve = commands.add_parser("serve", help="serve society files as an OpenAI-compatible API")
    serve.add_argument("societies", nargs="+", metavar="SOCIETY_FILE", help="named by file stem")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=port, default=8000, help="port (8000)")
    serve.add_argument("--model", help="model spec that replaces every agent's model")
    add_model_options(serve)
    serve.add_argument(
        "--concurrent-runs", type=positive, default=4,
        help="runs at once; later requests wait their turn, first come first served (4)",
    )  # fmt: skip
    serve.add_argument(
        "--queue", type=count, default=64,
        help="requests that may wait for a run; beyond them the server answers 429 (64)",
    )  # fmt: skip
    serve.add_argument(
        "--max-body", type=positive, default=1 << 20, metavar="BYTES",
        help="largest request body; a longer one is refused with 413 (1048576: 1 MiB)",
    )  # fmt: skip
    serve.add_argument(
        "--kept-runs", type=count, default=256, metavar="N",
        help="finished runs whose pages (/runs/ID) are kept, the oldest dropped first (256)",
    )  # fmt: skip
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    from moot.integrations.serve import serve
    from moot.models import load_model
    from moot.society_file import load_society

    if args.model_option and not args.model:
        return fail("-o sets options of the --model that replaces every agent's: add --model")
    model = load_model(args.model, **dict(args.model_option)) if args.model else None
    societies = {}
    for path in args.societies:
        name = Path(path).stem
        if name in societies:
            return fail(f"two society files are named '{name}': served names come from file stems")
        societies[name] = load_society(path, model=model)
    serve(
        societies,
        args.host,
        args.port,
        concurrent_runs=args.concurrent_runs,
        queue=args.queue,
        max_body=args.max_body,
        kept_runs=args.kept_runs,
    )
    return 0
