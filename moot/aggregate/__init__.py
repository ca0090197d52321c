"""Answer extraction and aggregation: `extract` reads answers from replies, `vote` counts them,
`judge` has agents of the aggregator's own read them; `base` is the contract."""

from moot.aggregate.extract import (
    EXTRACTORS,
    extract_boxed,
    extract_choice,
    extract_number,
    extract_text,
)

__all__ = ["EXTRACTORS", "extract_boxed", "extract_choice", "extract_number", "extract_text"]
