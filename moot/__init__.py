"""moot: several LLMs answer a question together.

The public API is what this module exports; everything else is internal.
"""

from moot.agents import Agent
from moot.aggregate.vote import ConfidenceVote, Judge, MajorityVote, PairwiseRank, WeightedVote
from moot.checkpoints import Moderation
from moot.errors import (
    ConfigError,
    ContextLengthError,
    MissingExtraError,
    ModelSpecError,
    MootError,
)
from moot.graphs.cascade import Cascade
from moot.graphs.critic import CriticLoop
from moot.graphs.debate import Debate
from moot.graphs.moa import MixtureOfAgents
from moot.graphs.pipeline import Pipeline
from moot.graphs.router import Router
from moot.models import load_model, register_backend
from moot.result import Result, RoundStats, Turn, Usage
from moot.society import Event, ResultEvent, Society, TokenEvent, TurnEvent
from moot.society_file import load_society

__all__ = [
    "Agent",
    "Cascade",
    "ConfidenceVote",
    "ConfigError",
    "ContextLengthError",
    "CriticLoop",
    "Debate",
    "Event",
    "Judge",
    "MajorityVote",
    "MissingExtraError",
    "MixtureOfAgents",
    "ModelSpecError",
    "Moderation",
    "MootError",
    "PairwiseRank",
    "Pipeline",
    "Result",
    "ResultEvent",
    "RoundStats",
    "Router",
    "Society",
    "TokenEvent",
    "Turn",
    "TurnEvent",
    "Usage",
    "WeightedVote",
    "load_model",
    "load_society",
    "register_backend",
]
