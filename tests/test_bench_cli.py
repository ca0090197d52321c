"""`moot bench` as a person meets it: the errors of the Ray backend, output read from a pipe or
a log, a folder that another run is writing, and the same folder from Python and from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moot.bench import BenchPlan, MethodSettings, ResultStore, arithmetic, run_bench, write_report
from moot.cli import main
from moot.cli._common import console, errors

LONG = "machinesom-oc1-debate-reflect-debate"
"""A method name longer than a table column gets at 80 columns."""


def bench(out: Path, *options: str) -> list[str]:
    """`moot bench` on two arithmetic questions with the test model (it answers 42)."""
    argv = ["bench", "--data", "arithmetic", "--limit", "2", "--model", "test", "--out", str(out)]
    return [*argv, "--prompts", "moot", *options]


def one_error_line(capsys, argv: list[str]) -> str:
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ")
    return err


@pytest.fixture
def eighty_columns(monkeypatch):
    """The width rich takes where the output is no terminal (unless $COLUMNS says otherwise)."""
    monkeypatch.setattr(console, "width", 80)
    monkeypatch.setattr(errors, "width", 80)


# The Ray backend


@pytest.fixture
def no_ray_cluster(monkeypatch, tmp_path):
    """No Ray cluster to find, whatever runs beside the tests: `ray start` records none under
    RAY_TMPDIR, and no GCS process is looked for."""
    ray = pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray"))
    monkeypatch.setattr("ray._private.services._find_address_from_flag", lambda flag: [])
    yield
    assert not ray.is_initialized()  # (and no local instance was started instead)


@pytest.mark.timeout(60)  # (before: Ray retried 127.0.0.1:1 for minutes)
@pytest.mark.parametrize(
    "address, says",
    [
        ("auto", "no Ray cluster is running (--address auto): start one with `ray start --head`"),
        ("127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1 (--address; Connection refused)"),
        ("no-port", "--address no-port: Ray cannot read it"),
    ],
)
def test_ray_without_a_cluster_at_the_address_is_one_error_line_naming_the_fix(
    capsys, tmp_path, no_ray_cluster, address, says
):
    out = tmp_path / "out"
    err = one_error_line(capsys, bench(out, "--backend", "ray", "--address", address))
    assert says in err
    if address != "no-port":
        assert "or leave out --address to run on a local Ray instance" in err
    assert not out.exists()  # a run that never started leaves no folder


@pytest.mark.timeout(60)
def test_ray_address_from_the_environment_is_used_and_named(
    capsys, tmp_path, no_ray_cluster, monkeypatch
):
    # (before: `ray.init` was given num_cpus as well, and refused both with a traceback)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    err = one_error_line(capsys, bench(tmp_path / "out", "--backend", "ray"))
    assert "no Ray cluster answers at 127.0.0.1:1 (RAY_ADDRESS;" in err
    assert "or unset RAY_ADDRESS" in err


def test_ray_not_installed_is_one_error_line_naming_the_extra(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    err = one_error_line(capsys, bench(tmp_path / "out", "--backend", "ray"))
    assert "the Ray backend of `moot bench` needs the package 'ray'" in err
    assert "pip install 'moot[ray]'" in err


# Output to a pipe or a log


def test_piped_progress_is_one_whole_line_per_question(capsys, tmp_path, eighty_columns):
    assert main(bench(tmp_path / "out", "--methods", f"single,{LONG}")) == 0
    err = capsys.readouterr().err.splitlines()
    lines = [line for line in err if " (trial 0): " in line]
    assert len(lines) == 4 and all(line.endswith(" tok/q") for line in lines)
    assert max(map(len, lines)) > 80  # (wrapped at 80 columns before)
    assert any(line.startswith(f"{LONG} arith-0-0 (trial 0): wrong, ") for line in lines)
    assert all(not line.startswith(("acc ", "tok/q")) for line in err)


def test_piped_tables_show_each_method_name_in_full(capsys, tmp_path, eighty_columns):
    assert main(bench(tmp_path / "out", "--methods", f"single,{LONG}")) == 0
    table = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"│ {LONG} │ 2 x 1 ") for line in table), "\n".join(table)


def test_a_folder_of_several_models_titles_each_table_with_its_model(capsys, tmp_path):
    out = tmp_path / "out"
    assert main(bench(out, "--methods", "single")) == 0
    assert main([*bench(out, "--methods", "single"), "--model", "test:7"]) == 0
    capsys.readouterr()
    assert main(["bench", "--out", str(out), "--report-only"]) == 0
    printed = capsys.readouterr().out
    titles = [line.strip() for line in printed.splitlines() if "arithmetic-0-0-30 ·" in line]
    assert titles == ["arithmetic-0-0-30 · test", "arithmetic-0-0-30 · test:7"]
    assert printed.count("temperature=0.7 max_tokens=384 seed=0") == 2  # each table's settings
    assert main(["bench", "--out", str(out), "--report-only", "--skip", "1"]) == 0
    assert "--report-only reports all of" in capsys.readouterr().err  # not silently ignored


# A folder another run is writing


def test_a_second_run_into_a_folder_being_written_is_refused_until_the_first_ends(capsys, tmp_path):
    out = tmp_path / "out"
    assert main(bench(out, "--methods", "single")) == 0
    holder = subprocess.Popen(  # another run writing into OUT: it holds the lock, then waits
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from moot.bench.runner import writing_to; held = writing_to(Path(sys.argv[1])); "
         "held.__enter__(); print('writing', flush=True); sys.stdin.read()", str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "writing\n"
        capsys.readouterr()
        report_only = ["bench", "--out", str(out), "--report-only"]
        for argv in (bench(out, "--methods", "vote-3"), report_only):
            err = one_error_line(capsys, argv)
            assert f"{out} is in use: another `moot bench` (pid {holder.pid}) is writing" in err
            assert "wait for it to finish, or write this run into another folder (--out)" in err
    finally:
        holder.kill()  # (as a killed run: the system lets its lock go)
        holder.wait()
    assert main(bench(out, "--methods", "vote-3")) == 0
    assert {r.method for r in ResultStore(out).records()} == {"single", "vote-3"}


# The same folder from Python and from the CLI


def test_run_bench_writes_the_report_the_cli_writes(tmp_path):
    out = tmp_path / "out"
    settings = MethodSettings(model="test")
    for methods in (["single"], ["vote-3", "single"]):
        task = arithmetic(2, seed=0, low=0, high=30)  # (what `--data arithmetic` generates)
        plan = BenchPlan(task=task, methods=methods, settings=settings)
        run_bench(plan, out, progress=False)
    report = (out / "report.md").read_text()
    assert "| vote-3 | 2 | 1 |" in report and "| single | 2 | 1 |" in report  # the folder's
    assert (out / "accuracy_vs_tokens.png").exists()
    records = ResultStore(out).records_with_transcripts()
    assert write_report(records, tmp_path / "again", ["vote-3", "single"]).read_text() == report
    assert main(bench(tmp_path / "cli", "--methods", "vote-3,single")) == 0
    from_cli = (tmp_path / "cli/report.md").read_text()

    def sections(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("#")]

    assert sections(from_cli) == sections(report) and "### Paired against vote-3" in report


def test_show_md_of_a_bench_folder_has_the_reference_column(capsys, tmp_path):
    out = tmp_path / "out"
    assert main(bench(out, "--methods", "single")) == 0
    references = {r.question_id: r.reference for r in ResultStore(out).records()}
    capsys.readouterr()
    assert main(["show", str(out), "--format", "md"]) == 0
    table = capsys.readouterr().out
    assert "| question | reference | single |" in table
    for question, reference in references.items():
        assert f"| {question} | {reference} | ✗ 42 |" in table
    assert "| **accuracy** | | 0% |" in table


def test_the_default_method_runs_and_is_recorded_as_what_it_is_on_the_task(capsys, tmp_path):
    out = tmp_path / "out"
    assert main(bench(out, "--methods", "default")) == 0
    assert "default: vote-3-pal3-stop2 " in capsys.readouterr().err
    methods = {json.loads(line)["method"] for line in (out / "results.jsonl").open()}
    assert methods == {
        "vote-3-pal3-stop2"
    }  # a later default resumes nothing recorded under "default"
    again = tmp_path / "again"
    assert main(bench(again, "--methods", "default,vote-3-pal3-stop2,default")) == 0
    assert len((again / "results.jsonl").read_text().splitlines()) == 2  # once per question


def test_skip_runs_a_later_slice_of_the_same_task_in_the_same_folder(capsys, tmp_path):
    out = tmp_path / "out"
    argv = bench(out, "--methods", "single")
    assert main([*argv, "--limit", "1"]) == 0  # question 1 (the last --limit counts)
    first = [*argv, "--limit", "3"]
    assert main([*first, "--skip", "2"]) == 0  # question 3 only
    records = [json.loads(line) for line in (out / "results.jsonl").open()]
    assert [r["question_id"] for r in records] == ["arith-0-0", "arith-0-2"]
    assert len({r["task"] for r in records}) == 1  # one task: the slices pair
    capsys.readouterr()
    assert "--skip 3 leaves no question of the 3 to run: skip fewer, or raise" in one_error_line(
        capsys, [*first, "--skip", "3"]
    )
    with pytest.raises(SystemExit):
        main([*first, "--skip", "-1"])
    assert "--skip: must be 0 or more, got -1" in capsys.readouterr().err
    data = tmp_path / "two.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": "4"}\n')
    file_bench = ["bench", "--model", "test", "--data", str(data), "--out", str(tmp_path / "f")]
    err = one_error_line(
        capsys, [*file_bench, "--methods", "single", "--limit", "9", "--skip", "2"]
    )
    assert err.rstrip().endswith("skip fewer")  # a --limit past the file's end is no help
