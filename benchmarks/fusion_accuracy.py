"""Accuracy of token-level fusion on GSM8K and arithmetic: each model alone, prob, logit, and
Co-LLM at several thresholds and with a learned gate (issue 14's accuracy targets).

Each setting is a `moot bench --methods single` run of its own (greedy, one question at a time)
in benchmarks/results/fusion/TASK/SETTING (fusion-du/ with `--prompts du`: Du et al.'s prompts,
which ask for the working), so a run resumes where it stopped and `--limit` can grow. Settings
take turns `--slice` questions at a time, so a run cut short has every setting on the same
questions; `--jobs 2` runs two settings at a time, each a process on one thread (on two cores,
more questions an hour than one setting on two threads; tokens/s are then those of one core).
`--gate` may be given several times: a row per gate ("colm gate du" for one trained on Du's
GSM8K prompt, `moot fusion train-gate --prompts du-gsm8k`; "... marginal" for one fitted to the
marginal likelihood, `--objective marginal`).
Then one table per task (accuracy with 95% Wilson intervals, McNemar against the small model
alone, share of the small->large gap recovered, output tokens/s, deferral rate) and a plot of
accuracy against deferral rate.

    python benchmarks/fusion_accuracy.py --small $(../shared/models/bench-model.sh qwen0.5b) \
        --large $(../shared/models/bench-model.sh qwen1.5b) --gate gate.json --limit 20
    python benchmarks/fusion_accuracy.py ... --report-only
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from moot.bench.records import BenchRecord
from moot.bench.report import Interval, mcnemar_exact
from moot.bench.store import ResultStore
from moot.cli.fusion import question_template
from moot.fusion import LearnedGate

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "results" / "fusion"
GSM8K = ROOT.parent / ".." / "shared" / "data" / "gsm8k" / "dev.jsonl"
TASKS = {
    "gsm8k": ["--data", str(GSM8K), "--max-tokens", "384"],
    "arithmetic": ["--data", "arithmetic", "--range", "0-30", "--max-tokens", "256"],
}


def settings(small: str, large: str, gates: list[str]) -> dict[str, str]:
    pair = f"fuse:{small}+{large}"
    table = {
        "0.5B alone": f"llama:{small}",
        "1.5B alone": f"llama:{large}",
        "prob": f"{pair}?strategy=prob",
        "logit": f"{pair}?strategy=logit",
    }
    for threshold in (0.3, 0.5, 0.7, 0.9):
        table[f"colm p<={threshold}"] = f"{pair}?strategy=colm&threshold={threshold}"
    # the 1.5B writes the first 4 tokens, which set the style (working shown or not)
    table["colm p<=0.5 first 4"] = f"{pair}?strategy=colm&threshold=0.5&defer_first=4"
    for gate in gates:  # at the threshold that deferred 30% of the gate's training tokens
        training = LearnedGate.load(gate).training
        assert training is not None, f"{gate} has no training summary to take a threshold from"
        threshold = training.thresholds["30%"]
        table[gate_name(gate, training.question_template, training.objective)] = (
            f"{pair}?strategy=colm&gate={gate}&threshold={threshold:.3f}"
        )
    return table


def gate_name(gate: str, template: str, objective: str = "weak labels") -> str:
    """ "colm gate" for a gate trained on the bare question, "colm gate du" on Du's GSM8K prompt;
    " marginal" added for one fitted to the marginal likelihood after the weak labels."""
    suffix = " marginal" if objective == "marginal likelihood" else ""
    if template == question_template(None):
        return f"colm gate{suffix}"
    if template == question_template("du-gsm8k"):
        return f"colm gate du{suffix}"
    return f"colm gate {Path(gate).stem}"


def folder(task: str, name: str, prompts: str = "moot") -> Path:
    root = OUT if prompts == "moot" else OUT.with_name(f"fusion-{prompts}")
    return root / task / name.replace(" ", "_").replace("<=", "le")


def bench_args(
    task: str, name: str, spec: str, limit: int, prompts: str, threads: int
) -> list[str]:
    args = ["bench", *TASKS[task], "--limit", str(limit), "--methods", "single"]
    args += ["--model", spec, "--temperature", "0", "--concurrency", "1"]
    args += ["--out", str(folder(task, name, prompts)), "--prompts", prompts]
    return [*args, "-o", f"n_threads={threads}"]


def run_together(
    task: str, jobs: dict[str, str], limit: int, prompts: str, width: int, threads: int
) -> None:
    """The settings `jobs` (name -> spec), `width` at a time, each a process on `threads`."""

    def one(name: str) -> None:
        args = bench_args(task, name, jobs[name], limit, prompts, threads)
        done = subprocess.run([sys.executable, "-m", "moot", *args], capture_output=True)
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace")[-2000:]
            raise SystemExit(f"moot bench failed for {task} / {name}:\n{tail}")
        print(f"{task} / {name}: {limit} questions done", flush=True)

    with ThreadPoolExecutor(max_workers=width) as pool:
        list(pool.map(one, jobs))


def report(task: str, names: list[str], limit: int, prompts: str) -> None:
    records: dict[str, dict[str, BenchRecord]] = {}
    for name in names:
        done = ResultStore(folder(task, name, prompts)).records()
        records[name] = {record.question_id: record for record in done}
    common = sorted(set.intersection(*(set(r) for r in records.values())))[: limit or None]
    if not common:
        print(f"{task}: no question answered by every setting yet")
        return
    small = [records["0.5B alone"][q].correct for q in common]
    large = [records["1.5B alone"][q].correct for q in common]
    gap = sum(large) - sum(small)
    print(f"\n{task}: {len(common)} questions answered by every setting\n")
    print(
        "| setting | accuracy [95% CI] | right vs 0.5B (b/c, McNemar p) | vs 1.5B (b/c, p) "
        "| gap recovered | tokens/s | deferred |"
    )
    print("|---|---|---|---|---:|---:|---:|")
    points = []
    for name in names:
        rows = [records[name][q] for q in common]
        right = [row.correct for row in rows]
        interval = Interval.wilson(sum(right), len(right))
        versus = [_paired(small, right), _paired(large, right)]
        recovered = f"{(sum(right) - sum(small)) / gap:.0%}" if gap > 0 else "-"
        output = sum(row.output_tokens for row in rows)
        speed = output / max(1e-9, sum(row.seconds for row in rows))
        deferred = sum(row.deferred_tokens for row in rows) / max(1, output)
        shown = f"{deferred:.0%}" if name.startswith("colm") else "-"
        print(
            f"| {name} | {interval.value:.0%} [{interval.low:.0%}, {interval.high:.0%}] "
            f"| {versus[0]} | {versus[1]} | {recovered} | {speed:.1f} | {shown} |"
        )
        if name.startswith("colm") or "alone" in name:
            share = deferred if name.startswith("colm") else (0.0 if "0.5B" in name else 1.0)
            points.append((name, share, interval.value))
    _plot(task, points, folder(task, names[0], prompts).parent)


def _paired(base: list[bool], other: list[bool]) -> str:
    """b/c (McNemar p): questions only `base` got right / only `other` did."""
    b = sum(x and not y for x, y in zip(base, other, strict=True))
    c = sum(y and not x for x, y in zip(base, other, strict=True))
    if b + c == 0:
        return "-"
    p = mcnemar_exact(b, c)
    return f"{b}/{c} (p{'<0.001' if p < 0.001 else f'={p:.3f}'})"


def _plot(task: str, points: list[tuple[str, float, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8.5, 4))
    for name, share, accuracy in points:
        axes.scatter(share, accuracy, label=name)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))  # off the points
    axes.set_ylim(-0.02, max(accuracy for _, _, accuracy in points) + 0.15)
    axes.set_xlabel("share of tokens from the 1.5B (deferral rate)")
    axes.set_ylabel("accuracy")
    axes.set_title(f"Co-LLM on {task}: Qwen2.5-Coder 0.5B base, 1.5B assistant")
    figure.tight_layout()
    path = out / "accuracy_vs_deferral.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"\nplot: {path.relative_to(ROOT.parent)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", required=True)
    parser.add_argument("--large", required=True)
    parser.add_argument(
        "--gate", action="append", default=[], help="a learned gate (repeat for several)"
    )
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--tasks", default="gsm8k,arithmetic")
    parser.add_argument("--only", help="comma-separated settings to run (default: all)")
    parser.add_argument("--slice", type=int, default=10, help="questions per setting's turn")
    parser.add_argument("--prompts", choices=["moot", "du"], default="moot")
    parser.add_argument("--jobs", type=int, default=1, help="settings run at a time (1)")
    parser.add_argument(
        "--threads", type=int, help="threads per process (default: 2 with --jobs 1, else 1)"
    )
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    table = settings(args.small, args.large, args.gate)
    chosen = args.only.split(",") if args.only else list(table)
    for task in args.tasks.split(","):
        if not args.report_only:
            threads = args.threads or (2 if args.jobs == 1 else 1)
            jobs = {name: table[name] for name in chosen}
            for upto in range(min(args.slice, args.limit), args.limit + args.slice, args.slice):
                limit = min(upto, args.limit)
                run_together(task, jobs, limit, args.prompts, args.jobs, threads)
        done = [name for name in table if folder(task, name, args.prompts).exists()]
        report(task, done, args.limit, args.prompts)


if __name__ == "__main__":
    main()
