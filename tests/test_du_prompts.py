"""Du et al.'s prompt sets: moot sends what their code (composable-models/llm_multiagent_debate)
sends, message for message, with the same replies."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import BaseMessage
from pydantic import BaseModel

import moot
from moot.bench import MethodSettings, build_method
from moot.bench.methods import default_prompt_set, du_prompt_set
from moot.bench.records import BenchPlan
from moot.bench.tasks import arithmetic
from moot.testing import CallInfo, ScriptedChatModel

# Their strings, copied from gsm/gen_gsm.py and math/gen_math.py (not from moot's data file).
GSM_FIRST = (
    "Can you solve the following math problem? {} Explain your reasoning. Your final answer "
    "should be a single numerical number, in the form \\boxed{{answer}}, at the end of your "
    "response. "
)
GSM_END = (
    "\n\n Using the solutions from other agents as additional information, can you provide "
    "your answer to the math problem? \n The original math problem is {}. Your final answer "
    "should be a single numerical number, in the form \\boxed{{answer}}, at the end of your "
    "response."
)
MATH_END = (
    "\n\n Use these opinions carefully as additional advice, can you provide an updated answer? "
    "Make sure to state your answer at the end of the response."
)


def du_gsm_message(others: list[str], question: str) -> str:
    """gen_gsm.py's construct_message, for the other agents' latest replies."""
    prefix = "These are the solutions to the problem from other agents: "
    for reply in others:
        prefix += f"\n\n One agent solution: ```{reply}```"
    return prefix + GSM_END.format(question)


def du_math_message(others: list[str]) -> str:
    """gen_math.py's construct_message."""
    prefix = "These are the recent/updated opinions from other agents: "
    for reply in others:
        prefix += f"\n\n One agent response: ```{reply}```"
    return prefix + MATH_END


def reply_for(messages: list[BaseMessage], info: CallInfo) -> str:
    return f"{info.agent} says, in round {info.round}, \\boxed{{{info.round}}}"


def du_conversations(first: str, message, agents: list[str], rounds: int) -> dict[str, list]:
    """Du's loop: each agent's context as (role, content), replies as `reply_for` gives them."""
    contexts = {name: [("user", first)] for name in agents}
    for round in range(rounds):
        for name in agents:
            if round != 0:
                others = [contexts[o][2 * round - 1][1] for o in agents if o != name]
                contexts[name].append(("user", message(others)))
            reply = f"{name} says, in round {round + 1}, \\boxed{{{round + 1}}}"
            contexts[name].append(("assistant", reply))
    return contexts


def as_roles(messages: list[BaseMessage]) -> list[tuple[str, str]]:
    roles = {"human": "user", "ai": "assistant", "system": "system"}
    return [(roles[m.type], m.text) for m in messages]


@pytest.mark.parametrize("prompt_set", ["du-gsm8k", "du-arithmetic"])
def test_every_message_is_what_du_et_al_code_sends(prompt_set):
    names = ["a0", "a1", "a2"]
    models = {name: ScriptedChatModel(respond=reply_for) for name in names}
    society = moot.Society(
        agents=[moot.Agent(name=name, model=models[name]) for name in names],
        protocol=moot.Debate(rounds=3, prompt_set=prompt_set),
    )
    if prompt_set == "du-gsm8k":
        question = "Janet has 3 apples and buys 2. How many?"
        first = GSM_FIRST.format(question)
        expected = du_conversations(
            first, lambda others: du_gsm_message(others, question), names, 3
        )
    else:
        question = "What is the result of 3+4*5+6-2*3?"
        first = question + " Make sure to state your answer at the end of the response."
        expected = du_conversations(first, du_math_message, names, 3)

    result = society.run(question)

    assert result.rounds == 3 and not any(turn.failed for turn in result.turns)
    for name in names:
        calls = models[name].calls
        assert len(calls) == 3
        # No system message, and each call's messages are Du's context before that reply.
        for round, call in enumerate(calls):
            assert as_roles(call) == expected[name][: 2 * round + 1]
    assert result.answer == "3"


def test_a_lone_agent_gets_du_introspection_message_with_its_literal_braces():
    model = ScriptedChatModel(respond=reply_for)
    society = moot.Society(
        agents=[moot.Agent(name="solo", model=model)],
        protocol=moot.Debate(rounds=2, prompt_set="du-gsm8k"),
    )
    society.run("q?")
    # gen_gsm.py returns this string without calling format, so its doubled braces stay.
    assert model.calls[1][-1].text == (
        "Can you double check that your answer is correct. Please reiterate your answer, with "
        "your final answer a single numerical number, in the form \\boxed{{answer}}."
    )


