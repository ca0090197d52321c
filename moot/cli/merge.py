"""`moot merge`: merge GGUF models as a mergekit-style recipe says."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from moot.cli._common import console, errors
from moot.config import read_text


def add_command(commands: Any) -> None:
    merge = commands.add_parser("merge", help="merge GGUF models (linear, slerp, ties, dare...)")
    merge.add_argument("config", help="a merge recipe (mergekit's YAML with GGUF paths)")
    merge.add_argument("-o", "--out", required=True, metavar="MERGED.gguf", help="output file")
    merge.add_argument(
        "--quantize", metavar="TYPE", help="quantize the result once with llama.cpp (Q4_K_M...)"
    )
    merge.add_argument(
        "--eval", metavar="TEXT_FILE", help="print each model's loss per token on this text"
    )
    merge.set_defaults(handler=merge_command)


def merge_command(args: argparse.Namespace) -> int:
    import moot.merge
    from moot.merge.config import load_config
    from moot.merge.writer import check_output, terminate_as_exit

    out = Path(args.out)
    check_output(out)
    folder = Path(args.config).parent
    config = load_config(args.config)
    probe = read_text(Path(args.eval), "probe text") if args.eval else None
    started = time.perf_counter()
    if args.quantize:
        # Merge to float16, then quantize once: llama.cpp refuses to requantize quantized
        # tensors, and quantizing twice would compound the error.
        intermediate = out.with_name(out.name + ".f16.part")
        try:
            with terminate_as_exit():
                wide = config.model_copy(update={"dtype": "float16"})
                moot.merge.run(wide, intermediate, folder=folder, console=errors)
                moot.merge.quantize(intermediate, out, args.quantize)
        finally:
            intermediate.unlink(missing_ok=True)
    else:
        moot.merge.run(config, out, folder=folder, console=errors)
    console.print(f"merged into {out} in {time.perf_counter() - started:.1f} s", soft_wrap=True)
    if probe is not None:
        folder = Path(args.config).parent
        table = Table("model", "loss per token", title=f"loss on {Path(args.eval).name}")
        for path in [*config.paths(folder), out]:
            table.add_row(path.name, f"{moot.merge.token_loss(path, probe):.3f}")
        console.print(table)
    return 0
