"""benchmarks/compare_folders.py: a method paired across two results folders."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from moot.bench.records import BenchRecord

_SCRIPT = Path(__file__).parent.parent / "benchmarks" / "compare_folders.py"
_spec = importlib.util.spec_from_file_location("compare_folders", _SCRIPT)
assert _spec and _spec.loader
compare_folders = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_folders)


def _record(question: str, correct: bool, settings: str, tokens: int = 100) -> BenchRecord:
    return BenchRecord(
        task="gsm8k",
        method="single",
        model="llama:/models/m.gguf",
        settings=settings,
        trial=0,
        question_id=question,
        reference="1",
        answer="1" if correct else "2",
        correct=correct,
        tokens=tokens,
    )


def test_a_method_is_paired_on_shared_questions_across_prompt_sets_only():
    plain = "temperature=0.7 seed=0"
    moot_prompts = [
        _record("q1", True, plain),
        _record("q2", True, plain),
        _record("q3", False, plain),
        _record("q4", True, plain),  # not run with Du's prompts: left out
        # the same method with tools is another run, not moot's prompts: never paired
        _record("q1", False, plain + " tools=calculator tool_choice=first", tokens=900),
    ]
    du = [
        _record("q1", True, plain + " prompts=du-gsm8k", tokens=300),
        _record("q2", False, plain + " prompts=du-gsm8k", tokens=300),
        _record("q3", True, plain + " prompts=du-gsm8k", tokens=300),
    ]
    (row,) = compare_folders.pair(moot_prompts, du)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:5] == ["gsm8k", "m.gguf", "single", plain, "3"]
    assert cells[5].startswith("66.7%") and cells[6].startswith("66.7%")
    assert cells[7:10] == ["100", "300", "1 / 1"]