def test_moot_prompts_keep_the_system_prompt_and_du_ones_drop_it():
    model = ScriptedChatModel(respond=lambda messages: "Answer: 1")
    for prompt_set, first_type in [("moot", "system"), ("du-arithmetic", "human")]:
        moot.Society(
            agents=[moot.Agent(name="a", model=model)],
            protocol=moot.Debate(rounds=1, prompt_set=prompt_set),
        ).run("What is 1?")
        assert model.calls[-1][0].type == first_type


def test_du_prompts_refuse_answer_formats_and_traits_they_cannot_serve():
    model = ScriptedChatModel(respond=lambda messages: "(A)")
    with pytest.raises(ValueError, match="du-mmlu asks for answers read as choice"):
        moot.Society(
            agents=[moot.Agent(name="a", model=model)],
            protocol=moot.Debate(prompt_set="du-mmlu"),
            aggregator=moot.MajorityVote(extract="number"),
        )
    with pytest.raises(ValueError, match="traits of a would be lost"):
        moot.Society(
            agents=[moot.Agent(name="a", model=model, trait="easy-going")],
            protocol=moot.Debate(prompt_set="du-gsm8k"),
        )
    for prompt_set in ("du-arithmetic", "som-math"):  # and never ask for a program
        with pytest.raises(ValueError, match="program agents p would fail every turn"):
            moot.Society(
                agents=[moot.Agent(name="p", kind="program", model=model)],
                protocol=moot.Debate(prompt_set=prompt_set),
            )
    society = moot.Society(
        agents=[moot.Agent(name="a", model=model)],
        protocol=moot.Debate(prompt_set="du-mmlu"),
        aggregator=moot.MajorityVote(extract="choice"),
    )
    assert society.run("Which? (A) x (B) y").answer == "A"

    class Letter(BaseModel):
        letter: str

    with pytest.raises(ValueError, match="answer_schema needs prompts that ask for it"):
        moot.Society(
            agents=[moot.Agent(name="a", model=model)],
            protocol=moot.Debate(prompt_set="du-gsm8k"),
            answer_schema=Letter,
        )


def test_bench_picks_du_prompts_by_task_and_keeps_their_results_apart():
    assert du_prompt_set("arithmetic-0-0-30", "number") == "du-arithmetic"
    assert du_prompt_set("gsm8k/dev", "number") == "du-gsm8k"
    assert du_prompt_set("machinesom/mmlu", "choice") == "du-mmlu"
    with pytest.raises(moot.ConfigError, match="not 'square'"):
        du_prompt_set("chess/moves", "square")

    model = ScriptedChatModel(respond=lambda messages: "Answer: 1")
    du = MethodSettings(model=model, prompt_set="du-arithmetic")
    debate = build_method("debate-3x3-consensus", "number", du)
    assert debate.protocol.prompt_set == "du-arithmetic"
    assert debate.protocol.consensus == 1.0 and debate.protocol.rounds == 3
    assert build_method("debate-3x3", "number", du).protocol.consensus is None
    with pytest.raises(moot.ConfigError, match="single, vote, debate and machinesom methods only"):
        build_method("moa-2x1", "number", du)

    task = arithmetic(2)
    moot_plan = BenchPlan(task=task, methods=["single"], settings=MethodSettings(model=model))
    du_plan = BenchPlan(task=task, methods=["single"], settings=du)
    assert "prompts" not in moot_plan.settings_label()
    assert du_plan.settings_label().endswith(" prompts=du-arithmetic")


def test_bench_runs_du_et_al_s_prompts_by_default_where_they_were_measured_better(tmp_path, capsys):
    gsm = ["single", "vote-3", "debate-3x2-consensus"]
    assert default_prompt_set("gsm8k/dev", "number", gsm)[0] == "du-gsm8k"
    # Measured worse (arithmetic: no working asked for) or not compared (multiple choice).
    assert default_prompt_set("arithmetic-0-0-30", "number", gsm)[0] == "moot"
    assert default_prompt_set("machinesom/mmlu", "choice", ["debate-3x2"])[0] == "moot"
    mixed = default_prompt_set(
        "gsm8k/dev", "number", ["single", "moa-3x2", "machinesom-oc1-debate-debate-debate"]
    )
    assert mixed[0] == "moot" and "moa-3x2, machinesom-oc1-debate-debate-debate:" in mixed[1]
    assert default_prompt_set("qa/open", "text", ["single"])[0] == "moot"
    # The default society of a numeric task has program agents, which only moot's prompts ask.
    assert default_prompt_set("gsm8k/dev", "number", ["default", "vote-3"])[0] == "moot"
    assert default_prompt_set("machinesom/mmlu", "choice", ["default"])[0] == "moot"

    from moot.cli import main
    from moot.models import BACKENDS, register_backend

    model = ScriptedChatModel(respond=lambda messages: "So \\boxed{4}. Answer: 4")
    register_backend("sums", lambda rest, options: model, "sums:x (tests)")
    data = tmp_path / "sums.jsonl"
    data.write_text(json.dumps({"id": "s", "question": "What is 2+2?", "answer": "4"}) + "\n")
    argv = ["bench", "--data", str(data), "--model", "sums:x", "--methods", "single"]
    try:
        assert main([*argv, "--out", str(tmp_path / "du")]) == 0
        assert "prompts: du-gsm8k, Du et al.'s" in capsys.readouterr().err
        assert model.calls[-1][0].text.startswith("Can you solve the following math problem?")
        assert main([*argv, "--out", str(tmp_path / "moot"), "--prompts", "moot"]) == 0
        assert not model.calls[-1][0].text.startswith("Can you solve")
        assert main([*argv[:-1], "single,moa-2x1", "--out", str(tmp_path / "mixed")]) == 0
        assert "prompts: moot's (moa-2x1: Du et al.'s are for" in capsys.readouterr().err
        refused = [*argv[:-1], "single,moa-2x1", "--out", str(tmp_path / "no"), "--prompts", "du"]
        assert main(refused) == 2  # before anything runs, not once moa's first question fails
        assert "moa-2x1 would run on moot's prompts" in capsys.readouterr().err
        assert not (tmp_path / "no").exists()
    finally:
        BACKENDS.remove("sums")
    # The records say which prompts they were run with, so the two runs stay apart.
    du_record = json.loads((tmp_path / "du/results.jsonl").read_text())
    moot_record = json.loads((tmp_path / "moot/results.jsonl").read_text())
    assert du_record["settings"].endswith(" prompts=du-gsm8k")
    assert "prompts" not in moot_record["settings"]
    assert du_record["correct"] and moot_record["correct"]


