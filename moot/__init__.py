"""moot: several LLMs answer a question together.

The public API is what this module exports; everything else is internal.
"""

import os
from typing import TYPE_CHECKING

# llama.cpp's CPU threads meet at a barrier after every operation, an OpenMP barrier that spins
# by default: when another process holds a core, a thread spins while the one it waits for is
# off the CPU, and a 5 s debate on 2 busy cores took over 100 s (BENCHMARKS.md, issue 39).
# Waiting threads that sleep cost 5-7% on an idle machine. Set before llama.cpp's OpenMP library
# loads, which reads it once; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if TYPE_CHECKING:
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
    from moot.fusion import FusedChatModel
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

_EXPORTS = {
    "Agent": "moot.agents",
    "Aggregator": "moot.aggregate.base",
    "BaseProtocol": "moot.graphs.base",
    "CallCache": "moot.cache",
    "Cascade": "moot.graphs.cascade",
    "ConfidenceVote": "moot.aggregate.vote",
    "ConfigError": "moot.errors",
    "ConsistencySelect": "moot.aggregate.select",
    "ContextLengthError": "moot.errors",
    "CriticLoop": "moot.graphs.critic",
    "CrossCheckVote": "moot.aggregate.crosscheck",
    "Debate": "moot.graphs.debate",
    "Event": "moot.events",
    "FusedChatModel": "moot.fusion",
    "FusionStats": "moot.result",
    "Judge": "moot.aggregate.judge",
    "load_model": "moot.models",
    "load_society": "moot.society_file",
    "MajorityVote": "moot.aggregate.vote",
    "MissingExtraError": "moot.errors",
    "MixtureOfAgents": "moot.graphs.moa",
    "ModelSpecError": "moot.errors",
    "Moderation": "moot.checkpoints",
    "MootError": "moot.errors",
    "PairwiseRank": "moot.aggregate.judge",
    "Pipeline": "moot.graphs.pipeline",
    "register_backend": "moot.models",
    "Result": "moot.result",
    "ResultEvent": "moot.events",
    "RoundStats": "moot.result",
    "Router": "moot.graphs.router",
    "Society": "moot.society",
    "SocietySpec": "moot.spec",
    "TokenEvent": "moot.events",
    "TrajectoryVote": "moot.aggregate.trajectory",
    "Turn": "moot.result",
    "TurnEvent": "moot.events",
    "Usage": "moot.result",
    "Vote": "moot.aggregate.vote",
    "WeightedVote": "moot.aggregate.vote",
}
"""The public API: each name and the module that defines it. Imported on first use, so that
`import moot` is quick and the `moot` command can answer Ctrl-C while it loads (`moot.__main__`)."""

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


def _lazy_attribute(name: str) -> object:
    """The public names above and moot's modules, imported on first use."""
    import importlib

    if name in _EXPORTS:
        _import_api()
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # the next lookup does not come here
        return value
    if name in _submodules():
        _import_api()
        return importlib.import_module(f"moot.{name}")
    raise AttributeError(f"module 'moot' has no attribute {name!r}")


def _import_api() -> None:
    """Import what `import moot` imported before it was lazy: every module of the API but
    fusion's (numpy, an extra), so that `moot.graphs.cascade` and the like are there as before.
    (Modules of moot import `moot.prompts` as such, never `from moot import prompts`, which
    would come back here while they load.)"""
    import importlib

    for module in dict.fromkeys(_EXPORTS.values()):
        if module != "moot.fusion":
            importlib.import_module(module)


def _submodules() -> set[str]:
    """moot's modules and subpackages (`moot.merge`, `moot.config`), by name."""
    import pkgutil

    return {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_submodules()})


if not TYPE_CHECKING:  # type checkers read the imports above, and so catch a misspelled name
    __getattr__ = _lazy_attribute
