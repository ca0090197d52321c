"""How sure a model was of its answer: from token logprobs, or from what it says."""

from __future__ import annotations

import math
import re
from typing import Any

_STATED = re.compile(r"confidence\s*[:=]\s*(\d+(?:\.\d+)?)\s*(%?)", re.IGNORECASE)
_MARKER = re.compile(r"answer", re.IGNORECASE)


def stated_confidence(text: str) -> float | None:
    """The last "Confidence: 0.8" (or "80%") in a reply, in [0, 1]."""
    found = _STATED.findall(text)
    if not found:
        return None
    number, percent = found[-1]
    value = float(number) / (100 if percent or float(number) > 1 else 1)
    return min(max(value, 0.0), 1.0)


def logprob_confidence(logprobs: dict[str, Any] | None) -> float | None:
    """Probability of the answer's tokens: exp of the mean logprob of the tokens after the last
    "Answer" marker (all tokens when there is none). OpenAI's logprobs shape."""
    content = (logprobs or {}).get("content") or []
    if not content:
        return None
    ends, text = [], ""
    for entry in content:
        text += entry["token"]
        ends.append(len(text))
    markers = list(_MARKER.finditer(text))
    start = 0
    if markers:  # the answer starts after the token in which the last marker ends
        last = markers[-1].end()
        start = next(index for index, end in enumerate(ends) if end >= last) + 1
    tail = [entry["logprob"] for entry in content[start:] if entry["token"].strip(" :\n*")]
    values = tail or [entry["logprob"] for entry in content]
    return math.exp(sum(values) / len(values))
