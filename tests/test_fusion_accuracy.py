"""benchmarks/fusion_accuracy.py: one row per learned gate, named by the prompt it learned on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_ROOT = Path(__file__).parent.parent / "benchmarks"
_spec = importlib.util.spec_from_file_location("fusion_accuracy", _ROOT / "fusion_accuracy.py")
assert _spec and _spec.loader
fusion_accuracy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fusion_accuracy)

BARE = str(_ROOT / "results" / "fusion" / "gate-qwen0.5b-1.5b.json")
DU = str(_ROOT / "results" / "fusion" / "gate-du-qwen0.5b-1.5b.json")


def test_each_gate_gets_its_own_row_at_its_30_percent_threshold():
    table = fusion_accuracy.settings("/m/small.gguf", "/m/large.gguf", [BARE, DU])
    assert table["colm gate"].endswith(f"gate={BARE}&threshold=0.888")
    assert table["colm gate du"].endswith(f"gate={DU}&threshold=0.874")
    assert fusion_accuracy.folder("gsm8k", "colm gate du", "du").parts[-2:] == (
        "gsm8k",
        "colm_gate_du",
    )
    assert "colm gate" not in fusion_accuracy.settings("/m/s.gguf", "/m/l.gguf", [])


def test_a_gate_on_another_prompt_is_named_by_its_file():
    name = fusion_accuracy.gate_name("/g/gate-mmlu.json", "Answer this: {question}")
    assert name == "colm gate gate-mmlu"


def test_a_marginal_likelihood_gate_is_named_apart():
    du = fusion_accuracy.question_template("du-gsm8k")
    assert fusion_accuracy.gate_name("/g/x.json", du, "marginal likelihood") == (
        "colm gate du marginal"
    )
    assert fusion_accuracy.gate_name("/g/x.json", "{question}", "weak labels") == "colm gate"
