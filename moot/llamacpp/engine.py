"""The one interface a chat model talks to: submit a request, receive its chunks, cancel it.

Two engines run a GGUF behind it (`open_engine` picks one from the load options):
- `batched` (`moot.llamacpp.batched`, the default): a pool of contexts with several sequences
  each; calls that arrive together decode together, and each conversation keeps its KV cache in
  its own sequence, so a continued conversation evaluates only its new tokens, seeded or not.
- `simple` (`moot.llamacpp.simple`): one llama-cpp-python `Llama`, calls one after another,
  each agent's prefix kept in a RAM cache of llama.cpp states (skipped by seeded calls). Chosen
  when asked for, or when no engine is named and `chat_format` names a handler (such as
  `chatml-function-calling`), which only `Llama` runs.
Token fusion runs its calls through a `SerialEngine` of its own (`moot.llamacpp.serial`).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from moot.llamacpp.devices import default_gpu_layers
from moot.llamacpp.sampling import Sampling

if TYPE_CHECKING:
    from moot.llamacpp.chunks import Chunk
    from moot.llamacpp.model import LoadedModel
    from moot.llamacpp.prompt import ChatMessage


class LoadOptions(BaseModel):
    """Settings fixed when a GGUF is loaded; one engine is kept per distinct set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine: Literal["batched", "simple"] = "batched"
    """`batched`: calls decode together on a pool of contexts and each conversation keeps its
    own KV cache; `simple`: one call at a time on one llama-cpp-python `Llama` (the default only
    for a `chat_format` that is a handler, which the batched engine cannot run)."""
    n_ctx: int = Field(default=4096, ge=0)
    """Context window in tokens of one conversation (0: the model's own)."""
    sequences: int = Field(default=4, ge=1, le=256)
    """Batched engine: conversations each context holds at once (llama.cpp's n_seq_max); more
    wait their turn. Each takes n_ctx tokens of KV cache."""
    contexts: int = Field(default=1, ge=1, le=64)
    """Batched engine: contexts decoding in parallel on the one loaded model (each with
    n_threads threads)."""
    n_gpu_layers: int = Field(default_factory=default_gpu_layers, ge=-1)
    """Layers to offload to the GPU (-1: all; default: all on a GPU build of llama-cpp-python,
    0 on a CPU build)."""
    n_threads: int | None = Field(default=None, ge=1)
    """CPU threads, for generation and prompt evaluation alike (None: simple engine, half the
    cores for generation as llama-cpp-python does; batched engine, the cores shared among the
    contexts)."""
    n_batch: int = Field(default=512, ge=1)
    chat_format: str | None = None
    """A llama-cpp-python chat format name; None uses the template stored in the GGUF."""
    logprobs: bool = False
    """Simple engine: keep logits for every token (llama.cpp's logits_all), needed to return
    logprobs. The batched engine returns logprobs without it."""
    prefix_cache: bool = True
    """Simple engine: keep each conversation's state in RAM so a continued conversation skips
    its prefix. (The batched engine always keeps conversations in their sequences.)"""
    cache_bytes: int = Field(default=1 << 30, ge=0)
    """Simple engine: size of that RAM cache."""
    draft: int = Field(default=0, ge=0, le=16)
    """Batched engine: most tokens drafted per step by prompt lookup (`moot.llamacpp.drafting`;
    drafts are 1, 3, 7 or 15 tokens long, up to this; 0: off). A draft is verified in one
    decode with the next token, and a token decoded with others gets other logits than one
    decoded alone (as with any other chunking), so it is not a speed-only option."""

    SPEED_ONLY: ClassVar[frozenset[str]] = frozenset(
        {"n_threads", "contexts", "sequences", "cache_bytes"}
    )
    """Options that change how fast a reply comes, never its tokens (threads split rows, the
    batched engine decodes a sequence alike in any company). Not `n_gpu_layers`: GPU kernels
    sum in another order than CPU ones, so offloading changes logits in the last bits and, now
    and then, a token."""

    @model_validator(mode="before")
    @classmethod
    def _simple_for_a_handler_format(cls, data: Any) -> Any:
        if isinstance(data, dict) and "engine" not in data and data.get("chat_format"):
            from moot.llamacpp.prompt import is_handler_format

            if is_handler_format(str(data["chat_format"])):
                return {**data, "engine": "simple"}
        return data

    @model_validator(mode="after")
    def _drafts_need_the_batched_engine(self) -> LoadOptions:
        if self.draft and self.engine != "batched":
            raise ValueError(
                "draft: drafting runs on the batched engine, not the simple one (asked for, or "
                "picked for a handler chat_format)"
            )
        return self

    AS_BEFORE: ClassVar[dict[str, Any]] = {"draft": 0}
    """Options added after call caches were first written, at the value that replies as moot
    did before the option existed: left out of `reply_options`, so those caches still answer
    (keys written while one was still in them: `moot.models.llama.EARLIER_KEYS`)."""

    def reply_options(self) -> dict[str, Any]:
        """The options a reply's tokens depend on (all but `SPEED_ONLY`): a call cache keyed on
        them finds a run's calls again under another thread layout, and never replays a call
        made on the CPU for one on the GPU."""
        options = self.model_dump(exclude=set(self.SPEED_ONLY))
        return {k: v for k, v in options.items() if self.AS_BEFORE.get(k, object()) != v}


