"""Every Python example runs on the embedded model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda path: path.stem)
def test_example_runs(path):
    run = subprocess.run(
        [sys.executable, str(path), "What is 12+30?"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip()


def test_langchain_app_calls_the_debate_as_a_tool():
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / "langchain_app.py"), "What is 17+25?"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert any(line.startswith("[ai] [{'name': 'ask_debate'") for line in lines)
    assert any(line.startswith("[tool] ") for line in lines)
    assert lines[-1].startswith("[ai] ")
