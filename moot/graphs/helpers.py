"""What the built-in protocols and aggregators share: their common prompts, a node in which one
agent answers alone, a check of the aggregator, and text made safe to keep."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypedDict

from langchain_core.messages import BaseMessage, HumanMessage

import moot.prompts as prompts
from moot.aggregate.vote import MajorityVote
from moot.graphs.types import Aggregator, Call, Calls, RunContext
from moot.result import Turn

_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """`text` with lone surrogates (invalid Unicode, which cannot be encoded or saved) replaced
    by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def question_prompt(question: str, context: RunContext) -> str:
    """The first prompt of every protocol: the question and the answer format."""
    return prompts.render("debate/question", question=question, format=context.format_instruction())


def program_prompt(question: str) -> str:
    """The first prompt of a program agent: the question, and a program that prints the answer
    asked for (moot's prompts)."""
    return prompts.render(
        "debate/program_question", question=question, format=prompts.load("formats/program")
    )


def note_after(notes: list[dict[str, Any]], round: int) -> str:
    """The moderator's note given after `round`, as text to append to a prompt ("" if none)."""
    texts = [note["text"] for note in notes if note["round"] == round]
    return "".join("\n\n" + prompts.render("debate/moderator", note=text) for text in texts)


def show_replies(turns: list[Turn], text: Callable[[Turn], str] = lambda turn: turn.text) -> str:
    """Other agents' replies as shown in a prompt, each under its agent's name."""
    return "\n\n".join(
        prompts.render("debate/peer", peer=turn.agent, text=text(turn)) for turn in turns
    )


class SoloTask(TypedDict):
    """One agent answering the question on its own (a router's expert, a cascade tier's agent)."""

    question: str
    round: int
    agent: int


def answer_alone(task: SoloTask, context: RunContext) -> Calls:
    """Node body: agent `task["agent"]` answers the question alone (a program agent with a
    program)."""
    question = task["question"]
    program = context.agents[task["agent"]].kind == "program"
    first = program_prompt(question) if program else question_prompt(question, context)
    conversation: list[BaseMessage] = [HumanMessage(first)]
    turns = yield [Call(context.speaker(task["agent"]), conversation, task["round"])]
    return {"turns": turns}


def require_answer_format_only(aggregator: Aggregator, why: str) -> None:
    """Refuse an aggregator that a protocol would load and never use: in protocols whose
    answer is one agent's (`why`), the aggregator only sets the answer format."""
    if not isinstance(aggregator, MajorityVote) or aggregator.min_votes != 1:
        raise ValueError(
            f"{why}, so a {type(aggregator).__name__} aggregator would never be used: give "
            "MajorityVote(extract=...) (a society file: {kind: vote, extract: ...}) to set "
            "the answer format"
        )
