"""moot: several LLMs answer a question together.

The public API is what this module exports; everything else is internal.
"""

from moot.agents import Agent
from moot.aggregate.vote import MajorityVote
from moot.errors import (
    ConfigError,
    ContextLengthError,
    MissingExtraError,
    ModelSpecError,
    MootError,
)
from moot.graphs.debate import Debate
from moot.models import load_model, register_backend
from moot.result import Result, Turn, Usage
from moot.society import Event, ResultEvent, Society, TokenEvent, TurnEvent

__all__ = [
    "Agent",
    "ConfigError",
    "ContextLengthError",
    "Debate",
    "Event",
    "MajorityVote",
    "MissingExtraError",
    "ModelSpecError",
    "MootError",
    "Result",
    "ResultEvent",
    "Society",
    "TokenEvent",
    "Turn",
    "TurnEvent",
    "Usage",
    "load_model",
    "register_backend",
]
