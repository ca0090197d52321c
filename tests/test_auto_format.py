"""The "auto" answer format (issue 41): a format chosen per question, short answers that vote
together, and local models held to the format by a constrained answer line."""

from __future__ import annotations

import json
from typing import Any

import pytest

import moot
from moot.aggregate.extract import extract_short, extract_yesno, kind_for
from moot.cli import main
from moot.models import PROFILES
from moot.testing import ScriptedChatModel


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("What is the capital of France?", "short"),
        ("Who wrote Hamlet?", "short"),
        ("What is 17+25?", "number"),
        ("How many legs does a spider have?", "number"),
        ("Compute the product of 6 and 7.", "number"),
        ("Is the sun a star?", "yesno"),
        ("Can dogs fly?", "yesno"),
        ("Which is a fruit? (A) carrot (B) apple (C) leek", "choice"),
        ("Which is a fruit?\nA. carrot\nB. apple", "choice"),
    ],
)
def test_auto_chooses_a_format_that_fits_the_question(question, kind):
    assert kind_for(question) == kind


@pytest.mark.parametrize(
    "reply",
    [
        "Answer: Paris",
        "Answer: paris.",
        "The capital of France is Paris.\nAnswer: The capital is Paris",
        "Answer: It is Paris!",
        "Answer: the answer is **Paris**",
        "Paris.",
        "Paris, France's capital city.",
        "The capital of France is Paris. It lies on the Seine, which is a river.",
        # The question repeated first is not the answer ("what"): the embedded model does this.
        'What is the capital of France?\nThe answer would be "Paris", the city of light.',
        "Is it Lyon? No. The capital is Paris.",
        # The embedded model repeats the label, or the instruction after its answer.
        "Answer: Answer: Paris",
        "Answer: Paris. Answer with one-to-three-worded,QLI.",
        "Answer: Paris! Answer in one word.",
    ],
)
def test_short_answers_that_say_the_same_read_the_same(reply):
    assert extract_short(reply) == "paris"


@pytest.mark.parametrize(
    "reply",
    [
        "%%%% no idea",
        "I think it might be a city somewhere in Europe.",
        "",
        "What is the capital of France?",
    ],
)
def test_a_reply_without_an_answer_line_or_a_bare_answer_reads_as_none(reply):
    assert extract_short(reply) is None


def test_yes_or_no_reads_from_the_answer_line_first():
    assert extract_yesno("No doubt about it.\nAnswer: Yes, it is.") == "yes"
    assert extract_yesno("Well... no.") == "no"
    assert extract_yesno("Perhaps.") is None


def test_a_debate_reads_a_fact_question_in_short_answers_and_says_so():
    replies = iter(
        ["It is Paris.\nAnswer: Paris", "Answer: paris.", "Answer: The capital is Paris"]
    )
    model = ScriptedChatModel(respond=lambda messages: next(replies, "Answer: Paris"))
    society = moot.Society(
        agents=[moot.Agent(name=f"a{i}", model=model) for i in range(3)],
        protocol=moot.Debate(rounds=1),
    )
    result = society.run("What is the capital of France?")
    assert [turn.answer for turn in result.turns] == ["paris"] * 3
    assert (result.answer, result.answer_format) == ("paris", "short")
    assert "one to three words" in model.calls[0][-1].text


def test_an_explicit_format_is_kept_whatever_the_question():
    model = ScriptedChatModel(respond=lambda messages: "Answer: 4 cats")
    society = moot.Society(
        agents=[moot.Agent(name="a", model=model)],
        protocol=moot.Debate(rounds=1),
        aggregator=moot.MajorityVote(extract="number"),
    )
    result = society.run("What is the capital of France?")
    assert (result.answer, result.answer_format) == ("4", "number")


class GrammarModel(ScriptedChatModel):
    """A scripted model that declares it takes a grammar (as llama.cpp does) and records each
    call's options."""

    options: list[dict[str, Any]] = []

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        PROFILES.declare(self, takes_grammar=True)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[no-untyped-def]
        self.options.append(kwargs)
        return super()._generate(messages, stop, run_manager, **kwargs)


def test_a_local_model_that_states_no_answer_is_asked_for_the_line_under_a_grammar():
    def respond(messages) -> str:
        if messages[-1].text.startswith("Give your final answer now"):
            return "Answer: yes"
        return "The sun is a big ball of gas that shines."

    model = GrammarModel(respond=respond, options=[])
    society = moot.Society(
        agents=[moot.Agent(name="a", model=model, seed=3)], protocol=moot.Debate(rounds=1)
    )
    (turn,) = society.run("Is the sun a star?").turns
    assert turn.answer == "yes" and turn.text.endswith("shines.\nAnswer: yes")
    assert turn.usage.calls == 2
    follow_up = model.options[-1]
    assert 'root ::= "Answer: " ("yes" | "no")' in follow_up["grammar"]
    assert follow_up["temperature"] == 0.0 and follow_up["seed"] == 3


def test_a_local_model_that_answers_in_format_is_asked_once():
    model = GrammarModel(respond=lambda messages: "Yes.\nAnswer: yes", options=[])
    society = moot.Society(agents=[moot.Agent(name="a", model=model)])
    result = society.run("Is the sun a star?")
    assert all(turn.usage.calls == 1 for turn in result.turns)
    assert not any("grammar" in options for options in model.options)


