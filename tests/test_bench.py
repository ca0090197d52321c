"""`moot bench`: tasks, checkers, methods, the runner (local and Ray), metrics and the report."""

from __future__ import annotations

import json
import re
import sys
import threading
from typing import Any

import pytest

import moot
from moot.aggregate.extract import extract_square
from moot.bench import (
    BenchPlan,
    MethodSettings,
    ResultStore,
    arithmetic,
    build_method,
    compare,
    load_jsonl,
    run_bench,
    summarise,
    write_report,
)
from moot.bench.metrics import Interval, format_p, mcnemar_exact
from moot.bench.tasks import Question, accepted_answers, chess_destination, choice_letter, numeric
from moot.cli import main
from moot.errors import ConfigError
from moot.models import PROFILES
from moot.testing import ScriptedChatModel

_EXPRESSION = re.compile(r"What is the result of ([\d+*-]+)\?")
_NAME = re.compile(r"Your name is (\w+)\.")


def solver(messages) -> str:
    """agent1 is always right; agent2 is right alone but wrong once it sees its peers; agent3 is
    wrong alone and right once it sees its peers. Single agents are agent1."""
    name = _NAME.search(messages[0].text).group(1)
    question = next(m.text for m in messages if _EXPRESSION.search(m.text))
    right = eval(_EXPRESSION.search(question).group(1))  # noqa: S307 - digits and + * - only
    debating = len(messages) > 2
    if name == "agent2" and debating:
        return f"Answer: {right + 1}"
    if name == "agent3" and not debating:
        return f"Answer: {right + 7}"
    return f"Work.\nAnswer: {right}"


def scripted(delay: float = 0.0) -> ScriptedChatModel:
    return ScriptedChatModel(respond=solver, delay=delay)


def plan_for(model, methods=("single", "vote-3", "debate-3x2"), questions=4, **options):
    return BenchPlan(
        task=arithmetic(questions, seed=3, low=0, high=9),
        methods=list(methods),
        settings=MethodSettings(model=model),
        **options,
    )


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


# Tasks and checkers


def test_arithmetic_is_seeded_and_answers_are_right():
    task = arithmetic(20, seed=5, low=0, high=9)
    assert task == arithmetic(20, seed=5, low=0, high=9)
    assert task.questions != arithmetic(20, seed=6, low=0, high=9).questions
    for question in task.questions:
        expression = _EXPRESSION.search(question.question).group(1)
        assert all(0 <= int(n) <= 9 for n in re.findall(r"\d+", expression))
        assert str(eval(expression)) == question.answer  # noqa: S307
    assert task.name == "arithmetic-5-0-9"


def test_load_jsonl_recognises_the_shared_formats(tmp_path):
    gsm = load_jsonl(write_jsonl(tmp_path / "gsm.jsonl", [{"question": "2+2?", "answer": "4"}]))
    assert gsm.extract == "number" and gsm.questions[0].id == "gsm-1"
    assert gsm.is_correct("4.0", gsm.questions[0]) and not gsm.is_correct("5", gsm.questions[0])

    choices = {"A": "red", "B": "blue"}
    mmlu = load_jsonl(
        write_jsonl(
            tmp_path / "mc.jsonl", [{"question": "Sky?", "choices": choices, "answer": "b"}]
        )
    )
    question = mmlu.questions[0]
    assert mmlu.extract == "choice" and question.answer == "B"
    assert "(A) red\n(B) blue" in question.question
    assert mmlu.is_correct("B", question) and not mmlu.is_correct("A", question)
    listed = load_jsonl(
        write_jsonl(tmp_path / "l.jsonl", [{"question": "Q", "choices": ["x", "y"], "answer": "A"}])
    )
    assert "(B) y" in listed.questions[0].question

    record = {"id": "m0", "question": "Q", "answer": "2", "accepted": ["2", "2.0"]}
    math = load_jsonl(write_jsonl(tmp_path / "m.jsonl", [record]))
    assert math.extract == "number" and math.is_correct("2", math.questions[0])

    chess = load_jsonl(
        write_jsonl(
            tmp_path / "chess.jsonl",
            [{"id": "c0", "moves": "e2e4 e7e5 g1", "valid_destinations": ["f3", "h3", "e2"]}],
        )
    )
    question = chess.questions[0]
    assert chess.extract == "square" and '"g1"' in question.question
    assert chess.is_correct("h3", question) and not chess.is_correct("g3", question)
    assert chess.name == f"{tmp_path.name}/chess"