class EngineStats(BaseModel):
    """Counters over every call on one engine (all agents sharing its model)."""

    calls: int = 0
    prompt_tokens: int = 0
    """Prompt tokens sent."""
    prompt_tokens_evaluated: int = 0
    """Prompt tokens llama.cpp actually evaluated (the rest came from the KV cache)."""
    output_tokens: int = 0
    decode_steps: int = 0
    """Decodes that generated a sequence's tokens, counted per sequence (output_tokens /
    decode_steps: tokens per step, above 1 where drafts were kept)."""
    drafted: int = 0
    """Tokens drafted by prompt lookup and verified."""
    draft_kept: int = 0
    """Drafted tokens the model's sampler picked, so kept."""


def _ignore(item: Any) -> None:
    pass


@dataclass(eq=False)
class Request:
    """One completion: messages in, chunks out through `emit` (set by whoever reads them)."""

    messages: list[ChatMessage]
    sampling: Sampling
    stop: list[str] = field(default_factory=list)
    halted: Callable[[], bool] = lambda: False
    """Checked at every token; True ends this request alone (a deadline, a cancel)."""
    emit: Callable[[Chunk | BaseException | None], None] = _ignore
    """Receives each chunk, then None at the end, or an exception."""
    abandoned: bool = False
    """Set by a reader that stopped reading; the engine drops the request."""

    def stopped(self) -> bool:
        return self.abandoned or self.halted()

    def send(self, item: Chunk | BaseException | None) -> None:
        """Hand an item to the reader; one that is gone (a closed event loop) is dropped."""
        try:
            self.emit(item)
        except Exception:  # noqa: BLE001 - the engine must outlive any reader
            self.abandoned = True


class Engine(ABC):
    """A loaded model that completes requests from any thread: `submit` one, read its chunks
    (`moot.llamacpp.Completion`), `cancel` it."""

    model: LoadedModel
    """The weights: tokenizer, metadata, parameters."""

    def __init__(self) -> None:
        self.stats = EngineStats()
        self._stats_lock = threading.Lock()

    @property
    @abstractmethod
    def context_window(self) -> int:
        """Tokens one conversation holds."""

    @abstractmethod
    def submit(self, request: Request) -> None:
        """Queue `request`; its chunks arrive through `request.emit` from a worker thread."""

    @abstractmethod
    def cancel(self, request: Request, wait: bool = False) -> None:
        """Drop `request` (its reader stopped reading, was cancelled or timed out); `wait`
        returns only once the engine is done with it, so a call made next finds it free."""

    @abstractmethod
    def close(self, grace: float = 30.0) -> bool:
        """Free the model once no call runs, waiting at most `grace` seconds; False if one
        still does (freeing under it would crash: the caller keeps the engine alive)."""

    def count(self, usage: dict[str, int]) -> None:
        """Add a finished call's usage (a `usage_chunk`'s) to `stats`."""
        with self._stats_lock:
            self.stats.calls += 1
            self.stats.prompt_tokens += usage["prompt_tokens"]
            self.stats.prompt_tokens_evaluated += usage["prompt_tokens_evaluated"]
            self.stats.output_tokens += usage["completion_tokens"]
            self.stats.decode_steps += usage.get("decode_steps", 0)
            self.stats.drafted += usage.get("drafted", 0)
            self.stats.draft_kept += usage.get("draft_kept", 0)
