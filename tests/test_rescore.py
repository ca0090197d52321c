"""benchmarks/rescore.py: new answers from a cached rerun, first-run costs kept."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_SCRIPT = Path(__file__).parent.parent / "benchmarks" / "rescore.py"
_spec = importlib.util.spec_from_file_location("rescore", _SCRIPT)
assert _spec and _spec.loader
rescore = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rescore)


def _record(question: str, method: str, answer: str | None, calls: int, seconds: float) -> dict:
    return {
        "task": "mmlu",
        "method": method,
        "model": "llama:/m.gguf",
        "settings": "seed=0",
        "trial": 0,
        "question_id": question,
        "answer": answer,
        "correct": answer == "D",
        "calls": calls,
        "cached_calls": 0 if calls else 3,
        "seconds": seconds,
        "per_round": [{"round": 1, "vote": answer, "calls": calls}],
    }


def test_answers_come_from_the_rerun_and_costs_from_the_first_run():
    old = [
        _record("q1", "vote-3", None, calls=3, seconds=40.0),  # \boxed{\text{D}}, unread before
        _record("q2", "vote-3", "A", calls=3, seconds=30.0),
        _record("q1", "debate-3x2", "A", calls=6, seconds=90.0),  # not in this rescore
    ]
    new = [
        _record("q2", "vote-3", "A", calls=0, seconds=0.1),
        _record("q1", "vote-3", "D", calls=0, seconds=0.1),
    ]
    merged, changed = rescore.merge(old, new)
    assert changed == 1
    assert [(r["question_id"], r["method"]) for r in merged] == [
        ("q1", "vote-3"),
        ("q2", "vote-3"),
        ("q1", "debate-3x2"),
    ]
    first = merged[0]
    assert (first["answer"], first["correct"]) == ("D", True)
    assert (first["calls"], first["cached_calls"], first["seconds"]) == (3, 0, 40.0)
    assert first["per_round"] == [{"round": 1, "vote": "D", "calls": 3}]
    assert merged[2] == old[2]


def test_transcripts_keep_their_usage_and_take_the_new_answers():
    key = ["mmlu", "vote-3", "llama:/m.gguf", "seed=0", 0, "q1"]
    usage = {"calls": 1, "cached_calls": 0}
    old = [
        {
            "key": key,
            "turns": [
                {
                    "text": "\\boxed{\\text{D}}",
                    "answer": None,
                    "answer_error": "no choice",
                    "usage": usage,
                }
            ],
        }
    ]
    new = [
        {
            "key": key,
            "turns": [
                {
                    "text": "\\boxed{\\text{D}}",
                    "answer": "D",
                    "answer_error": None,
                    "usage": {"calls": 0},
                }
            ],
        }
    ]
    (entry,) = rescore.merge_transcripts(old, new)
    assert entry["turns"][0] == {
        "text": "\\boxed{\\text{D}}",
        "answer": "D",
        "answer_error": None,
        "usage": usage,
    }
