"""benchmarks/debate_diagnosis.py: where each changed debate answer came from."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from moot.bench.records import BenchRecord, RoundRecord

_SCRIPT = Path(__file__).parent.parent / "benchmarks" / "debate_diagnosis.py"
_spec = importlib.util.spec_from_file_location("debate_diagnosis", _SCRIPT)
assert _spec and _spec.loader
diagnosis = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(diagnosis)


def _round(answers: dict[str, str], reference: str, vote: str) -> RoundRecord:
    correct = {agent: answer == reference for agent, answer in answers.items()}
    return RoundRecord(
        round=1,
        answers=answers,
        correct=correct,
        vote=vote,
        vote_correct=vote == reference,
        agreement=1.0,
        tokens=0,
        calls=0,
    )


def test_a_changed_answer_is_traced_to_the_plurality_a_minority_or_no_peer(tmp_path):
    rounds = [
        _round({"a": "5", "b": "5", "c": "7"}, reference="5", vote="5"),
        # a: right -> the minority's wrong 7; b: right -> 9, which nobody said; c: wrong -> 5
        _round({"a": "7", "b": "9", "c": "5"}, reference="5", vote="7"),
        # a: wrong -> c's right 5 (c alone said it); b: wrong -> wrong 7 (not a change)
        _round({"a": "5", "b": "7", "c": "5"}, reference="5", vote="5"),
    ]
    record = BenchRecord(
        task="t",
        method="debate-3x3",
        model="m",
        settings="temperature=0.7 max_tokens=512 seed=0",
        trial=0,
        question_id="q1",
        reference="5",
        answer="5",
        correct=True,
        per_round=rounds,
    )
    (tmp_path / "results.jsonl").write_text(record.model_dump_json() + "\n")
    counts = diagnosis.diagnose(tmp_path)["debate-3x3 (temperature=0.7 max_tokens=512 seed=0)"]
    changes = {key: n for key, n in counts.items() if "->" in key}
    assert changes == {
        "right->wrong (took up a minority peer's answer)": 1,
        "right->wrong (an answer no peer gave)": 1,
        "wrong->right (took up the plurality)": 1,
        "wrong->right (took up a minority peer's answer)": 1,
    }
    # The report's by-round table splits the same changes: plurality / minority / own.
    from moot.bench import write_report

    report = write_report([record], tmp_path).read_text()
    assert "| debate-3x3 | 2 | 0.0% | 100% | 2 (0 / 1 / 1) | 1 (1 / 0 / 0) |" in report
    assert "| debate-3x3 | 3 | 100.0% | 100% | 0 | 1 (0 / 1 / 0) |" in report
