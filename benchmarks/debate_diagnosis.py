"""Where debate answers go right or wrong, round by round, from a `moot bench` folder.

For every debate record (`debate-NxR`) it follows each agent from one round to the next:
- an answer that changed from right to wrong or from wrong to right, and where the new answer
  came from: the previous round's plurality (conformity, when wrong), a peer's answer that was
  not the plurality (a minority's), or no peer at all (the agent's own new answer);
- replies with no readable answer, and wrong answers whose reply ends with the right number
  (a possible reading miss, from OUT/transcripts.jsonl);
- replies cut at the token limit (output tokens equal to the run's max_tokens).

    python benchmarks/debate_diagnosis.py benchmarks/results/quality/gsm8k-qwen1.5b [...]
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

from moot.aggregate.extract import normalise_number
from moot.bench.report import change_source
from moot.bench.store import ResultStore


def diagnose(folder: Path) -> dict[str, Counter[str]]:
    texts: dict[tuple[str, str, str, int, str], tuple[str, int]] = {}
    transcripts = folder / "transcripts.jsonl"
    if transcripts.exists():
        for line in transcripts.open():
            entry = json.loads(line)
            method, settings, question = entry["key"][1], entry["key"][3], entry["key"][5]
            for turn in entry["turns"]:
                texts[method, settings, question, turn["round"], turn["agent"]] = (
                    turn["text"],
                    turn["usage"]["output_tokens"],
                )
    counts: dict[str, Counter[str]] = {}
    for record in ResultStore(folder).records():
        if not record.method.startswith("debate-"):
            continue
        limit = re.search(r"max_tokens=(\d+)", record.settings)
        max_tokens = int(limit[1]) if limit else None
        # Runs with other settings (tools, say) in the same folder are counted apart.
        seen = counts.setdefault(f"{record.method} ({record.settings})", Counter())
        seen["questions"] += 1
        rounds = record.per_round
        for number, now in enumerate(rounds, start=1):
            for agent, answer in now.answers.items():
                seen[f"round {number} turns"] += 1
                turn_key = (record.method, record.settings, record.question_id, number, agent)
                text, output = texts.get(turn_key, ("", 0))
                if answer is None:
                    seen[f"round {number} no answer"] += 1
                elif not now.correct[agent] and _ends_with(text, record.reference):
                    seen[f"round {number} reference at the end, read otherwise"] += 1
                if max_tokens and output >= max_tokens:
                    seen[f"round {number} cut at max_tokens"] += 1
            if number == 1:
                continue
            before = rounds[number - 2]
            for agent, answer in now.answers.items():
                was, right = before.correct.get(agent), now.correct[agent]
                if was is None or was == right:
                    continue
                change = "right->wrong" if was else "wrong->right"
                seen[f"{change} ({_SOURCES[change_source(answer, before, agent)]})"] += 1
    return counts


_SOURCES = {
    "plurality": "took up the plurality",
    "minority": "took up a minority peer's answer",
    "own": "an answer no peer gave",
}


def _ends_with(text: str, reference: str) -> bool:
    """Whether the reply's last number is the reference (read by another rule)."""
    numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text[-200:])
    return bool(numbers) and normalise_number(numbers[-1]) == normalise_number(reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    for folder in args.folders:
        for method, seen in diagnose(folder).items():
            print(f"\n{folder} {method}")
            for key in sorted(seen):
                print(f"  {key}: {seen[key]}")


if __name__ == "__main__":
    main()