def test_an_mmlu_question_reaches_the_model_as_du_et_al_write_it(tmp_path):
    from moot.bench.tasks import load_jsonl

    path = tmp_path / "mmlu.jsonl"
    record = {"question": "Which is a virus?", "choices": ["HIV", "E. coli", "Yeast", "Moss"]}
    path.write_text(json.dumps({**record, "answer": "A"}) + "\n")
    task = load_jsonl(path, du_choices=True)
    assert task.questions[0].question == "Which is a virus?: A) HIV, B) E. coli, C) Yeast, D) Moss"
    assert "(A) HIV\n(B)" in load_jsonl(path).questions[0].question  # moot's own layout

    model = ScriptedChatModel(respond=lambda messages: "It is (A)")
    society = moot.Society(
        agents=[moot.Agent(name="a", model=model)],
        protocol=moot.Debate(rounds=1, prompt_set="du-mmlu"),
        aggregator=moot.MajorityVote(extract="choice"),
    )
    assert society.run(task.questions[0].question).answer == "A"
    # mmlu/gen_mmlu.py's question, whole.
    assert model.calls[0][0].text == (
        "Can you answer the following question as accurately as possible? Which is a virus?: "
        "A) HIV, B) E. coli, C) Yeast, D) Moss Explain your answer, putting the answer in the "
        "form (X) at the end of your response."
    )


def test_moot_bench_runs_multiple_choice_on_du_et_al_s_prompts(tmp_path):
    from moot.bench import run_bench
    from moot.bench.tasks import load_jsonl

    path = tmp_path / "mmlu.jsonl"
    record = {"question": "Which is a virus?", "choices": ["HIV", "E. coli", "Yeast", "Moss"]}
    path.write_text(json.dumps({**record, "answer": "A"}) + "\n")
    model = ScriptedChatModel(respond=lambda messages: "It is (A)")
    settings = MethodSettings(model=model, prompt_set=du_prompt_set("machinesom/mmlu", "choice"))
    methods = ["single", "vote-3", "debate-3x2", "machinesom-debate-debate-debate"]
    plan = BenchPlan(task=load_jsonl(path, du_choices=True), methods=methods, settings=settings)
    records = run_bench(plan, tmp_path / "out", progress=False)  # was: "reads them as number"
    assert [(r.method, r.answer, r.error) for r in records] == [(m, "A", None) for m in methods]
    assert model.calls[0][0].text.startswith("Can you answer the following question")


def test_moot_debate_reads_a_paper_s_prompt_set_in_its_answer_format(capsys):
    from moot.cli import main
    from moot.models import BACKENDS, register_backend

    model = ScriptedChatModel(respond=lambda messages: "It is (B)")
    register_backend("choosing", lambda rest, options: model, "choosing:x (tests)")
    try:
        question = "Which is a virus?: A) Moss, B) HIV"
        argv = ["debate", question, "--prompts", "du-mmlu", "--model", "choosing:x", "--json"]
        assert main(argv) == 0  # was: "the society reads them as number", without --extract
        assert json.loads(capsys.readouterr().out)["answer"] == "B"
        assert main([*argv, "--extract", "number"]) == 2  # asked for: refused, with the fix
        assert "set extract to choice" in capsys.readouterr().err
    finally:
        BACKENDS.remove("choosing")