@pytest.mark.integration
def test_the_readme_first_question_reads_an_answer_from_every_turn_of_the_embedded_model(
    capsys,
):
    assert main(["debate", "Is the sun a star?", "--seed", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["answer_format"] == "yesno"
    assert {turn["answer"] for turn in result["turns"]} <= {"yes", "no"}


@pytest.mark.parametrize(
    "answer",
    ["answer in one to three words", "answer-1", "No answer", "Answer: Answer.", "Answer. Paris"],
)
def test_a_short_answer_that_echoes_the_instruction_does_not_read(answer):
    assert extract_short(f"Answer: {answer}") is None
    assert extract_short("Answer: paris") == "paris"


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("Answer: Mrs. Dalloway. Answer in one to three words", "mrs. dalloway"),
        ("Answer: Unknown. I cannot answer that.", None),
        ("Answer: Not sure. Answer could be Paris", None),
    ],
)
def test_only_an_echoed_instruction_is_cut_from_an_answer_line(reply, answer):
    assert extract_short(reply) == answer


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("What is the difference between a crocodile and an alligator?", "short"),
        ("What is the main product of photosynthesis?", "short"),
        ("Is 2+2 equal to 4?", "yesno"),
        ("Who won the 2014-2015 season?", "short"),
        ("Who wrote the paper by A. Smith and B. Jones?", "short"),
        ("Which is quicker, plan A: the bridge, or plan B: the ferry?", "short"),
        ("Which? A) 3, B) 4", "choice"),
        ("Can you name the largest ocean?", "short"),
        ("What is 7-3?", "number"),
        ("What is the sum of 3 and 4?", "number"),
    ],
)
def test_auto_is_not_fooled_by_number_words_years_or_requests(question, kind):
    assert kind_for(question) == kind


def test_a_cached_reply_with_its_answer_line_costs_no_call(tmp_path):
    def respond(messages) -> str:
        if messages[-1].text.startswith("Give your final answer now"):
            return "Answer: yes"
        return "The sun shines."

    model = GrammarModel(respond=respond, options=[])
    society = moot.Society(
        agents=[moot.Agent(name="a", model=model, seed=1)], protocol=moot.Debate(rounds=1)
    )
    cache = tmp_path / "cache.sqlite"
    first = society.run("Is the sun a star?", cache=cache).turns[0]
    again = society.run("Is the sun a star?", cache=cache).turns[0]
    assert (first.usage.calls, first.usage.cached_calls) == (2, 0)
    assert (again.usage.calls, again.usage.cached_calls, again.answer) == (0, 1, "yes")


def test_a_failed_answer_line_keeps_the_reply_and_counts_the_call():
    def respond(messages) -> str:
        if messages[-1].text.startswith("Give your final answer now"):
            raise RuntimeError("the context is full")
        return "The sun shines."

    model = GrammarModel(respond=respond, options=[])
    society = moot.Society(
        agents=[moot.Agent(name="a", model=model)], protocol=moot.Debate(rounds=1)
    )
    (turn,) = society.run("Is the sun a star?").turns
    assert not turn.failed and turn.text == "The sun shines." and turn.answer is None
    assert turn.usage.calls == 2


def test_typed_answers_on_a_remote_model_build_no_grammar():
    from pydantic import BaseModel

    class Node(BaseModel):  # recursive: llama.cpp's JSON-schema converter cannot take it
        name: str
        children: list[Node] = []

    model = ScriptedChatModel(respond=lambda messages: 'Here. {"name": "x", "children": []}')
    society = moot.Society(
        agents=[moot.Agent(name="a", model=model)],
        protocol=moot.Debate(rounds=1),
        answer_schema=Node,
    )
    (turn,) = society.run("Give a tree.").turns
    assert not turn.failed and turn.answer is not None


def test_a_judge_reads_its_verdict_in_the_format_auto_chose():
    def respond(messages, info) -> str:
        return "B is bigger.\nAnswer: B"

    model = ScriptedChatModel(respond=respond)
    society = moot.Society(
        agents=[moot.Agent(name=f"a{i}", model=model) for i in range(2)],
        protocol=moot.Debate(rounds=1),
        aggregator=moot.Judge(
            agent=moot.Agent(name="j", role="judge", model=model), extract="auto"
        ),
    )
    result = society.run("Which is bigger? (A) 3 (B) 4")
    assert (result.answer, result.answer_format) == ("B", "choice")


def test_a_society_file_without_an_aggregator_debates_in_the_auto_format(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("agents:\n  - {name: a, copies: 2, model: 'test:Answer: Paris'}\n")
    society = moot.load_society(path)
    assert society.aggregator.extract == "auto"
    assert society.run("What is the capital of France?").answer == "paris"


@pytest.mark.parametrize(
    "protocol", ["debate", "critic", "mixture", "router", "cascade", "pipeline"]
)
def test_every_society_file_without_an_aggregator_reads_the_auto_format(tmp_path, protocol):
    roles = {"critic": ["generator", "critic"], "mixture": ["proposer", "proposer"]}
    agents = "".join(
        f"  - {{name: a{i}, role: {role}, model: 'test:Answer: Paris'}}\n"
        for i, role in enumerate(roles.get(protocol, ["debater", "debater"]))
    )
    extra = {"cascade": ", tiers: [[a0], [a1]]", "router": ", rules: {a0: [capital]}"}
    path = tmp_path / "s.yaml"
    path.write_text(f"agents:\n{agents}protocol: {{kind: {protocol}{extra.get(protocol, '')}}}\n")
    result = moot.load_society(path).run("What is the capital of France?")
    assert result.answer_format == "short"
