"""Time and peak memory of `moot merge` for every method, on a real GGUF and a perturbed copy.

    python benchmarks/merge.py --model $(../shared/models/bench-model.sh qwen0.5b)
    python benchmarks/merge.py --model $(../shared/models/bench-model.sh qwen1.5b) --eval

The package index has no two fine-tunes of one base, so the second model is the first with
Gaussian noise of 1% of each tensor's standard deviation added (written once, cached beside the
output). Each merge runs in a fresh process; peak RSS is that process's. The baseline is the
same pipeline reading and writing the model once (a linear "merge" of the model alone). With
--eval, each output's loss per token on a probe text is printed next to the input's. With
--copies N, TIES and DARE merge N perturbed copies (other noise seeds) onto the base, so the sign
election has models to disagree.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

METHODS = ["linear", "slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear"]
PROBE = (
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + "
    "fibonacci(n - 2)\n\nThe capital of France is Paris. Water boils at 100 degrees Celsius. "
    "A list in Python keeps its items in order, and a dictionary maps keys to values."
)


def perturbed_copy(source: Path, out: Path, noise: float = 0.01, seed: int = 0) -> Path:
    """`source` with N(0, noise * std) added to every tensor, written as Q8_0 (F32 for 1-D)."""
    if out.exists():
        return out
    import gguf

    from moot.gguf import GGUFFile

    model = GGUFFile(source)
    writer = gguf.GGUFWriter(str(out), arch=model.architecture)
    for key, (value, types) in model.fields.items():
        if key != "general.architecture":
            sub = types[-1] if len(types) > 1 else None
            writer.add_key_value(key, value, types[0], sub_type=sub)
    rng = np.random.default_rng(seed)
    for name in model.tensors:
        values = model.read(name, 0, None)
        values = values + rng.standard_normal(values.shape, dtype=np.float32) * (
            noise * float(values.std())
        )
        kind = gguf.GGMLQuantizationType.F32
        if values.ndim == 2 and values.shape[1] % 32 == 0:
            kind = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(values, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def recipe(method: str, base: Path, others: list[Path]) -> dict:
    """`method` on the base and the perturbed copies (SLERP: the first copy only; linear reads
    every input once, the least any method can read)."""
    other = others[0]
    if method == "copy":
        return {"merge_method": "linear", "models": [{"model": str(base)}]}
    if method == "linear":
        return {
            "merge_method": "linear",
            "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in (base, *others)],
        }
    if method == "slerp":
        return {
            "merge_method": "slerp",
            "base_model": str(base),
            "models": [{"model": str(base)}, {"model": str(other)}],
            "parameters": {"t": 0.5},
        }
    return {
        "merge_method": method,
        "base_model": str(base),
        "models": [
            {"model": str(copy), "parameters": {"weight": 1.0 / len(others), "density": 0.5}}
            for copy in others
        ],
    }


def measure(config: dict, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS in GiB) of one merge in a fresh process."""
    # VmHWM, not ru_maxrss: ru_maxrss keeps the parent's peak across fork and exec.
    code = (
        "import json, re, sys, moot.merge; "
        "moot.merge.run(json.loads(sys.argv[1]), sys.argv[2], progress=False); "
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
    )
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-c", code, json.dumps(config), str(out)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    return seconds, int(run.stdout.split()[-1]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, default=Path("/tmp/moot-merge-bench"))
    parser.add_argument("--eval", action="store_true", help="print the loss on a probe text")
    parser.add_argument(
        "--copies", type=int, default=1, help="perturbed copies merged onto the base (TIES, DARE)"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    others = [
        perturbed_copy(
            args.model, args.out / f"{args.model.stem}.perturbed{seed or ''}.gguf", seed=seed
        )
        for seed in range(args.copies)
    ]
    other = others[0]
    size = args.model.stat().st_size / 2**30
    print(f"model {args.model.name} ({size:.2f} GiB), merged with {args.copies} perturbed copies\n")
    print("| method | seconds | x read+write once | peak RSS (GiB) |" + (
        " loss per token |" if args.eval else ""))  # fmt: skip
    print("|---|---:|---:|---:|" + ("---:|" if args.eval else ""))
    baseline = None
    losses = {}
    from moot.merge import token_loss

    if args.eval:
        losses["input"] = token_loss(args.model, PROBE)
        losses["perturbed"] = token_loss(other, PROBE)
    for method in ["copy", *args.methods.split(",")]:
        out = args.out / f"{method}.gguf"
        seconds, peak = measure(recipe(method, args.model, others), out)
        baseline = baseline or seconds
        loss = f" {token_loss(out, PROBE):.3f} |" if args.eval else ""
        label = "read + write once (baseline)" if method == "copy" else method
        print(f"| {label} | {seconds:.1f} | {seconds / baseline:.2f} | {peak:.2f} |{loss}")
        out.unlink()
    if args.eval:
        print(f"\nloss per token: input {losses['input']:.3f}, "
              f"perturbed copy {losses['perturbed']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
