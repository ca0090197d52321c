"""Every Python example runs, in-process, on the scripted "test" model. (Each has a twin in
examples/societies/, which test_society_file runs on the embedded model.)"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest
from langchain_core.language_models import BaseChatModel

import moot
import moot.models
from moot.testing import test_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def run_example(monkeypatch, capsys):
    """Run an example script with its models replaced by the test model; return its output."""
    shared = test_model()

    def load_model(spec, **options):
        return spec if isinstance(spec, BaseChatModel) else shared

    monkeypatch.setattr(moot.models, "load_model", load_model)
    monkeypatch.setattr(moot, "load_model", load_model)

    def run(path: Path, *args: str) -> str:
        monkeypatch.setattr(sys, "argv", [str(path), *args])
        runpy.run_path(str(path), run_name="__main__")
        assert shared.call_count, f"{path.name} called no model"
        return capsys.readouterr().out

    return run


@pytest.mark.parametrize(
    "path",
    sorted(path for path in EXAMPLES.glob("*.py") if path.stem != "langchain_app"),
    ids=lambda path: path.stem,
)
def test_example_runs(path, run_example):
    out = run_example(path, "What is 12+30?")
    assert "42" in out


def test_langchain_app_calls_the_debate_as_a_tool(run_example):
    out = run_example(EXAMPLES / "langchain_app.py", "What is 17+25?")
    lines = out.splitlines()
    assert any(line.startswith("[ai] [{'name': 'ask_debate'") for line in lines)
    assert "[tool] 42" in lines
    assert out.split("[tool] 42\n")[1].startswith("[ai] ")  # the reply after the tool
