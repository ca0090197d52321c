"""Benchmark tasks: questions with known answers, how to read an answer, how to check it.

A task is generated (`arithmetic`) or read from a JSONL file (`load_jsonl`), whose format is
recognised from its fields: GSM8K-style (question, numeric answer), multiple choice (question,
choices, letter), MachineSoM math (question, accepted answers) and chess (moves, valid
destination squares). Any other JSONL works with a field name and a checker of your own.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

import moot.prompts as prompts
from moot.aggregate.extract import ExtractKind, Extractor, normalise_number, normalise_text
from moot.config import read_text
from moot.errors import ConfigError


class Question(BaseModel):
    """One benchmark item."""

    id: str
    """Unique within its task; results are keyed by it."""
    question: str
    """The text the society is asked."""
    answer: str
    """The reference answer, in the form the task's extractor produces."""
    accepted: list[str] = Field(default_factory=list)
    """Every answer that counts as right, when there is more than one (chess: valid squares)."""


Checker = Callable[[str | None, Question], bool]
"""Whether an extracted answer (None: no answer) is right for a question."""


@dataclass(frozen=True)
class NumericCheck:
    """Right when the answer is a number within `tolerance` (relative, at least absolute) of the
    reference."""

    tolerance: float = 1e-6

    def __call__(self, answer: str | None, question: Question) -> bool:
        got, want = _number(answer), _number(question.answer)
        if got is None or want is None:
            return False
        return abs(got - want) <= self.tolerance * max(1.0, abs(want))


def numeric(tolerance: float = 1e-6) -> Checker:
    """The numeric checker with `tolerance`."""
    return NumericCheck(tolerance)


def choice_letter(answer: str | None, question: Question) -> bool:
    """Right when the answer is the reference choice letter (any case)."""
    return answer is not None and answer.strip().upper() == question.answer.strip().upper()


def accepted_answers(answer: str | None, question: Question) -> bool:
    """Right when the answer equals one of the accepted answers (numbers compared as numbers,
    text normalised)."""
    if answer is None:
        return False
    accepted = question.accepted or [question.answer]
    got = _number(answer)
    for candidate in accepted:
        want = _number(candidate)
        if got is not None and want is not None and abs(got - want) <= 1e-6 * max(1, abs(want)):
            return True
        if normalise_text(answer) == normalise_text(candidate):
            return True
    return False


def chess_destination(answer: str | None, question: Question) -> bool:
    """Right when the answer is one of the piece's valid destination squares."""
    return answer is not None and answer.strip().lower() in question.accepted


def _number(text: str | None) -> float | None:
    normalised = normalise_number(text) if text is not None else None
    return float(normalised) if normalised is not None else None


class Task(BaseModel):
    """Questions, how agents are asked to answer, and how an answer is checked."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    """Names the task in results and reports: "FOLDER/STEM" of a file, or
    "arithmetic-SEED-LOW-HIGH"."""
    questions: list[Question]
    extract: ExtractKind | Extractor = "number"
    """How answers are read from replies (and which answer format agents are asked for)."""
    check: Checker = Field(default_factory=numeric)
    """Whether an extracted answer is right."""

    def is_correct(self, answer: str | None, question: Question) -> bool:
        return bool(self.check(answer, question))

    def head(self, limit: int | None, skip: int = 0) -> Task:
        """The task with only its first `limit` questions (all when None), less the first
        `skip` of them: a later slice of the same task, whose records pair with the earlier."""
        return self.model_copy(update={"questions": self.questions[skip:limit]})


def arithmetic(count: int, seed: int = 0, low: int = 0, high: int = 30) -> Task:
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
    return Task(name=f"arithmetic-{seed}-{low}-{high}", questions=questions)


def load_jsonl(
    path: str | Path,
    *,
    question_field: str = "question",
    answer_field: str = "answer",
    extract: ExtractKind | Extractor | None = None,
    check: Checker | None = None,
    du_choices: bool = False,
) -> Task:
    """The task in a JSONL file, its format recognised from the first record's fields.

    `extract` and `check` replace what the format would use, so any JSONL with a question and
    an answer field can be benchmarked with your own reading and checking of answers.
    `du_choices` writes multiple-choice questions as Du et al.'s MMLU code does
    ("QUESTION: A) ..., B) ..."), for their prompts; otherwise one choice per line.
    """
    path = Path(path)
    records = read_records(path)
    first = records[0][1]
    if "moves" in first and "valid_destinations" in first:
        questions = [_chess(record, path, line) for line, record in records]
        kind: tuple[ExtractKind | Extractor, Checker] = ("square", chess_destination)
    elif "choices" in first:
        questions = [
            _multiple_choice(record, path, line, question_field, answer_field, du_choices)
            for line, record in records
        ]
        kind = ("choice", choice_letter)
    else:
        questions = [
            _plain(record, path, line, question_field, answer_field) for line, record in records
        ]
        if "accepted" in first:
            numbers = all(_number(text) is not None for q in questions for text in q.accepted)
            kind = ("number" if numbers else "text", accepted_answers)
        elif all(_number(question.answer) is not None for question in questions):
            kind = ("number", numeric())
        else:
            kind = ("text", accepted_answers)
    counts = Counter(question.id for question in questions)
    repeated = [id for id, count in counts.items() if count > 1]
    if repeated:
        more = f" and {len(repeated) - 10} more" if len(repeated) > 10 else ""
        raise ConfigError(
            f"{path}: question ids must be unique; repeated: {', '.join(repeated[:10])}{more}"
        )
    return Task(
        name=f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem,
        questions=questions,
        extract=extract if extract is not None else kind[0],
        check=check if check is not None else kind[1],
    )


def read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each line of a JSONL file; errors name the file and line.

    Lines end at "\\n" only: JSON strings may hold U+2028 and the like raw, which `splitlines`
    would take for line ends."""
    text = read_text(path, "data file")
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{number}: not valid JSON: {error.msg}") from error
        except RecursionError:
            raise ConfigError(
                f"{path}:{number}: JSON nested too deeply to read: a question is a flat object"
            ) from None
        if not isinstance(record, dict):
            raise ConfigError(f"{path}:{number}: each line must be a JSON object")
        records.append((number, record))
    if not records:
        raise ConfigError(f"{path}: no questions (expected one JSON object per line)")
    return records


