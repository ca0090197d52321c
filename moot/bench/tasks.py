"""Benchmark tasks: questions with known answers."""

from __future__ import annotations

import random

from pydantic import BaseModel


class Question(BaseModel):
    """One benchmark item."""

    id: str
    question: str
    answer: str
    """The reference answer, in the form the task's extractor produces."""


def arithmetic(count: int, seed: int = 0, low: int = 0, high: int = 30) -> list[Question]:
    """Du et al.'s arithmetic task: a+b*c+d-e*f with integers drawn from [low, high]."""
    rng = random.Random(seed)
    questions = []
    for index in range(count):
        a, b, c, d, e, f = (rng.randint(low, high) for _ in range(6))
        questions.append(
            Question(
                id=f"arith-{seed}-{index}",
                question=f"What is the result of {a}+{b}*{c}+{d}-{e}*{f}?",
                answer=str(a + b * c + d - e * f),
            )
        )
    return questions
