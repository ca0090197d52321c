"""A ready GPU check (issue 43): tokens/s of local models with every layer on the GPU against
the same with every layer on the CPU (n_gpu_layers=0), on one machine in one run.

Rows: one agent (simple engine, and batched engine); a round of 3 and of 8 agents on the batched
engine (`load_model("llama:PATH", engine="batched", sequences=8)`), each agent generating its
own reply at once, as a debate round does (the gain of batching is the round's tokens/s over
one agent's on the same device); token fusion of the model with itself (or `--fuse-with`) by
`strategy=prob`. Drafting from peers (speculative decoding from the other agents' replies,
issue 39) is not built in moot yet: its row says so.

Where llama.cpp cannot offload (a CPU build, or a GPU build that found no device) it says so in
one line and exits 0; `--cpu-only` measures the CPU column alone there. It prints a Markdown
section; `--append` adds it to BENCHMARKS.md. On the embedded 135M model the CPU column took
under two minutes on two cores, and the GPU column should take less; it keeps four copies of
the model per device (simple, batched, the two fused), so mind memory with `--model` of
several GB.

The CPU column on a GPU build: llama.cpp may still hand large batches (CUDA: 32 rows or more,
so long prompts) to the GPU (its op offload); generation, a few rows per step, stays on the
CPU.

    python benchmarks/gpu_check.py [--model PATH] [--tokens 128] [--repeats 3] [--append]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
TOPICS = ["a lighthouse", "a river", "a mountain", "a city", "a forest", "a ship", "a desert"]
DEVICES = {"GPU": -1, "CPU": 0}
"""Columns: their n_gpu_layers."""
ROWS = [
    ("one agent, simple engine", "simple", 1),
    ("one agent, batched engine", "batched", 1),
    ("round of 3 agents, batched engine", "batched", 3),
    ("round of 8 agents, batched engine", "batched", 8),
    ("drafting from peers (issue 39)", None, 0),
    ("token fusion, prob, model + model", "fused", 1),
]
"""(label, which model, agents at once); None: not built yet."""


def prompt(agent: int, take: int) -> list[Any]:
    """A prompt of its own per agent and take, so no cache holds any of it."""
    return [
        SystemMessage(f"Take {take}. You are storyteller number {agent}."),
        HumanMessage(f"Write a very long story about {TOPICS[agent % len(TOPICS)]}."),
    ]


def tokens_per_s(model: Any, agents: int, tokens: int, take: int) -> float:
    """Every agent's generated tokens over the wall time of them all, sent at once."""
    started = time.perf_counter()
    with ThreadPoolExecutor(agents) as pool:
        replies = list(
            pool.map(
                lambda agent: model.invoke(prompt(agent, take), max_tokens=tokens, temperature=0),
                range(agents),
            )
        )
    output = sum(reply.usage_metadata["output_tokens"] for reply in replies)
    return output / (time.perf_counter() - started)


def load(model: Path, partner: Path, layers: int) -> dict[str, Any]:
    """The three models of one column, loaded and warm."""
    import moot
    from moot.errors import MootError
    from moot.fusion import FusedChatModel

    common = {"n_gpu_layers": layers, "n_ctx": 1024}
    models: dict[str, Any] = {
        "simple": moot.load_model(f"llama:{model}", engine="simple", **common),
        "batched": moot.load_model(f"llama:{model}", engine="batched", sequences=8, **common),
    }
    try:
        models["fused"] = FusedChatModel(
            models=[str(model), str(partner)], strategy="prob", **common
        )
    except MootError as error:  # the fusion extra (gguf) missing, tokenizers differing
        models["fused"] = error
    for loaded in models.values():
        if not isinstance(loaded, MootError):
            loaded.invoke("Hi.", max_tokens=2)
    return models


