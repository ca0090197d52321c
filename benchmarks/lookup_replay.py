"""How many decode steps prompt-lookup drafting saves on recorded debates, without a model.

Each reply of rounds 2 and 3 of the recorded 3x3 debates (a `moot bench` transcript) is replayed
token by token through the engine's own `PromptLookup`, as if the model had generated it: the
context is the earlier rounds' replies (what the agent was shown), a draft is kept up to its
first token that differs from the recorded reply, and each step gives the kept tokens and one
more. Tokens per step is what drafting would give a model that writes these replies.

    python benchmarks/lookup_replay.py benchmarks/results/quality/gsm8k-qwen1.5b-du [--most 7]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llama_cpp import Llama

from moot.llamacpp.drafting import PromptLookup

MODEL = Path("~/.cache/moot-bench/qwen2.5-coder-1.5b-instruct.gguf").expanduser()


def steps(context: list[int], reply: list[int], most: int) -> tuple[int, int, int]:
    """(decode steps, drafted, kept) to write `reply` after `context`."""
    lookup = PromptLookup(context, most)
    done = count = drafted = kept = 0
    while done < len(reply):
        draft = lookup.draft(len(reply) - done - 1)
        good = 0
        while good < len(draft) and draft[good] == reply[done + good]:
            good += 1
        if draft:
            lookup.judged(len(draft), good)
        lookup.extend(reply[done : done + good + 1])
        done, count, drafted, kept = done + good + 1, count + 1, drafted + len(draft), kept + good
    return count, drafted, kept


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transcripts", type=Path)
    parser.add_argument("--most", type=int, default=7)
    parser.add_argument("--debates", type=int, default=40)
    args = parser.parse_args()
    vocab = Llama(model_path=str(MODEL), vocab_only=True, verbose=False)

    def tokens(text: str) -> list[int]:
        return vocab.tokenize(text.encode(), add_bos=False, special=False)

    total = {"tokens": 0, "steps": 0, "drafted": 0, "kept": 0}
    debates = 0
    for line in (args.transcripts / "transcripts.jsonl").open():
        record = json.loads(line)
        if record["key"][1] != "debate-3x3":
            continue
        debates += 1
        turns = record["turns"]
        for turn in turns:
            if turn["round"] < 2 or not turn["text"]:
                continue
            shown = [t["text"] for t in turns if t["round"] < turn["round"] and t["text"]]
            reply = tokens(turn["text"])
            counted = steps(tokens("\n\n".join(shown)), reply, args.most)
            for key, value in zip(("steps", "drafted", "kept"), counted, strict=True):
                total[key] += value
            total["tokens"] += len(reply)
        if debates == args.debates:
            break
    print(
        f"| {args.transcripts.name} (rounds 2-3 of {debates} debates), drafts up to "
        f"{args.most} | {total['tokens']} tokens | {total['tokens'] / total['steps']:.2f} tokens "
        f"/ step | {total['kept'] / max(1, total['drafted']):.0%} of drafted tokens kept |"
    )


if __name__ == "__main__":
    main()
