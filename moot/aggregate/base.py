"""The aggregator contract: `Aggregator`, which chooses a run's final answer, and the
`AnswerFormat` every aggregator also is. `Aggregator` is defined with the vocabulary of
protocols (`moot.graphs.types`), beside the `RunContext` it is handed, which names it back."""

from moot.aggregate.format import AnswerFormat
from moot.graphs.types import Aggregator

__all__ = ["Aggregator", "AnswerFormat"]
