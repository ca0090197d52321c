"""MachineSoM's prompt sets: moot sends what their code (zjunlp/MachineSoM, src/run_main.py and
src/prompt.py) sends, message for message: the role message and its "ok", the question, a
debate round in which one agent reflects and the other two are shown only each other."""

from __future__ import annotations

import pytest
from langchain_core.messages import BaseMessage

import moot
from moot.presets import machinesom
from moot.testing import CallInfo, ScriptedChatModel

# Their strings, copied from src/prompt.py and src/run_main.py (not from moot's data files).
EXPERT = "an expert in biology, chemistry, computer science, mathematics, physics"
TEMPERATE = (
    "are objective and unbiased, and you can be persuaded if other agent's answers make sense"
)
CONFIDENT = "are confident in your answer and often persuades other agents to believe in you"
CREATE_TEMPERATE = (
    "You are {} and {}. Please keep this in mind. If you understand please say ok only."
)
CREATE_CONFIDENT = (
    "Imagine you are {} and {}. Please keep this in mind. If you understand please say ok only."
)
MMLU_QUESTION = (
    "Can you answer the following question as accurately as possible? {}: A) {}, B) {}, C) {}, "
    "D) {} Explain your answer, putting the answer in the form (X) at the end of your response."
)
MMLU_DEBATE = [
    "These are the solutions to the problem from other agents: ",
    "\n\n Using the reasoning from other agents as additional advice, can you give an updated "
    "answer? Examine your solution and that other agents step by step. Put your answer in the "
    "form (X) at the end of your response.",
]
MMLU_REFLECTION = (
    "Can you double check that your answer is correct. Put your final answer in the form (X) "
    "at the end of your response."
)
MATH_QUESTION = (
    "Here is a math problem written in LaTeX:{}\nPlease carefully consider it and explain your "
    "reasoning. Put your answer in the form \\boxed{{answer}}, at the end of your response."
)
MATH_DEBATE = [
    "These are the solutions to the problem from other agents:",
    "\n\nUsing the reasoning from other agents as additional information and referring to your "
    "historical answers, can you give an updated answer? Put your answer in the form "
    "\\boxed{{answer}}, at the end of your response.",
]
MATH_REFLECTION = (
    "Can you double check that your answer is correct? Please reiterate your answer, with your "
    "answer in the form \\boxed{{answer}}, at the end of your response."
)

CHOICES = ("red", "green", "blue", "black")
AGENTS = ["agent1", "agent2", "agent3"]


def reply(agent: str, round: int) -> str:
    return (
        f"{agent} thinks ({'C' if agent == 'agent3' else 'B'}), \\boxed{{{round}}} in round {round}"
    )


def reply_for(messages: list[BaseMessage], info: CallInfo) -> str:
    return reply(info.agent, info.round)


def their_loop(expert: str, first: str, debate: list[str], reflection: str, reflecting) -> list:
    """run_main.py's simulate for 3 agents, the first confident: each agent's context as
    (role, content); `reflecting` lists, for each round after the first answer, the agents
    that reflect (their '1': all; '0': one drawn at random, the other two debate)."""
    contexts = []
    for index, character in enumerate([CONFIDENT, TEMPERATE, TEMPERATE]):
        create = CREATE_CONFIDENT if "confident" in character else CREATE_TEMPERATE
        contexts.append([("user", create.format(expert, character)), ("assistant", "ok")])
        contexts[index] += [("user", first), ("assistant", reply(AGENTS[index], 1))]
    for number, reflectors in enumerate(reflecting, start=2):
        debating = [i for i in range(3) if i not in reflectors]
        memory = {}
        for i in debating:  # debate_next: the other debaters' latest replies, then the ask
            content = debate[0]
            for other in debating:
                if other != i:
                    content += f"\n\n One agent response: ```{contexts[other][-1][1]}```"
            memory[i] = content + debate[1]
        for i in range(3):
            contexts[i] += [
                ("user", memory.get(i, reflection)),
                ("assistant", reply(AGENTS[i], number)),
            ]
    return contexts


def as_roles(messages: list[BaseMessage]) -> list[tuple[str, str]]:
    roles = {"human": "user", "ai": "assistant", "system": "system"}
    return [(roles[m.type], m.text) for m in messages]


