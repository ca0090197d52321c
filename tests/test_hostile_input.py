"""Hostile files and values handed to moot (issue 36: items 3, 10 and 11): YAML alias bombs and
deep nesting, deep or broken JSONL, `..` in `hf:` specs, and expressions that once broke the
calculator. Each ends in an answer or one `error:` line, never a traceback or a long wait."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import moot
from moot.bench import ResultStore
from moot.bench.tasks import load_jsonl
from moot.cli import main
from moot.errors import ConfigError
from moot.fusion.gates import LearnedGate
from moot.tools import CalculatorError, calculate
from tests.test_cli import one_error_line

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
)
"""A "billion laughs": 9 anchors of 9 aliases each, 9**9 values once expanded."""


def written(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- YAML: society files and merge recipes -------------------------------------------------------


@pytest.mark.timeout(20)
@pytest.mark.parametrize("command", [["run", "FILE", "q"], ["merge", "FILE", "-o", "out.gguf"]])
def test_a_yaml_alias_bomb_is_refused_at_its_line_before_it_expands(capsys, tmp_path, command):
    bomb = written(tmp_path / "bomb.yaml", BOMB)
    err = one_error_line(capsys, *(bomb if part == "FILE" else part for part in command))
    assert f"{bomb}:5: aliases expand to more than 20,000 values" in err
    assert "write the repeated parts out" in err


def test_an_alias_inside_its_own_anchor_is_refused(capsys, tmp_path):
    society = written(tmp_path / "loop.yaml", "agents: &a\n  - {name: x}\n  - *a\n")
    err = one_error_line(capsys, "run", society, "q")
    assert f"{society}:3: alias *a is inside its own anchor &a" in err


@pytest.mark.parametrize(
    "nested",
    [
        "agents: " + "[" * 5000 + "]" * 5000 + "\n",
        "".join("  " * depth + "k:\n" for depth in range(500)),  # 5,000 deep is 25 MB: too large
    ],
    ids=["flow", "block"],
)
@pytest.mark.parametrize("command", [["run", "FILE", "q"], ["merge", "FILE", "-o", "out.gguf"]])
def test_yaml_nested_5000_deep_is_refused_at_its_line(capsys, tmp_path, nested, command):
    deep = written(tmp_path / "deep.yaml", nested)
    err = one_error_line(capsys, *(deep if part == "FILE" else part for part in command))
    assert f"{deep}:" in err and "nested more than 100 levels deep: flatten the file" in err


def test_a_society_file_with_anchors_and_merge_keys_still_runs(capsys, tmp_path):
    society = written(
        tmp_path / "anchors.yaml",
        "agents:\n"
        "  - &agent {name: a, role: debater, temperature: 0.2}\n"
        "  - {<<: *agent, name: b}\n"
        "  - {<<: *agent, name: c}\n"
        "protocol: {kind: debate, rounds: 1}\n",
    )
    status = main(["run", society, "q", "--model", "test:Answer: 7", "--json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert [turn["agent"] for turn in json.loads(out)["turns"]] == ["a", "b", "c"]


# -- JSON and JSONL: bench data, bench folders, run records, gate files --------------------------


def test_a_bench_data_line_nested_100000_deep_is_one_error_line(capsys, tmp_path):
    data = written(tmp_path / "deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n")
    err = one_error_line(capsys, "bench", "--data", data, "--model", "test", "--out", "o")
    assert f"{data}:1: JSON nested too deeply to read" in err


@pytest.mark.timeout(20)  # the quadratic check took 46 s
def test_sixty_thousand_questions_load_and_repeated_ids_are_named_briefly(tmp_path):
    lines = [json.dumps({"id": f"q{n}", "question": "1+1?", "answer": 2}) for n in range(60_000)]
    assert len(load_jsonl(written(tmp_path / "many.jsonl", "\n".join(lines))).questions) == 60_000
    twice = written(tmp_path / "twice.jsonl", "\n".join(lines + lines))
    with pytest.raises(ConfigError, match=r"repeated: q0, q1, q2, .*, q9 and 59990 more$"):
        load_jsonl(twice)


def test_a_line_separator_inside_a_question_is_not_a_line_end(tmp_path):
    data = tmp_path / "sep.jsonl"
    data.write_text('{"question": "a\u2028b\u0085c?", "answer": "1"}\n', encoding="utf-8")
    assert load_jsonl(data).questions[0].question == "a\u2028b\u0085c?"


def bench_folder(capsys, out: Path) -> None:
    assert main(["bench", "--data", "arithmetic", "--limit", "2", "--model", "test",
                 "--methods", "single", "--out", str(out)]) == 0  # fmt: skip
    capsys.readouterr()


def test_a_byte_that_is_not_utf8_in_results_jsonl_spoils_only_its_line(capsys, tmp_path):
    bench_folder(capsys, tmp_path)
    results = tmp_path / "results.jsonl"
    first, second = results.read_bytes().splitlines()
    results.write_bytes(first + b"\n" + second.replace(b'"single"', b'"caf\xe9"', 1) + b"\n")
    assert main(["show", str(tmp_path), "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    bench_folder(capsys, tmp_path)  # resumes: runs the spoiled question again
    ids = sorted(record.question_id for record in ResultStore(tmp_path).records())
    assert ids == ["arith-0-0", "arith-0-1"]


def test_a_line_separator_inside_a_result_is_not_a_line_end(capsys, tmp_path):
    bench_folder(capsys, tmp_path)
    results = tmp_path / "results.jsonl"
    records = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    records[0]["answer"] = "7\u20288"
    results.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    assert [record.answer for record in ResultStore(tmp_path).records()][0] == "7\u20288"


def test_a_results_file_that_cannot_be_read_is_one_error_line(capsys, tmp_path):
    (tmp_path / "results.jsonl").mkdir()
    assert "cannot read" in one_error_line(capsys, "show", str(tmp_path))


def test_a_run_record_nested_deeply_or_not_utf8_is_one_error_line(capsys, tmp_path):
    deep = written(tmp_path / "deep.json", '{"turns": ' + "[" * 100_000)
    assert "is not a run record" in one_error_line(capsys, "show", deep)
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"question": "caf\xe9"}')
    assert "is not a run record" in one_error_line(capsys, "show", str(latin))


def test_a_run_record_that_cannot_be_read_is_one_error_line(capsys, tmp_path, monkeypatch):
    def denied(path: Path) -> bytes:
        raise PermissionError(13, "Permission denied")  # what chmod 0 gives anyone but root

    record = written(tmp_path / "run.json", "{}")
    monkeypatch.setattr(Path, "read_bytes", denied)
    assert f"cannot read {record}: Permission denied" in one_error_line(capsys, "show", record)


def test_a_gate_file_nested_deeply_is_refused(tmp_path):
    gate = written(tmp_path / "gate.json", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="not a gate file: its JSON is nested too deeply"):
        LearnedGate.load(gate)


# -- model specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["hf:o/r/../x.gguf", "hf:o/r/./x.gguf", "hf:o/r/a\\..\\x.gguf"])
def test_an_hf_spec_with_dot_segments_is_one_error_line(capsys, spec):
    err = one_error_line(capsys, "debate", "q", "--model", spec)
    assert "'.' and '..' are not part of a file's name" in err


# -- the calculator ------------------------------------------------------------------------------


def test_the_calculator_adds_a_thousand_ones_and_a_tower_of_powers_is_refused():
    assert calculate("+".join(["1"] * 1000)) == "1000"
    assert calculate("-" * 999 + "1") == "-1"
    with pytest.raises(CalculatorError, match="more than 1000 digits"):
        calculate("2**" * 1000 + "2")


@pytest.mark.parametrize(
    "expression, problem",
    [
        ("+".join(["1"] * 100_000), "is too long or nested too deeply: compute it in parts"),
        ("-" * 10_000 + "1", "is too long or nested too deeply: compute it in parts"),
        ("1e999", "a number with a decimal point or an exponent is over 1.8e308"),
        ("10**10**10", "more than 1000 digits"),
        ("1 +" * 7000, "is not an arithmetic expression"),
        ("1\x002", "is not an arithmetic expression"),
    ],
)
def test_the_calculator_says_briefly_what_it_will_not_compute(expression, problem):
    with pytest.raises(CalculatorError, match=problem) as refused:
        calculate(expression)
    assert len(str(refused.value)) < 160


def test_an_integer_of_five_thousand_digits_in_a_society_file_is_one_error_line(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("agents:\n  - {name: a, copies: " + "9" * 5000 + "}\n")
    with pytest.raises(moot.ConfigError, match="big.yaml"):
        moot.load_society(path)


def test_a_folder_given_as_a_llama_model_is_called_a_folder(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(moot.ModelSpecError, match="is a folder, not a GGUF file.*m.gguf"):
        moot.load_model(f"llama:{tmp_path}")


def test_a_mixture_with_absurd_layers_names_layers():
    with pytest.raises(moot.ConfigError, match="layers: a mixture takes at most 100 layers"):
        moot.MixtureOfAgents(layers=10_000_000)


def test_a_society_file_over_a_mebibyte_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("# filler\n" * 200_000)
    with pytest.raises(moot.ConfigError, match="too large for a society file"):
        moot.load_society(path)


def test_moot_debate_refuses_ten_million_agents_before_building_them(capsys):
    assert main(["debate", "q", "--model", "test", "--agents", "10000000"]) == 2
    assert "at most 1,000 agents" in capsys.readouterr().err


def test_a_record_claiming_a_billion_rounds_shows_the_rounds_it_holds(tmp_path, capsys):
    model = moot.load_model("test")
    society = moot.Society(
        agents=[moot.Agent(name="a", model=model)], protocol=moot.Debate(rounds=1)
    )
    result = society.run("q")
    record = json.loads(result.model_dump_json())
    for rounds in (10_000_000, 1e9):
        path = tmp_path / "r.json"
        path.write_text(json.dumps({**record, "rounds": rounds}))
        for kind in ("md", "html"):
            assert main(["show", str(path), "--format", kind]) == 0
            out = capsys.readouterr().out
            assert len(out) < 20_000 and out.count("round 2") == out.count("Round 2") == 0
