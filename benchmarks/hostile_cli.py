"""Fault injection over the whole CLI: every command against empty, huge, deeply nested,
non-UTF-8 and hostile input.

Each case runs `python -m moot ...` under `/usr/bin/time -v` with a time limit and passes when
the command ends in an answer or in one `error:` line (its last line on stderr, after any
progress lines), with status 0, 1 or 2: no traceback, no
hang, no signal. For refused input (status 1 or 2) it also records peak memory, which must stay
under 300 MB. Prints a Markdown table (for BENCHMARKS.md) and exits 1 if any case failed.

    python benchmarks/hostile_cli.py [--only WORD] [--limit-s 60]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PEAK_LIMIT_MB = 300


@dataclass
class Case:
    name: str
    args: list[str | bytes]
    ok_statuses: tuple[int, ...] = (0, 1, 2)


def _write(folder: Path, name: str, data: str | bytes) -> str:
    path = folder / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def _nested_yaml(depth: int) -> str:
    return (
        "agents:\n"
        + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(depth))
        + "  " * (depth + 1)
        + "x: 1\n"
    )


def _alias_bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for index, name in enumerate("bcdefghi"):
        previous = "abcdefghi"[index]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\nagents: *i\n"


def _cases(folder: Path) -> list[Case]:
    """The inputs, made in `folder`."""
    society = (
        "agents:\n  - {name: a, copies: 2, model: test}\nprotocol: {kind: debate, rounds: 1}\n"
    )
    files = {
        "empty": _write(folder, "empty.yaml", ""),
        "huge": _write(folder, "huge.yaml", "# filler\n" * 3_000_000),  # 27 MB
        "nested": _write(folder, "nested.yaml", _nested_yaml(5000)),
        "flow-nested": _write(folder, "flow.yaml", "agents: " + "[" * 100_000 + "]" * 100_000),
        "bomb": _write(folder, "bomb.yaml", _alias_bomb()),
        "non-utf8": _write(folder, "latin1.yaml", b"agents:\n  - {name: caf\xe9}\n"),
        "binary": _write(folder, "binary.yaml", bytes(range(256)) * 64),
        "copies": _write(folder, "copies.yaml", society.replace("copies: 2", "copies: 10000000")),
        "rounds": _write(folder, "rounds.yaml", society.replace("rounds: 1", "rounds: 10000000")),
        "good": _write(folder, "good.yaml", society),
    }
    jsonl = {
        "empty": _write(folder, "empty.jsonl", ""),
        "nested": _write(
            folder, "nested.jsonl", '{"id": 1, "question": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
        ),  # noqa: E501
        "non-utf8": _write(
            folder, "latin1.jsonl", b'{"id": 1, "question": "caf\xe9", "answer": "1"}\n'
        ),  # noqa: E501
        "garbage": _write(folder, "garbage.jsonl", "not json\n{\n"),
        "huge-line": _write(
            folder,
            "huge.jsonl",
            '{"id": 1, "question": "' + "x" * 20_000_000 + '", "answer": "1"}\n',
        ),  # noqa: E501
    }
    record = {
        "empty": _write(folder, "empty.json", ""),
        "nested": _write(folder, "nested.json", "[" * 100_000 + "]" * 100_000),
        "non-utf8": _write(folder, "latin1.json", b'{"question": "caf\xe9"}'),
        "rounds": _write(
            folder,
            "rounds.json",
            json.dumps(
                {"question": "q", "answer": "1", "turns": [], "rounds": 10_000_000, "usage": {}}
            ),  # fmt: skip
        ),
        "rounds-float": _write(
            folder,
            "rounds-float.json",
            '{"question": "q", "answer": "1", "turns": [], "rounds": 1e9, "usage": {}}',
        ),  # fmt: skip
    }
    bench_folder = folder / "bench-bad"
    bench_folder.mkdir()
    (bench_folder / "results.jsonl").write_bytes(b'{"method": "single", "id": "\xff"}\n')
    truncated = folder / "half.gguf"
    truncated.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 40)
    recipe_bad_input = _write(
        folder, "recipe.yaml", f"method: linear\nmodels:\n  - {{model: {truncated}}}\n"
        f"  - {{model: {folder}}}\n",
    )  # fmt: skip
    sqlite_garbage = _write(folder, "garbage.sqlite", b"this is not a database" * 100)

    def bench(out: str, *options: str) -> list[str | bytes]:
        """`moot bench` on one arithmetic question with the test model, writing to `out`."""
        base = ["--data", "arithmetic", "--limit", "1", "--methods", "single", "--model", "test"]
        return ["bench", *base, "--out", str(folder / out), *options]  # later options win

    big_question = "What is 1+1? " + "blah " * 20_000  # ~100 KB, under the argv limit

    cases = [
        Case("debate: empty question", ["debate", "", "--model", "test"]),
        Case("debate: 100 KB question", ["debate", big_question, "--model", "test", "--json"]),
        Case("debate: non-UTF-8 question", ["debate", b"caf\xe9?", "--model", "test", "--json"]),
        Case("debate: nested question", ["debate", "(" * 50_000, "--model", "test", "--json"]),
        Case("debate: 10^7 agents", ["debate", "q", "--model", "test", "--agents", "10000000"]),
        Case("debate: 10^7 rounds", ["debate", "q", "--model", "test", "--rounds", "10000000"]),
        Case("debate: --timeout inf", ["debate", "q", "--model", "test", "--timeout", "inf"]),
        Case(
            "debate: --temperature nan", ["debate", "q", "--model", "test", "--temperature", "nan"]
        ),  # noqa: E501
        Case("debate: hf spec with ..", ["debate", "q", "--model", "hf:o/r/../x.gguf"]),
        Case("debate: llama spec /dev/zero", ["debate", "q", "--model", "llama:/dev/zero"]),
        Case("debate: llama spec a folder", ["debate", "q", "--model", f"llama:{folder}"]),
        Case("debate: unknown spec", ["debate", "q", "--model", "nonsense:x"]),
        Case("debate: bad -o", ["debate", "q", "--model", "test", "-o", "=x"]),
        Case(
            "debate: html to /nonexistent",
            ["debate", "q", "--model", "test", "--html", "/nonexistent/x.html"],
        ),  # noqa: E501
        Case(
            "debate: checkpoint garbage",
            ["debate", "q", "--model", "test", "--checkpoint", sqlite_garbage, "--thread", "t"],
        ),  # noqa: E501
        Case(
            "debate: cache garbage", ["debate", "q", "--model", "test", "--cache", sqlite_garbage]
        ),  # noqa: E501
        Case(
            "resume: checkpoint garbage",
            ["resume", "--checkpoint", sqlite_garbage, "--thread", "t"],
        ),  # noqa: E501
        Case(
            "resume: no such file",
            ["resume", "--checkpoint", str(folder / "none.sqlite"), "--thread", "t"],
        ),  # noqa: E501
        Case("run: good society file", ["run", files["good"], "q", "--json"], (0,)),
        *[
            Case(f"run: {kind} society file", ["run", path, "q", "--model", "test"])
            for kind, path in files.items()
            if kind != "good"
        ],  # fmt: skip
        Case("run: a folder", ["run", str(folder), "q"]),
        *[Case(f"show: {kind} record", ["show", path]) for kind, path in record.items()],
        Case("show: bench folder with a non-UTF-8 result", ["show", str(bench_folder)]),
        Case("show: nonexistent", ["show", str(folder / "none.json")]),
        *[
            Case(f"bench: {kind} data", bench(f"out-{kind}", "--data", path))
            for kind, path in jsonl.items()
        ],
        Case("bench: vote-10000000", bench("out-vote", "--methods", "vote-10000000")),
        Case("bench: resume a non-UTF-8 folder", bench(str(bench_folder))),
        Case(
            "bench: ray with no cluster",
            bench("out-ray", "--backend", "ray", "--address", "127.0.0.1:1"),
        ),
        Case("bench: 10^8 trials", bench("out-trials", "--trials", "100000000")),
        *[
            Case(f"merge: {kind} recipe", ["merge", path, "-o", str(folder / "m.gguf")])
            for kind, path in files.items()
            if kind in ("empty", "nested", "bomb", "non-utf8", "binary", "huge")
        ],  # noqa: E501  # fmt: skip
        Case(
            "merge: truncated GGUF and a folder as inputs",
            ["merge", recipe_bad_input, "-o", str(folder / "m.gguf")],
        ),  # noqa: E501
        Case("merge: -o an existing folder", ["merge", recipe_bad_input, "-o", str(folder)]),
        Case(
            "fusion train-gate: garbage",
            [
                "fusion",
                "train-gate",
                "--base",
                f"llama:{truncated}",
                "--assistant",
                f"llama:{truncated}",
                "--data",
                jsonl["garbage"],
                "-o",
                str(folder / "g.json"),
            ],
        ),  # noqa: E501
        Case("models", ["models"], (0,)),
        Case("serve: a nested society file", ["serve", files["nested"], "--port", "1"]),
        Case("serve: bad port", ["serve", files["good"], "--port", "70000"]),
    ]
    return cases


def _run(case: Case, limit_s: float) -> dict[str, object]:
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "moot", *case.args]
    started = time.monotonic()
    try:
        done = subprocess.run(
            [os.fsencode(part) if isinstance(part, str) else part for part in command],
            capture_output=True, timeout=limit_s, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"case": case.name, "status": "hang", "ok": False, "peak_mb": None, "why": "hang"}
    seconds = time.monotonic() - started
    err = done.stderr.decode("utf-8", "replace")
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    peak_mb = int(peak.group(1)) / 1024 if peak else None
    status_line = re.search(r"Exit status: (\d+)", err)
    signal_line = re.search(r"Command terminated by signal (\d+)", err)
    own = err.split("\tCommand being timed:")[0]  # the command's own stderr, then time's
    own = re.sub(r"Command (exited with non-zero status|terminated by signal) \d+\n$", "", own)
    status = int(status_line.group(1)) if status_line else done.returncode
    why = ""
    if signal_line:
        why = f"signal {signal_line.group(1)}"
    elif "Traceback" in own:
        why = "traceback"
    elif status not in case.ok_statuses:
        why = f"status {status}"
    elif status != 0 and [line[:6] for line in own.strip().splitlines()][-1:] != ["error:"]:
        why = "no error: line last"
    elif own.count("error:") > 1:
        why = "several error: lines"
    elif status != 0 and peak_mb is not None and peak_mb > PEAK_LIMIT_MB:
        why = f"peak {peak_mb:.0f} MB"
    first = next((line for line in own.splitlines() if line.startswith("error:")), "")
    return {
        "case": case.name, "status": status, "ok": not why, "peak_mb": peak_mb,
        "seconds": seconds, "why": why, "error": first[:110],
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the cases whose name contains this")
    parser.add_argument("--limit-s", type=float, default=60.0, help="a hang past this fails")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        for case in _cases(Path(temp)):
            if args.only and args.only not in case.name:
                continue
            row = _run(case, args.limit_s)
            rows.append(row)
            mark = "ok" if row["ok"] else f"FAIL ({row['why']})"
            print(f"{mark:>22}  {case.name}", file=sys.stderr, flush=True)
    print("| case | status | peak MB | s | result |\n| --- | ---: | ---: | ---: | --- |")
    for row in rows:
        peak = f"{row['peak_mb']:.0f}" if row["peak_mb"] is not None else "-"
        result = "ok" if row["ok"] else f"**{row['why']}**"
        seconds = f"{row.get('seconds', 0):.1f}"
        print(f"| {row['case']} | {row['status']} | {peak} | {seconds} | {result} |")
    failed = [row for row in rows if not row["ok"]]
    refused = [row for row in rows if row["status"] in (1, 2) and row["peak_mb"] is not None]
    worst = max((row["peak_mb"] for row in refused), default=0.0)
    print(f"\n{len(rows) - len(failed)} of {len(rows)} cases ok; peak memory of a refused input "
          f"at most {worst:.0f} MB (limit {PEAK_LIMIT_MB} MB)")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