@pytest.mark.parametrize("task", ["mmlu", "math"])
def test_every_message_is_what_machinesom_code_sends(task):
    if task == "mmlu":
        question = "Which colour is grass: A) red, B) green, C) blue, D) black"  # --prompts du
        first = MMLU_QUESTION.format("Which colour is grass", *CHOICES)
        expert, debate, reflection, extract = EXPERT, MMLU_DEBATE, MMLU_REFLECTION, "choice"
    else:
        question = "What is $3+4$?"
        # their code formats, then restores the doubled braces: "\boxed{{answer}}" is sent
        first = MATH_QUESTION.format(question).replace("\\boxed{answer}", "\\boxed{{answer}}")
        assert "\\boxed{{answer}}" in first
        expert = "an expert skilled in solving mathematical problems"
        debate, reflection, extract = MATH_DEBATE, MATH_REFLECTION, "boxed"
    preset = machinesom(
        1, "debate-reflect-debate", extract=extract, prompts="som", reflector_seed=5
    )
    models = {name: ScriptedChatModel(respond=reply_for) for name in AGENTS}
    agents = [agent.model_copy(update={"model": models[agent.name]}) for agent in preset.agents]
    society = preset.model_copy(update={"agents": agents})
    first_debate, _, second_debate = society.protocol.strategy
    drawn = [AGENTS.index(next(iter(move))) for move in (first_debate, second_debate)]
    expected = their_loop(expert, first, debate, reflection, [[drawn[0]], [0, 1, 2], [drawn[1]]])

    result = society.run(question)

    assert not any(turn.failed for turn in result.turns)
    for index, name in enumerate(AGENTS):
        calls = models[name].calls
        assert len(calls) == 4  # no system message; the role's "ok" is given, not asked for
        for round, call in enumerate(calls):
            assert as_roles(call) == expected[index][: 3 + 2 * round]
    assert result.answer == ("B" if task == "mmlu" else "4")


def test_the_reflectors_are_drawn_by_the_seed_and_only_with_their_prompts():
    def strategy(**options):
        return machinesom(0, "debate-debate-reflect", **options).protocol.strategy

    assert strategy() == ["debate", "debate", "reflect"]  # moot's prompts: all debate
    drawn = strategy(prompts="som", reflector_seed=1)
    assert drawn == strategy(prompts="som", reflector_seed=1)
    assert all(isinstance(move, dict) and len(move) == 1 for move in drawn[:2])
    assert drawn[2] == "reflect"
    draws = {str(strategy(prompts="som", reflector_seed=seed)) for seed in range(8)}
    assert len(draws) > 1


def test_som_prompts_refuse_what_machinesom_has_no_prompt_for():
    with pytest.raises(ValueError, match="chess prompts are not reproduced"):
        machinesom(0, extract="square", prompts="som")
    with pytest.raises(ValueError, match="knows MachineSoM's two characters"):
        moot.Society(
            agents=[moot.Agent(name="a", trait="a pirate")],
            protocol=moot.Debate(rounds=2, prompt_set="som-mmlu"),
            aggregator=moot.MajorityVote(extract="choice"),
        )


def test_bench_with_the_papers_prompts_runs_machinesom_in_its_own():
    from moot.bench import MethodSettings, build_method

    model = ScriptedChatModel(respond=lambda messages: "(A)")
    papers = MethodSettings(model=model, prompt_set="du-mmlu")
    society = build_method("machinesom-oc1-debate-reflect-debate", "choice", papers)
    assert society.protocol.prompt_set == "som-mmlu"
    assert isinstance(society.protocol.strategy[0], dict)  # one agent reflects
    assert society.run("Q: A) x, B) y").answer == "A"
    numeric = MethodSettings(model=model, prompt_set="du-gsm8k")
    assert (
        build_method("machinesom-reflect-reflect-reflect", "number", numeric).protocol.prompt_set
        == "som-math"
    )
    plain = build_method("machinesom-debate-debate-debate", "choice", MethodSettings(model=model))
    assert plain.protocol.prompt_set == "moot" and plain.protocol.strategy == ["debate"] * 3