def describe_build() -> tuple[str, str]:
    """The GPU's name (or "no GPU") and a line naming the build, devices and threads."""
    import llama_cpp

    from moot.llamacpp import backend_devices, usable_cores

    devices = backend_devices()
    gpus = [d for d in devices if d.kind in ("GPU", "IGPU")]
    gpu = ", ".join(d.description for d in gpus) or "no GPU"
    backends = ", ".join(dict.fromkeys(d.backend for d in devices)) or "unknown"
    named = "; ".join(f"{d.name} {d.description} ({d.memory_gib:.0f} GiB)" for d in devices)
    system = llama_cpp.llama_print_system_info().decode(errors="replace").strip(" |")
    return gpu, (
        f"llama-cpp-python {llama_cpp.__version__}, backends {backends}; devices: {named}; "
        f"{usable_cores()} usable CPU cores; system info `{system}`"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a GGUF (default: the embedded model)")
    parser.add_argument("--fuse-with", type=Path, help="fusion's second model (default: --model)")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per agent")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-only", action="store_true", help="measure the CPU column alone")
    parser.add_argument("--append", action="store_true", help="append the section to BENCHMARKS.md")
    args = parser.parse_args()
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("gpu_check: llama-cpp-python is not installed (pip install -e '.[fusion]')")
        return 1
    from moot.llamacpp import backend_devices, gpu_offload_supported

    if not gpu_offload_supported() and not args.cpu_only:
        backends = ", ".join(dict.fromkeys(d.backend for d in backend_devices())) or "unknown"
        print(
            f"gpu_check: no GPU offload here (llama.cpp backends: {backends}; "
            "llama_supports_gpu_offload() is false), nothing to compare: install a GPU build "
            "(README, 'Local models on a GPU') or pass --cpu-only"
        )
        return 0
    if args.model is None:
        from moot.models.embedded import embedded_model_path

        args.model = Path(embedded_model_path())
    partner = args.fuse_with or args.model
    columns = {"CPU": 0} if args.cpu_only else DEVICES
    models = {column: load(args.model, partner, layers) for column, layers in columns.items()}
    rates: dict[tuple[str, str], list[float]] = {}
    for take in range(args.repeats):
        for label, which, agents in ROWS:
            for column in columns:
                model = models[column].get(which) if which else None
                if model is not None and not isinstance(model, Exception):
                    rate = tokens_per_s(model, agents, args.tokens, take)
                    rates.setdefault((label, column), []).append(rate)
    gpu, build = describe_build()
    text = section(args, partner, gpu, build, columns, models, rates)
    print(text)
    if args.append:
        with BENCHMARKS.open("a", encoding="utf-8") as out:
            out.write("\n" + text + "\n")
    return 0


def section(
    args: argparse.Namespace,
    partner: Path,
    gpu: str,
    build: str,
    columns: dict[str, int],
    models: dict[str, dict[str, Any]],
    rates: dict[tuple[str, str], list[float]],
) -> str:
    """The Markdown section for BENCHMARKS.md."""
    fused = args.model.name if partner == args.model else f"{args.model.name} + {partner.name}"
    lines = [
        f"### GPU check run: {'CPU column only' if args.cpu_only else gpu} ({date.today()})",
        "",
        f"`python benchmarks/gpu_check.py{' --cpu-only' if args.cpu_only else ''} "
        f"--tokens {args.tokens} --repeats {args.repeats}` on {args.model.name} (fusion: "
        f"{fused}). {build}. Greedy, {args.tokens} new tokens per agent, median of "
        f"{args.repeats}; a round's tokens/s counts every agent's tokens over the round's wall "
        "time, and (x N) is that over one agent's on the batched engine, same device.",
        "",
        "| run | "
        + " | ".join(f"{c} (n_gpu_layers={layers}) tokens/s" for c, layers in columns.items())
        + (" | GPU / CPU |" if len(columns) > 1 else " |"),
        "| --- |" + " --- |" * (len(columns) + (len(columns) > 1)),
    ]
    for label, which, agents in ROWS:
        cells = []
        for column in columns:
            model = models[column].get(which) if which else None
            if which is None:
                cells.append("not built yet")
            elif isinstance(model, Exception):
                cells.append(f"unavailable: {model}".replace("|", "/"))
            else:
                rate = statistics.median(rates[(label, column)])
                cell = f"{rate:.1f}"
                if agents > 1:
                    alone = statistics.median(rates[("one agent, batched engine", column)])
                    cell += f" (x {rate / alone:.2f})"
                cells.append(cell)
        if len(columns) > 1:
            measured = [statistics.median(rates.get((label, c), [0.0])) for c in columns]
            cells.append(f"{measured[0] / measured[1]:.2f}" if all(measured) else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