def _field(record: dict[str, Any], name: str, path: Path, line: int) -> Any:
    if name not in record:
        have = ", ".join(record) or "none"
        raise ConfigError(f"{path}:{line}: no '{name}' field (fields: {have})")
    return record[name]


def _id(record: dict[str, Any], path: Path, line: int) -> str:
    return str(record.get("id", f"{path.stem}-{line}"))


def _plain(
    record: dict[str, Any], path: Path, line: int, question_field: str, answer_field: str
) -> Question:
    answer = str(_field(record, answer_field, path, line))
    accepted = record.get("accepted") or []
    if not isinstance(accepted, list):
        raise ConfigError(f"{path}:{line}: 'accepted' must be a list of answers")
    return Question(
        id=_id(record, path, line),
        question=str(_field(record, question_field, path, line)),
        answer=answer,
        accepted=[str(item) for item in accepted],
    )


def _multiple_choice(
    record: dict[str, Any],
    path: Path,
    line: int,
    question_field: str,
    answer_field: str,
    du_choices: bool = False,
) -> Question:
    choices = _field(record, "choices", path, line)
    if isinstance(choices, list):
        choices = {chr(ord("A") + index): text for index, text in enumerate(choices)}
    if not isinstance(choices, dict) or not choices:
        raise ConfigError(f"{path}:{line}: 'choices' must be a list or a letter-to-text mapping")
    answer = str(_field(record, answer_field, path, line)).strip().upper()
    if answer not in choices:
        raise ConfigError(
            f"{path}:{line}: answer '{answer}' is not one of the choices {', '.join(choices)}"
        )
    question = _field(record, question_field, path, line)
    if du_choices:  # mmlu/gen_mmlu.py: "{}: A) {}, B) {}, C) {}, D) {}"
        inline = ", ".join(f"{letter}) {text}" for letter, text in choices.items())
        text = f"{question}: {inline}"
    else:
        listed = "\n".join(f"({letter}) {text}" for letter, text in choices.items())
        text = prompts.render("bench/choice", question=question, choices=listed)
    return Question(id=_id(record, path, line), question=text, answer=answer)


def _chess(record: dict[str, Any], path: Path, line: int) -> Question:
    moves = str(_field(record, "moves", path, line)).strip()
    valid = _field(record, "valid_destinations", path, line)
    if not isinstance(valid, list) or not valid:
        raise ConfigError(f"{path}:{line}: 'valid_destinations' must be a non-empty list")
    square = moves.split()[-1] if moves else ""
    return Question(
        id=_id(record, path, line),
        question=prompts.render("bench/chess", moves=moves, square=square),
        answer=str(valid[0]).lower(),
        accepted=[str(item).lower() for item in valid],
    )
