"""What verifying a draft costs on this machine: one decode of k tokens of each sequence against
a decode of one token each, after a 300-token prompt (llama.cpp contexts as the batched engine
makes them).

    python benchmarks/decode_rows.py MODEL.gguf [SEQUENCES]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from moot.llamacpp.context import Context
from moot.llamacpp.devices import usable_cores
from moot.llamacpp.model import LoadedModel


def main() -> None:
    path = Path(sys.argv[1]).expanduser()
    sequences = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    model = LoadedModel.load(path, 0)
    context = Context(model, n_ctx=2048, n_batch=512, sequences=sequences, n_threads=usable_cores())
    prompt = model.tokenize("The quick brown fox jumps over the lazy dog. " * 30, True, False)
    prompt = prompt[:300]
    for sequence in context.sequences:
        context.add(sequence, prompt, {len(prompt) - 1})
        context.decode()
        sequence.mark()
    seconds = {}
    for k in (1, 2, 3, 4, 6, 8, 12, 16):
        times = []
        for _ in range(6):
            for sequence in context.sequences:
                context.add(sequence, prompt[:k], set(range(k)))
            started = time.perf_counter()
            context.decode()
            times.append(time.perf_counter() - started)
            for sequence in context.sequences:
                sequence.keep(len(prompt))
        seconds[k] = statistics.median(times[1:])
    print(f"| {path.name}, {sequences} sequence(s) | ms | x one token | per token |")
    print("| --- | ---: | ---: | ---: |")
    for k, value in seconds.items():
        ratio = value / seconds[1]
        print(f"| {k} tokens each | {value * 1e3:.0f} | {ratio:.2f} | {ratio / k:.2f} |")


if __name__ == "__main__":
    main()
