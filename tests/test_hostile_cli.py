"""The fault-injection run of `benchmarks/hostile_cli.py`, in-process: every command against
empty, huge, deeply nested, non-UTF-8 and hostile input ends in an answer or in one `error:`
line (the last on stderr) with status 0, 1 or 2, never an exception. (The script itself runs
each case as a process under /usr/bin/time, for signals and peak memory.)"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from moot.cli import main

_SCRIPT = Path(__file__).parent.parent / "benchmarks" / "hostile_cli.py"
_spec = importlib.util.spec_from_file_location("hostile_cli", _SCRIPT)
assert _spec is not None and _spec.loader is not None
hostile_cli = importlib.util.module_from_spec(_spec)
sys.modules["hostile_cli"] = hostile_cli  # its dataclass looks itself up there
_spec.loader.exec_module(hostile_cli)


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, object]:
    return {case.name: case for case in hostile_cli._cases(tmp_path_factory.mktemp("hostile"))}


def _case_names() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return [case.name for case in hostile_cli._cases(Path(folder))]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", _case_names())
def test_hostile_input_ends_in_an_answer_or_one_error_line(cases, name, capsys):
    case = cases[name]
    argv = [os.fsdecode(part) for part in case.args]  # as Python decodes a process's argv
    try:
        status = main(argv)
    except SystemExit as exited:  # argparse's usage errors
        status = exited.code
    out, err = capsys.readouterr()
    assert status in case.ok_statuses, err[-500:]
    lines = err.strip().splitlines()
    if status != 0:
        assert lines and lines[-1].startswith("error:"), err[-500:]
        assert err.count("error:") == 1
