"""Answer extractors: from a model's reply to a comparable answer string (or None)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal, get_args

ExtractKind = Literal["auto", "number", "boxed", "choice", "square", "yesno", "short", "text"]
EXTRACT_KINDS: tuple[str, ...] = get_args(ExtractKind)
"""The built-in answer formats, by name. "auto" is decided per question (`kind_for`)."""
Extractor = Callable[[str], str | None]

_ANSWER_LINE = re.compile(
    r"\b(?:final\s+)?answer\s*(?:is\s*:?|:|=)\s*(?:answer\s*:\s*)*(.+)", re.IGNORECASE
)
"""An "Answer:" marker; a repeated one ("Answer: Answer: Paris", small models) counts once."""
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_LATEX_FRACTION = re.compile(
    r"(?:(?<![\d.])(-?\d+) ?)?(-?)\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}"
)


def _fraction_as_decimal(match: re.Match[str]) -> str:
    r"""'\frac{9}{2}' -> ' 4.5 ', '3\frac{1}{2}' -> ' 3.5 '; a fraction of non-numbers -> ' '.

    Without this the last number of `\boxed{\frac{9}{2}}` is 2 (seen from a 0.5B on GSM8K)."""
    whole, minus, numerator, denominator = match.groups()
    try:
        value = float(numerator.replace(",", "")) / float(denominator.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return " "
    if minus:
        value = -value
    if whole is not None:
        integer = int(whole)
        value = integer - value if whole.startswith("-") else integer + value
    return f" {value!r} "


def _answer_line(text: str) -> str | None:
    """What follows the last "Answer:" marker, if the reply has one."""
    matches = [m for line in text.splitlines() if (m := _ANSWER_LINE.search(line))]
    return matches[-1].group(1).strip() if matches else None


def normalise_number(raw: str) -> str | None:
    """'1,234.50' -> '1234.5'; '42.0' -> '42'; '\\frac{9}{2}' -> '4.5'; None when `raw` holds no
    number."""
    found = _NUMBER.findall(_LATEX_FRACTION.sub(_fraction_as_decimal, raw))
    if not found:
        return None
    cleaned = found[-1].replace(",", "")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    if value.is_integer():
        return str(int(value))
    return repr(value)


def extract_number(text: str) -> str | None:
    """The number on the "Answer:" line, else the last number in the reply."""
    line = _answer_line(text)
    if line is not None and (number := normalise_number(line.split("=")[-1])) is not None:
        return number
    boxed = extract_boxed(text)
    if boxed is not None and (number := normalise_number(boxed)) is not None:
        return number
    return normalise_number(text)


def extract_boxed(text: str) -> str | None:
    r"""The contents of the last \boxed{...}, braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for index in range(begin, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return text[begin:index].strip()
            depth -= 1
    return None


_CHOICE = re.compile(r"(?<![A-Za-z])\(?([A-J])\)?(?![A-Za-z])")
_BOXED_CHOICE = re.compile(r"\\boxed\{\s*(?:\\(?:text|textbf|mathrm)\{\s*)?\(?([A-J])\)?\s*\}")
_BRACKETED_CHOICE = re.compile(r"\(([A-J])\)")
_MARKED_CHOICE = re.compile(r"(?<![A-Za-z(])([A-J])[).:](?!\w)")


def extract_choice(text: str) -> str | None:
    """A choice letter A-J: from the "Answer:" line, else the last boxed one (`\\boxed{B}` or
    `\\boxed{\\text{B}}`, which math-tuned models write), else the last bracketed one like "(B)"
    (as Du et al.'s MMLU scorer reads), else the last one marked "B)", "B." or "B:".

    Bracketed letters come before marked ones because prose ends sentences with capitals: in
    "(C) Sister chromatids separate during meiosis I." the answer is C, not I."""
    line = _answer_line(text)
    if line is not None and (match := _CHOICE.search(line)):
        return match.group(1)
    matches = (
        _BOXED_CHOICE.findall(text)
        or _BRACKETED_CHOICE.findall(text)
        or _MARKED_CHOICE.findall(text)
    )
    return matches[-1] if matches else None


_SQUARE = re.compile(r"(?<![A-Za-z0-9])([a-hA-H][1-8])(?![A-Za-z0-9])")


def extract_square(text: str) -> str | None:
    """A chess square like "e4": from the "Answer:" line, else the last square in the reply."""
    line = _answer_line(text)
    found = _SQUARE.findall(line) if line is not None else []
    found = found or _SQUARE.findall(text)
    return found[-1].lower() if found else None


def last_labelled(text: str, label: str, value: str) -> str | None:
    """What the reply's last "LABEL: VALUE" line says (e.g. "Verdict: accept"), or None.

    `value` is a regular expression; markdown bold around the value is allowed.
    """
    found = re.findall(rf"{label}\s*:\s*\**\s*({value})\b", text, re.IGNORECASE)
    return found[-1] if found else None


def normalise_text(raw: str) -> str:
    """Lower case, no surrounding punctuation or markup, single spaces."""
    cleaned = re.sub(r"[*_`\"']", "", raw).strip().strip(".!?:;,").strip()
    return re.sub(r"\s+", " ", cleaned).lower()


def extract_text(text: str) -> str | None:
    """The "Answer:" line, else the last non-empty line, normalised."""
    line = _answer_line(text)
    if line is None:
        lines = [line for line in text.splitlines() if line.strip()]
        line = lines[-1] if lines else None
    if line is None:
        return None
    return normalise_text(line) or None


_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def extract_yesno(text: str) -> str | None:
    """ "yes" or "no": the first on the "Answer:" line, else the first in the reply (a reply
    leads with its stance; what follows may quote others' answers)."""
    line = _answer_line(text)
    if line is not None and (match := _YES_NO.search(line)):
        return match.group(1).lower()
    match = _YES_NO.search(text)
    return match.group(1).lower() if match else None


_LEAD = re.compile(r"^(?:(?:the|my|final)\s+)*answer\s+(?:is|would be)\s+|^(?:it|this)\s+is\s+")
_ARTICLE = re.compile(r"^(?:the|a|an)\s+")
_COPULA = re.compile(r"\s+(?:is|are|was|were)\s+")
_ECHO = re.compile(r"\banswer")
_ECHO_AFTER = re.compile(r"(.+?)[.!]\s+answer\s+(?:in|with|using)\b")  # "paris. answer in..."


def short_answer(raw: str) -> str | None:
    """A short answer, normalised so that "Paris", "paris." and "The capital of France is
    Paris" vote together: lower case, no "the answer is", and of "X is Y" the shorter side."""
    text = _LEAD.sub("", normalise_text(raw.split("\n")[0]))
    sides = [side for side in _COPULA.split(text) if side]
    if len(sides) > 1:
        text = min(sides, key=lambda side: len(side.split()))
    text = text.split(",")[0]  # "paris, france", "paris, frances capital city" -> "paris"
    text = _ARTICLE.sub("", text).strip(" .!?:;,")
    if _ECHO.search(text):  # the instruction echoed back: "answer in one to three words"
        # ...unless after a first sentence: "Paris. Answer with one to three words."
        first = _ECHO_AFTER.match(text)
        return short_answer(first.group(1)) if first and not _ECHO.search(first.group(1)) else None
    return text or None


_BARE_ANSWER = re.compile(r"[\w][\w ,.'!?-]*")


_SENTENCE = re.compile(r"([^.!?\n]+)([.!?\n]?)")


def extract_short(text: str) -> str | None:
    """The "Answer:" line as a `short_answer`; without one, a reply of one line of at most
    four words ("Paris."), else the first sentence, not a question, that says "X is Y" or "the
    answer would be Y" with a side of at most three words ("The capital of Italy is Rome. It
    is..." -> "rome"; a reply that repeats the question first is not answering "what"); else
    None."""
    line = _answer_line(text)
    if line is not None and (found := short_answer(line)) is not None:
        return found
    bare = text.strip()
    if "\n" not in bare and len(bare.split()) <= 4 and _BARE_ANSWER.fullmatch(bare):
        return short_answer(bare)
    for sentence, end in _SENTENCE.findall(bare):
        says = _COPULA.search(sentence) or _LEAD.match(normalise_text(sentence))
        found = short_answer(sentence) if says and end != "?" else None
        if found and len(found.split()) <= 3:
            return found
    return None


_OPTIONS = re.compile(r"(?:^[ \t]*\(?([A-J])[).:]|(?:^|\s)\(?([A-J])\))\s+\S", re.MULTILINE)
"""Lettered options: "A)" or "(A)" anywhere, "A." or "A:" only where a line starts ("by A.
Smith and B. Jones", "plan A: ... plan B: ..." offer no options)."""
# A sum: digits around an operator ("-" only between short numbers: 2014-2015 is a span).
_ARITHMETIC = re.compile(r"\d\s*[+*/x×÷^]\s*\d|(?<!\d)\d{1,3}\s*-\s*\d{1,3}(?!\d)|\d\s*%")
_ASKS_NUMBER = re.compile(
    r"\bhow (?:many|much|old|far|long|tall|big|heavy)\b|\b(?:what|which) (?:number|year)\b|"
    r"\b(?:square|cube) root\b|\b(?:calculate|compute|solve)\b",
    re.IGNORECASE,
)
_NUMBER_WORD = re.compile(
    r"\b(?:sum|product|difference|quotient|percent(?:age)?|average)\b\D*\d", re.IGNORECASE
)
_ASKS_YES_NO = re.compile(
    r"^\s*(?!(?:can|could|will|would) you\b)(?:is|are|was|were|do|does|did|can|could|will|"
    r"would|should|shall|has|have|had|may|must|isn't|aren't|doesn't|don't|didn't|can't|won't)\b",
    re.IGNORECASE,
)


def kind_for(question: str) -> ExtractKind:
    """The answer format "auto" means for `question`: "choice" where it offers lettered
    options, "number" where it asks for a quantity or holds a sum, "yesno" where it is a
    yes/no question, else "short" (a few words)."""
    letters = {match.group(1) or match.group(2) for match in _OPTIONS.finditer(question)}
    if len(letters) >= 2 and "A" in letters:
        return "choice"
    if _ASKS_YES_NO.search(question):  # "Is 2+2 equal to 4?" asks yes or no
        return "yesno"
    if any(p.search(question) for p in (_ARITHMETIC, _ASKS_NUMBER, _NUMBER_WORD)):
        return "number"
    return "short"


EXTRACTORS: dict[str, Extractor] = {
    "auto": extract_short,  # only where no question decides it (see `kind_for`)
    "number": extract_number,
    "boxed": extract_boxed,
    "choice": extract_choice,
    "square": extract_square,
    "yesno": extract_yesno,
    "short": extract_short,
    "text": extract_text,
}
