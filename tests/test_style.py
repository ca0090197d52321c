"""The code stays ruff-clean, ruff-formatted and mypy-clean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "moot", "tests", "benchmarks"],
        ["ruff", "format", "--check", "moot", "tests", "benchmarks"],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_passes(command):
    run = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_users_type_checker_sees_moots_types(tmp_path):
    """`moot.X` is typed for a user's mypy (py.typed, the imports `moot/__init__` shows type
    checkers), and a misspelled name is an error there, not `object` from the lazy lookup."""
    user = tmp_path / "user.py"
    user.write_text(
        "import moot\n"
        'society: moot.Society = moot.Society(agents=[moot.Agent(name="a", model="test")])\n'
        "reveal_type(moot.Debate)\n"
        "moot.Socety\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", str(tmp_path), str(user)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "MYPYPATH": str(ROOT)},
    )  # fmt: skip
    assert 'Revealed type is "def (**data: Any) -> moot.graphs.debate.Debate"' in run.stdout
    assert 'Module has no attribute "Socety"' in run.stdout
    assert "Found 1 error" in run.stdout, run.stdout
