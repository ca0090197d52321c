"""Answer extraction and aggregation."""

from moot.aggregate.extract import (
    EXTRACTORS,
    extract_boxed,
    extract_choice,
    extract_number,
    extract_text,
)
from moot.aggregate.vote import Aggregator, AnswerFormat, Judge, MajorityVote

__all__ = [
    "EXTRACTORS",
    "Aggregator",
    "AnswerFormat",
    "Judge",
    "MajorityVote",
    "extract_boxed",
    "extract_choice",
    "extract_number",
    "extract_text",
]