def test_any_jsonl_with_your_own_fields_extractor_and_checker(tmp_path):
    path = write_jsonl(tmp_path / "own.jsonl", [{"q": "Capital of France?", "gold": "paris"}])
    task = load_jsonl(
        path,
        question_field="q",
        answer_field="gold",
        extract=lambda reply: reply.split()[-1].lower(),
        check=lambda answer, question: answer == question.answer,
    )
    assert task.questions[0].question == "Capital of France?"
    assert task.is_correct(task.extract("It is Paris"), task.questions[0])  # type: ignore[operator]


@pytest.mark.parametrize(
    "lines, message",
    [
        ('{"question": "a", "answer": "1"}\nnot json\n', "bad.jsonl:2: not valid JSON"),
        ('{"question": "a"}\n', "bad.jsonl:1: no 'answer' field (fields: question)"),
        ('{"question": "a", "choices": ["x"], "answer": "C"}\n', "not one of the choices A"),
        ("\n", "no questions"),
        ('{"id": 1, "question": "a", "answer": "1"}\n' * 2, "repeated: 1"),
        ("[1, 2]\n", "bad.jsonl:1: each line must be a JSON object"),
    ],
)
def test_bad_data_files_say_where_and_what(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(lines)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_jsonl(path)


def test_missing_data_file():
    with pytest.raises(ConfigError, match="cannot read data file /no/such.jsonl"):
        load_jsonl("/no/such.jsonl")


def test_checkers():
    question = Question(id="q", question="?", answer="1600")
    check = numeric()
    assert check("1,600", question) and check("1600.0000001", question)
    assert not check("1601", question) and not check(None, question)
    assert numeric(tolerance=0.01)("1610", question)
    letter = Question(id="q", question="?", answer="C")
    assert choice_letter("c", letter) and not choice_letter("D", letter)
    listed = Question(id="q", question="?", answer="1/2", accepted=["1/2", "0.5", "one half"])
    assert accepted_answers("0.50", listed) and accepted_answers("One half.", listed)
    assert not accepted_answers("0.6", listed) and not accepted_answers(None, listed)
    squares = Question(id="q", question="?", answer="f3", accepted=["f3", "h3"])
    assert chess_destination("H3", squares) and not chess_destination("h4", squares)


def test_extract_square():
    assert extract_square("The knight can go to f3 or h3.\nAnswer: h3") == "h3"
    assert extract_square("Moving to E5 is valid") == "e5"
    assert extract_square("no squares here, i9 is off the board") is None


# Methods


def test_methods_build_the_societies_they_name(tmp_path):
    settings = MethodSettings(model=scripted())

    def build(spec):
        return build_method(spec, "number", settings)

    assert [len(build(s).agents) for s in ("single", "vote-5", "self-consistency-2")] == [1, 5, 2]
    debate = build("debate-2x3")
    assert len(debate.agents) == 2 and debate.protocol.rounds == 3
    som = build("machinesom-oc1-debate-reflect-debate")
    assert [a.trait for a in som.agents] == ["overconfident", "easy-going", "easy-going"]
    assert som.aggregator.min_votes == 2 and som.protocol.strategy == [
        "debate",
        "reflect",
        "debate",
    ]
    moa = build("moa-3x2")
    assert isinstance(moa.aggregator, moot.Judge) and moa.protocol.layers == 2
    assert build("debate-3x2").protocol.peer_view == "full"
    shown_answers = build("debate-3x3-consensus-answers").protocol
    assert (shown_answers.peer_view, shown_answers.consensus) == ("answer", 1.0)
    cascade = build("cascade-3")
    assert cascade.protocol.tiers == [["cheap1", "cheap2", "cheap3"], ["strong"]]
    society_file = tmp_path / "s.yaml"
    society_file.write_text(
        "agents:\n  - {name: x, copies: 2}\naggregator: {kind: vote, extract: text}\n"
    )
    from_file = build_method(
        str(society_file), "choice", settings.model_copy(update={"override": True})
    )
    assert from_file.aggregator.extract == "choice"  # the task decides the answer format
    assert all(agent.model is settings.model for agent in from_file.agents)
    for bad in ("vote", "machinesom-debate-debate", "mystery"):
        with pytest.raises(ConfigError, match=r"unknown method .* use default .*, single, vote-N"):
            build(bad)


def test_an_early_stopping_vote_is_vote_n_in_windows_and_reuses_its_cached_calls(tmp_path):
    settings = MethodSettings(model=scripted())
    esc = build_method("vote-5-stop2", "number", settings)
    assert esc.protocol.tiers == [["agent1", "agent2"], ["agent3", "agent4"], ["agent5"]]
    assert (esc.protocol.threshold, esc.protocol.decide) == (1.0, "all")
    vote = build_method("vote-5", "number", settings)
    assert [a.seed for a in esc.agents] == [a.seed for a in vote.agents]
    mixed = build_method("vote-3-pal2-stop2", "number", settings)
    assert mixed.protocol.tiers == [["agent1", "program1"], ["agent2", "program2"], ["agent3"]]
    default = build_method("vote-3-pal2", "number", settings)
    assert [(a.name, a.kind, a.seed) for a in mixed.agents] == [
        (a.name, a.kind, a.seed) for a in default.agents
    ]
    for bad in ("vote-2-stop3", "vote-3-stop1", "vote-1-pal1-stop3"):  # one always agrees
        with pytest.raises(ConfigError, match="W must be from 2 .* to the number of agents"):
            build_method(bad, "number", settings)
    for bad in ("vote-3-stop2-keep", "debate-3x2-stop2"):
        with pytest.raises(ConfigError, match="unknown method"):
            build_method(bad, "number", settings)
    for bad in ("vote-3-stop0", "vote-0-stop2", "vote-3-pal0-stop2", "debate-0x2", "debate-3x0"):
        with pytest.raises(ConfigError, match="every count is 1 or more"):
            build_method(bad, "number", settings)
    for bad in ("vote-03", "vote-3-stop02", "debate-3x02"):  # apart from vote-3's records
        with pytest.raises(ConfigError, match="without leading zeros"):
            build_method(bad, "number", settings)
    with pytest.raises(ConfigError, match=r"e\.g\. vote-3-pal3-stop2"):
        build_method("vote-3-pal3-stop7", "number", settings)

    model = scripted()  # answers every question right, so the first window always agrees
    plan = plan_for(model, methods=["vote-4", "vote-4-stop2"], questions=3)
    plan = plan.model_copy(update={"cache": str(tmp_path / "calls.sqlite")})
    run_bench(plan, tmp_path, concurrency=1, progress=False, report=False)
    assert len(model.calls) == 4 * 3  # the vote's; the early-stopping vote's came from the cache
    stopped = [r for r in ResultStore(tmp_path).records() if r.method == "vote-4-stop2"]
    assert [(r.correct, r.calls, r.cached_calls) for r in stopped] == [(True, 0, 2)] * 3


def test_a_debate_of_answers_shows_peers_their_answers_only(tmp_path):
    model = scripted()
    plan = plan_for(model, methods=["debate-3x2", "debate-3x2-answers", "vote-6"], questions=2)
    run_bench(plan, tmp_path, concurrency=1, progress=False, report=False)
    updates = [call[-1].text for call in model.calls if len(call) > 2]
    # question by question, method by method: 3 round-2 updates of each debate, twice
    assert ["Work." in text for text in updates] == ([True] * 3 + [False] * 3) * 2
    answers_only = updates[3:6] + updates[9:12]
    assert all(len(re.findall(r"```\n-?\d+\n```", text)) == 2 for text in answers_only)
    assert all("their work is not shown" in text for text in answers_only)
    report = write_report(ResultStore(tmp_path).records(), tmp_path).read_text()
    assert "| debate-3x2-answers | vote-6 | 2 |" in report


def test_trials_seed_every_agent_differently():
    settings = MethodSettings(model=scripted(), seed=10)
    first = build_method("moa-2x1", "number", settings, trial=0)
    second = build_method("moa-2x1", "number", settings, trial=1)
    seeds = [a.seed for a in first.agents] + [first.aggregator.agent.seed]
    assert seeds == [10, 11, 12]
    assert [a.seed for a in second.agents] == [1010, 1011]


# Runner, metrics, report


def test_local_run_records_cost_rounds_and_changes(tmp_path):
    model = scripted()
    records = run_bench(plan_for(model), tmp_path, progress=False, report=False)
    assert len(records) == 12 and len(model.calls) == 4 * (1 + 3 + 6)
    by_method = {s.method: s for s in summarise(records)}
    assert by_method["single"].accuracy.value == 1.0
    debate = by_method["debate-3x2"]
    assert debate.calls == 6 and debate.tokens > by_method["vote-3"].tokens
    first, second = debate.by_round
    assert (first.accuracy, second.accuracy) == (1.0, 1.0)
    assert first.agreement == pytest.approx(2 / 3)
    # every question: agent2 right -> wrong, agent3 wrong -> right
    assert (second.right_to_wrong, second.wrong_to_right) == (4, 4)
    record = next(r for r in records if r.method == "debate-3x2")
    assert record.per_round[1].correct == {"agent1": True, "agent2": False, "agent3": True}
    assert record.calls == sum(r.calls for r in record.per_round) == 6
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 12


def test_rerun_skips_what_is_done(tmp_path):
    model = scripted()
    first = run_bench(plan_for(model, questions=2), tmp_path, progress=False, report=False)
    calls = len(model.calls)
    again = run_bench(plan_for(model, questions=2), tmp_path, progress=False, report=False)
    assert len(model.calls) == calls and again == first
    more = run_bench(plan_for(model, questions=3), tmp_path, progress=False, report=False)
    assert len(more) == 9 and len(model.calls) == calls + 10
    assert len(ResultStore(tmp_path).records()) == 9
    with (tmp_path / "results.jsonl").open("a") as handle:
        handle.write('{"task": "arithmetic-3-0-9", "meth')  # a run killed mid-line
    again = run_bench(plan_for(model, questions=3), tmp_path, progress=False, report=False)
    assert again == more and len(model.calls) == calls + 10
    other_settings = plan_for(model, questions=1)
    other_settings.settings.temperature = 0.2  # different settings are different results
    run_bench(other_settings, tmp_path, progress=False, report=False)
    assert len(ResultStore(tmp_path).records()) == 12


class SmallWindow(ScriptedChatModel):
    """A scripted model with an 80-word context window (declared in its profile)."""

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        PROFILES.declare(self, context_window=80)

    def get_num_tokens(self, text: str) -> int:
        return len(text.split())


def test_failed_turns_and_failed_questions_are_recorded_not_fatal(tmp_path):
    def flaky(messages):
        if "agent2" in messages[0].text:
            raise TimeoutError("model timed out")
        return solver(messages)

    task = arithmetic(2, seed=1, low=0, high=9)
    long = "What is the result of 1+1? " + "Think hard. " * 50
    task.questions.append(Question(id="long", question=long, answer="2"))
    model = SmallWindow(respond=flaky)
    plan = BenchPlan(task=task, methods=["debate-3x2"], settings=MethodSettings(model=model))
    records = {r.question_id: r for r in run_bench(plan, tmp_path, progress=False, report=False)}
    assert "context window is 80" in records["long"].error and not records["long"].correct
    normal = records["arith-1-0"]
    assert normal.failed_turns == 2 and normal.correct and normal.error is None
    assert summarise(list(records.values()))[0].errors == 1


def test_trials_and_paired_comparison(tmp_path):
    plan = plan_for(scripted(), ("single", "vote-3"), trials=2)
    records = run_bench(plan, tmp_path, progress=False, report=False)
    single = next(s for s in summarise(records) if s.method == "single")
    assert single.trials == 2 and single.runs == 8 and single.trial_accuracy == [1.0, 1.0]
    paired = compare(records, "single", "vote-3")
    assert (paired.pairs, paired.both, paired.only_baseline, paired.only_method) == (8, 8, 0, 0)


def test_statistics():
    none = Interval.wilson(0, 10)
    assert none.low == 0 and none.high == pytest.approx(0.2775, abs=1e-4)
    half = Interval.wilson(5, 10)
    assert (half.low, half.high) == (
        pytest.approx(0.2366, abs=1e-4),
        pytest.approx(0.7634, abs=1e-4),
    )
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert format_p(mcnemar_exact(0, 12)) == "<0.001" and format_p(0.0625) == "0.062"


def test_report_has_tables_and_plots(tmp_path):
    records = run_bench(plan_for(scripted()), tmp_path, progress=False, report=False)
    report = write_report(records, tmp_path, ["single", "vote-3", "debate-3x2"]).read_text()
    assert "| single | 4 | 1 | 100.0% [51.0, 100.0] |" in report
    # agent2 leaves the right plurality for an answer of its own; agent3 takes the plurality up
    assert "| debate-3x2 | 2 | 100.0% | 67% | 4 (0 / 0 / 4) | 4 (4 / 0 / 0) |" in report
    assert "| single | 1 | 100.0% | - | 0 | 0 |" in report  # no agreement with one agent
    assert "### Paired against single" in report
    assert "| vote-3 | 3 | 66.7% | 0.0% | 100.0% |" in report  # agent3 is wrong alone
    for png in ("accuracy_vs_tokens.png", "accuracy_by_round.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in report


def test_a_report_with_fewer_sections_leaves_no_plots_of_the_old_one(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need the 'bench' extra")  # in moot[dev]
    records = run_bench(plan_for(scripted(), ("single",)), tmp_path, progress=False, report=False)
    other = [r.model_copy(update={"settings": r.settings + " tools=calculator"}) for r in records]
    write_report(records + other, tmp_path)
    assert (tmp_path / "accuracy_by_round-2.png").exists()
    write_report(records, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "accuracy_by_round.png",
        "accuracy_vs_tokens.png",
    ]


def test_the_report_pairs_each_debate_with_the_vote_of_as_many_calls(tmp_path):
    methods = ("single", "vote-4", "debate-2x2", "debate-2x2-consensus", "debate-3x2")
    records = run_bench(plan_for(scripted(), methods), tmp_path, progress=False, report=False)
    report = write_report(records, tmp_path, list(methods)).read_text()
    section = report.split("### Debate against the vote of as many calls")[1].split("###")[0]
    assert "| debate-2x2 | vote-4 | 4 | 4 | 0 | 0 | 0 | 1.000 |" in section
    assert "| debate-2x2-consensus | vote-4 |" in section
    assert "debate-3x2" not in section  # no vote-6 was run


def test_ray_backend_gives_the_local_results(tmp_path):
    pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra")  # in moot[dev]
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    plan = plan_for(scripted(delay=0.01), ("single", "debate-3x2", "moa-2x2"), questions=6)
    local = run_bench(plan, tmp_path / "local", progress=False, report=False)
    on_ray = run_bench(
        plan, tmp_path / "ray", backend="ray", workers=2, progress=False, report=False
    )

    def comparable(records):
        dumped = [r.model_dump(exclude={"seconds"}) for r in records]  # wall time varies
        return sorted(dumped, key=lambda record: (record["method"], record["question_id"]))

    assert len(on_ray) == 18
    assert json.dumps(comparable(on_ray), sort_keys=True) == json.dumps(
        comparable(local), sort_keys=True
    )
    assert not ray.is_initialized()  # the local instance it started is shut down


# CLI


@pytest.fixture
def scripted_backend():
    from moot.models import BACKENDS, register_backend

    register_backend("scripted", lambda rest, options: scripted(), "scripted:solver (tests)")
    yield
    BACKENDS.remove("scripted")


def test_cli_bench_writes_results_report_and_plots(tmp_path, scripted_backend, capsys):
    sums = [
        {
            "id": f"s{n}",
            "question": f"What is the result of {n}+{n}*2+1-0*0?",
            "answer": str(3 * n + 1),
        }
        for n in range(5)
    ]
    data = write_jsonl(tmp_path / "sums.jsonl", sums)
    out = tmp_path / "out"
    argv = ["bench", "--data", str(data), "--limit", "3", "--methods", "single,debate-3x2"]
    argv += ["--prompts", "moot"]  # (the token count below is of moot's prompts)
    assert main([*argv, "--model", "scripted:solver", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "debate-3x2" in printed and f"report: {out}/report.md" in printed
    # No terminal here: progress comes as one line per finished question, for a log.
    progress = [line for line in captured.err.splitlines() if " (trial 0): " in line]
    finished = sorted(line.split(" (trial")[0] for line in progress)
    assert finished == [f"{m} s{n}" for m in ("debate-3x2", "single") for n in range(3)]
    assert all(": right, " in line and "acc 100.0%" in line for line in progress)
    assert (
        "| debate-3x2 | 3 | 1 | 100.0% [43.8, 100.0] | 448 | 6.0 |"
        in (out / "report.md").read_text()
    )
    assert len((out / "results.jsonl").read_text().splitlines()) == 6
    assert (out / "accuracy_vs_tokens.png").exists() and (out / "accuracy_by_round.png").exists()
    assert main(["bench", "--data", str(data), "--out", str(out), "--report-only"]) == 0


def test_cli_bench_arithmetic_and_errors(tmp_path, scripted_backend, capsys):
    out = str(tmp_path / "out")
    argv = ["bench", "--data", "arithmetic", "--range", "0-9", "--limit", "3", "--out", out]
    argv[1:1] = ["--prompts", "moot"]  # (the scripted solver reads moot's system prompt)
    assert main([*argv, "--model", "scripted:solver", "--methods", "vote-3"]) == 0
    assert "vote-3" in capsys.readouterr().out
    assert "| vote-3 | 3 | 1 | 100.0% [43.8, 100.0] |" in (tmp_path / "out/report.md").read_text()
    assert main([*argv, "--model", "scripted:solver", "--methods", "single"]) == 0
    report = (tmp_path / "out/report.md").read_text()  # the folder's: vote-3 stays in it
    assert "| single | 3 | 1 |" in report and "| vote-3 | 3 | 1 |" in report
    capsys.readouterr()
    assert main([*argv, "--methods", "single,debate-three"]) == 2
    assert "error: unknown method 'debate-three': use default (" in capsys.readouterr().err
    assert main([*argv[:-2], "--range", "9-0", "--out", out]) == 2
    assert "--range must be LOW-HIGH" in capsys.readouterr().err
    assert main(["bench", "--data", str(tmp_path / "none.jsonl")]) == 2
    assert "cannot read data file" in capsys.readouterr().err
    assert (
        main(["bench", "--data", "arithmetic", "--out", str(tmp_path / "empty"), "--report-only"])
        == 2
    )
    assert "no results in" in capsys.readouterr().err
    assert main(["bench", "--methods", "single"]) == 2
    assert "say what to run on: --data" in capsys.readouterr().err
    strong = ["--model", "scripted:solver", "--strong-model", "scripted:solver"]
    assert main([*argv, *strong, "--methods", "single", "--out", str(tmp_path / "s")]) == 2
    assert "none of the methods (single) is one" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_ray_backend_errors_are_clear(tmp_path):
    pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra")  # in moot[dev]
    import ray

    lock = threading.Lock()  # a loaded model holds things like this, which cannot be pickled
    model = ScriptedChatModel(respond=lambda messages: lock and "Answer: 1")
    with pytest.raises(ConfigError, match="give models as spec strings"):
        run_bench(plan_for(model), tmp_path, backend="ray", progress=False, report=False)
    assert not ray.is_initialized()
    missing = plan_for("llama:/no/such.gguf", ("single",))
    with pytest.raises(
        moot.ModelSpecError, match="Ray worker could not start: GGUF file not found"
    ):
        run_bench(missing, tmp_path, backend="ray", workers=1, progress=False, report=False)
    assert not ray.is_initialized()


def test_the_report_pairs_each_method_with_and_without_tools(tmp_path):
    from langchain_core.messages import AIMessage, ToolMessage

    def with_calculator(messages):
        results = [m.text for m in messages if isinstance(m, ToolMessage)]
        if not results:
            expression = _EXPRESSION.search(messages[-1].text).group(1)
            call = {"name": "calculator", "args": {"expression": expression}, "id": "c0"}
            return AIMessage(content="", tool_calls=[call])
        return f"Answer: {results[-1]}"

    def head_sums(messages):
        return "Answer: 0"  # right only where the result is 0

    task = arithmetic(6, seed=3, low=0, high=9)
    for model, tools in ((ScriptedChatModel(respond=head_sums), []), (None, ["calculator"])):
        settings = MethodSettings(model=model or ScriptedChatModel(respond=with_calculator))
        settings.tools = tools
        plan = BenchPlan(task=task, methods=["single"], settings=settings)
        run_bench(plan, tmp_path, progress=False, report=False)
    records = ResultStore(tmp_path).records()
    aided = [r for r in records if "tools=" in r.settings]
    assert [r.tool_calls for r in aided] == [1] * 6 and all(r.correct for r in aided)
    right_alone = sum(r.correct for r in records if "tools=" not in r.settings)
    report = write_report(records, tmp_path).read_text()
    section = report.split("## With and without tools")[1]
    row = next(line for line in section.splitlines() if line.startswith("| arithmetic"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:4] == ["single", "tools=calculator tool_choice=auto", "6"]
    assert cells[5].startswith("100.0%") and cells[6] == "1.00"
    assert cells[9:11] == ["0", str(6 - right_alone)]


def test_a_cascade_names_its_strong_model_and_the_report_pairs_it_with_single_there(tmp_path):
    def cheap_answer(messages, info):
        right = eval(_EXPRESSION.search(messages[-1].text).group(1))  # noqa: S307
        if right % 3 == 0:  # two of three agree on a wrong answer: sure enough, kept
            return f"Answer: {right + 1}" if info.agent != "cheap3" else "Answer: 999"
        if right % 2 == 0:
            return f"Answer: {right}"  # sure and right
        return f"Answer: {100 + info.number}"  # unsure: three answers, escalated

    cheap, strong = ScriptedChatModel(respond=cheap_answer), scripted()
    task = arithmetic(12, seed=3, low=0, high=9)
    alone = BenchPlan(task=task, methods=["single"], settings=MethodSettings(model=strong))
    run_bench(alone, tmp_path, concurrency=1, progress=False, report=False)
    settings = MethodSettings(model=cheap, strong_model=strong)
    plan = BenchPlan(task=task, methods=["cascade-3"], settings=settings)
    # cascades to two strong models must not pass for one (a rerun would skip the second)
    assert plan.key(plan.items()[0])[2] == "ScriptedChatModel -> ScriptedChatModel"
    unpaired = plan.model_copy(update={"settings": MethodSettings(model=cheap)})
    assert unpaired.key(unpaired.items()[0])[2] == "ScriptedChatModel"
    with pytest.raises(ValueError, match="none of the methods .single, vote-3. is one"):
        BenchPlan(task=task, methods=["single", "vote-3"], settings=settings)
    run_bench(plan, tmp_path, concurrency=1, progress=False, report=False)
    escalated = [q for q in task.questions if int(q.answer) % 3 and int(q.answer) % 2]
    kept_wrong = sum(int(q.answer) % 3 == 0 for q in task.questions)
    assert len(strong.calls) == 12 + len(escalated) and 0 < kept_wrong < 12 - len(escalated)
    report = write_report(ResultStore(tmp_path).records(), tmp_path).read_text()
    section = report.split("## Cascades against their strong model alone")[1]
    row = next(line for line in section.splitlines() if line.startswith("| arithmetic"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:3] == ["cascade-3", "12"]
    assert cells[3].startswith(f"{100 * (12 - kept_wrong) / 12:.1f}%")
    assert cells[4] == f"{100 * len(escalated) / 12:.0f}%"
    assert int(cells[6].replace(",", "")) > 0 and cells[7].startswith("100.0%")
    assert cells[9:11] == [str(kept_wrong), "0"]


@pytest.mark.parametrize("right", [0, 6])
def test_an_interval_at_0_or_100_percent_holds_its_value(right):
    # rounding once put the upper bound of 6/6 a hair under 100%: a negative error bar
    interval = Interval.wilson(right, 6)
    assert interval.low <= interval.value <= interval.high
