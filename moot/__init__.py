"""moot: several LLMs answer a question together.

The public API is what this module exports; everything else is internal.
"""

import os

# llama.cpp's CPU threads meet at a barrier after every operation, an OpenMP barrier that spins
# by default: when another process holds a core, a thread spins while the one it waits for is
# off the CPU, and a 5 s debate on 2 busy cores took over 100 s (BENCHMARKS.md, issue 39).
# Waiting threads that sleep cost 5-7% on an idle machine. Set before llama.cpp's OpenMP library
# loads, which reads it once; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from moot.agents import Agent
from moot.aggregate.base import Aggregator
from moot.aggregate.crosscheck import CrossCheckVote
from moot.aggregate.judge import Judge, PairwiseRank
from moot.aggregate.select import ConsistencySelect
from moot.aggregate.trajectory import TrajectoryVote
from moot.aggregate.vote import ConfidenceVote, MajorityVote, Vote, WeightedVote
from moot.cache import CallCache
from moot.checkpoints import Moderation
from moot.errors import (
    ConfigError,
    ContextLengthError,
    MissingExtraError,
    ModelSpecError,
    MootError,
)
from moot.events import Event, ResultEvent, TokenEvent, TurnEvent
from moot.graphs.base import BaseProtocol
from moot.graphs.cascade import Cascade
from moot.graphs.critic import CriticLoop
from moot.graphs.debate import Debate
from moot.graphs.moa import MixtureOfAgents
from moot.graphs.pipeline import Pipeline
from moot.graphs.router import Router
from moot.models import load_model, register_backend
from moot.result import FusionStats, Result, RoundStats, Turn, Usage
from moot.society import Society
from moot.society_file import load_society
from moot.spec import SocietySpec

__all__ = [
    "Agent",
    "Aggregator",
    "BaseProtocol",
    "CallCache",
    "Cascade",
    "ConfidenceVote",
    "ConsistencySelect",
    "ConfigError",
    "ContextLengthError",
    "CriticLoop",
    "CrossCheckVote",
    "Debate",
    "Event",
    "FusedChatModel",
    "FusionStats",
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
    "SocietySpec",
    "TokenEvent",
    "TrajectoryVote",
    "Turn",
    "TurnEvent",
    "Usage",
    "Vote",
    "WeightedVote",
    "load_model",
    "load_society",
    "register_backend",
]


_SUBPACKAGES = {"bench", "fusion", "gguf", "integrations", "merge", "presets", "testing", "viewer"}
"""Subpackages the README calls as `moot.NAME.function(...)`, imported on first use (some need
an extra: bench plots need matplotlib, merge and fusion numpy and gguf)."""


def __getattr__(name: str) -> object:
    """`moot.FusedChatModel` and the subpackages above, imported on first use."""
    if name == "FusedChatModel":
        from moot.fusion import FusedChatModel

        return FusedChatModel
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"moot.{name}")
    raise AttributeError(f"module 'moot' has no attribute {name!r}")
