"""Answer extraction and aggregation."""

from moot.aggregate.extract import (
    EXTRACTORS,
    extract_boxed,
    extract_choice,
    extract_number,
    extract_text,
)
from moot.aggregate.vote import MajorityVote

__all__ = [
    "EXTRACTORS",
    "MajorityVote",
    "extract_boxed",
    "extract_choice",
    "extract_number",
    "extract_text",
]
