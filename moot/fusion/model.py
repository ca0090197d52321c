"""`FusedChatModel`: several llama.cpp models decode one answer together, token by token.

At every token each model that takes part is stepped on its own context (its KV cache kept
between tokens and between calls), its repeat penalty applied to its own logits, and then:
- `prob`: the next token is drawn from the weighted average of the models' probabilities
  (GaC, Yu et al. 2024);
- `logit`: from the weighted average of their logits;
- `colm`: the base model (the first) generates, and a gate decides per token whether to defer
  to the assistant (the second), which then draws that token (Co-LLM, Shen et al. 2024). The
  assistant is fed lazily: only when the gate defers is it caught up, in one batch, on the tokens
  since its last step.
The fused distribution then goes through llama.cpp's own sampler chain (top-k, top-p, min-p,
temperature, a seeded draw; greedy at temperature 0), as a single model's would.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, FiniteFloat, PrivateAttr, ValidationError, model_validator

from moot.config import describe
from moot.errors import ConfigError, ContextLengthError, MissingExtraError, ModelSpecError
from moot.fusion.gates import LearnedGate
from moot.llamacpp import (
    SAMPLING_FIELDS,
    Chunk,
    Decoder,
    ModelCache,
    Request,
    Sampler,
    Sampling,
    SerialEngine,
    Text,
    chat_formatter,
    chat_prompt,
    check_gguf,
    chunk,
    default_cache,
    default_gpu_layers,
    repeat_penalised,
    token_logprobs,
    usage_chunk,
)
from moot.llamacpp.completion import POLL
from moot.models.llama import LocalChatModel

Strategy = Literal["prob", "logit", "colm"]


class FusedChatModel(LocalChatModel):
    """Several GGUF models (one tokenizer) decoding one reply; a LangChain chat model, so any
    agent can use it. `response_metadata["fusion"]` says which model gave each token
    (`sources`, indexes into `models`), each model's share, the deferral rate (colm) and what
    each model evaluated; `usage_metadata` counts the prompt once per model that read it."""

    models: list[str] = Field(min_length=1)
    """GGUF paths, `llama:PATH` or `local`; for colm the base model first, then the assistant."""
    strategy: Strategy = "prob"
    weights: list[FiniteFloat] | None = None
    """prob/logit: one weight per model (normalised to sum 1); None: equal weights."""
    threshold: float | None = Field(default=None, ge=0, le=1)
    """colm: without a gate, defer when the base model's top probability is at most this
    (default 0.5; 0 never defers, 1 always); with a gate, defer when the gate's P(defer) is at
    least this (default: the gate's own)."""
    gate: str | None = None
    """colm: a learned gate's JSON file (`moot fusion train-gate`)."""
    defer_first: int = Field(default=0, ge=0)
    """colm: the assistant gives the first N tokens of every reply, whatever the gate says.
    They set the reply's style: a small base model sure of a one-line answer ("Answer: 104")
    never defers on it, where the assistant would have shown its working."""
    n_ctx: int = Field(default=4096, ge=0)
    n_batch: int = Field(default=512, ge=1)
    n_threads: int | None = Field(default=None, ge=1)
    """Threads of each model's context, for generation and prompt alike (None: all usable
    cores; the models run one after another)."""
    n_gpu_layers: int = Field(default_factory=default_gpu_layers, ge=-1)
    """Layers of each model offloaded to the GPU (-1: all; default: all on a GPU build of
    llama-cpp-python, 0 on a CPU build)."""
    repack: bool = True
    """Repack weights for llama.cpp's faster CPU kernels (Qwen2.5-Coder-1.5B: a token 38 -> 31
    ms, a deferral's catch-up of 4 tokens 106 -> 71 ms; BENCHMARKS.md). False: each model
    computes exactly what it computes alone on the batched engine (which never repacks), so
    weights (1, 0) give the first model's own tokens there, bit for bit."""

    _decoders: tuple[Decoder, ...] = PrivateAttr()
    _gate: LearnedGate | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _settings_fit_the_strategy(self) -> FusedChatModel:
        count = len(self.models)
        if self.strategy == "colm":
            if count != 2:
                raise ValueError(f"colm takes two models (base, assistant), got {count}")
            if self.weights is not None:
                raise ValueError("weights are for prob and logit; colm uses a gate or threshold")
        else:
            if self.gate is not None or self.threshold is not None or self.defer_first:
                raise ValueError(
                    f"gate, threshold and defer_first are for colm, not {self.strategy}"
                )
            if self.weights is not None:
                if len(self.weights) != count:
                    raise ValueError(f"{len(self.weights)} weights for {count} models")
                if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                    raise ValueError("weights must be at least 0 and not all 0")
        return self

    def __init__(self, **fields: Any) -> None:
        """Check the settings, then load the models (errors are moot's own, not pydantic's)."""
        try:
            super().__init__(**fields)
        except ValidationError as error:
            raise ConfigError(f"FusedChatModel: {describe(error)}") from error
        self._load()

    def _load(self) -> None:
        paths = [gguf_path(spec) for spec in self.models]
        check_tokenizers(paths)
        if self.gate is not None:
            self._gate = LearnedGate.load(self.gate)
        self._decoders = tuple(
            shared_decoder(
                path,
                copy=paths[:index].count(path),  # a model named twice runs on two contexts
                cache=self.loaded_models,
                hidden=self._gate is not None and index == 0,
                n_ctx=self.n_ctx,
                n_batch=self.n_batch,
                n_threads=self.n_threads,
                n_gpu_layers=self.n_gpu_layers,
                repack=self.repack,
            )
            for index, path in enumerate(paths)
        )
        if self._gate is not None and self._gate.hidden_size != self._decoders[0].n_embd:
            raise ConfigError(
                f"gate {self.gate} was trained on {self._gate.base} (hidden size "
                f"{self._gate.hidden_size}) but the base model {paths[0].name} has hidden size "
                f"{self._decoders[0].n_embd}: train a gate for this base model"
            )
        self._engine = _FusionEngine(self)

    @property
    def decoders(self) -> tuple[Decoder, ...]:
        """Each model's decoder, in the order of `models` (shared with other fusions of the
        same file and settings)."""
        return self._decoders

    @property
    def _llm_type(self) -> str:
        return "moot-fused"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        fusion = ("models", "strategy", "weights", "threshold", "gate", "defer_first", "repack")
        return {name: getattr(self, name) for name in (*fusion, *SAMPLING_FIELDS)}

    def _sampling(self, kwargs: dict[str, Any]) -> Sampling:
        """A fused distribution is drawn from without a grammar."""
        return super()._sampling({**kwargs, "grammar": None, "answer_schema": None})

    @property
    def reply_model_name(self) -> str:
        return "fused:" + "+".join(decoder.name for decoder in self._decoders)


class _FusionEngine(SerialEngine):
    """A fused model's calls, one at a time on a lasting worker (see `keeps_worker`), each
    holding its models' decoders (which other fusions may share) while it runs. It holds its
    model weakly, and stops its worker once the model is gone."""

    keeps_worker = True

    def __init__(self, fused: FusedChatModel) -> None:
        super().__init__()
        self.fused = weakref.ref(fused)
        self.decoders = fused.decoders
        self.model = self.decoders[0].model
        self.formatter = chat_formatter(self.model, None)
        weakref.finalize(fused, self.close, 0.0)

    @property
    def context_window(self) -> int:
        return min(decoder.n_ctx for decoder in self.decoders)

    def generate(self, request: Request) -> Iterator[Chunk]:
        """The reply's chunks, then its usage with `response_metadata["fusion"]`."""
        fused = self.fused()
        if fused is None:  # its model is gone: nobody reads the reply
            return
        prompt, cuts, stops = chat_prompt(
            self.formatter, self.decoders[0].tokenize, request.messages, request.stop
        )
        if len(prompt) >= self.context_window:
            raise ContextLengthError(
                f"the prompt ({len(prompt)} tokens) does not fit the context window of "
                f"{self.context_window} tokens: shorten it or raise n_ctx"
            )
        with ExitStack() as held:
            for decoder in sorted(self.decoders, key=id):  # one order: no deadlock
                while not decoder.lock.acquire(timeout=POLL):
                    if request.stopped():
                        return
                held.callback(decoder.lock.release)
            yield from _Fusion(fused, prompt, cuts, stops, request).run()


class _Fusion:
    """One fused generation (the decoders' locks held); it ends early, with no last chunks,
    once the request is stopped."""

    def __init__(
        self,
        model: FusedChatModel,
        prompt: list[int],
        cuts: list[int],
        stop: list[str],
        request: Request,
    ) -> None:
        self.model = model
        self.decoders = model.decoders
        self.prompt, self.cuts = prompt, cuts
        self.request = request
        self.sampling = request.sampling
        self.text = Text(stop)
        self.sampler = Sampler(self.decoders[0].model, self.sampling, penalties=False)
        self.generated: list[int] = []
        self.sources: list[int] = []
        weights = np.asarray(model.weights or [1.0] * len(self.decoders), dtype=np.float64)
        self.weights = weights / weights.sum()
        self.every_token = (
            [0] if model.strategy == "colm" else [i for i, w in enumerate(self.weights) if w > 0]
        )
        """Models stepped at every token: colm's assistant is caught up when consulted, a model
        of weight 0 never runs."""
        self.read = [False] * len(self.decoders)
        """Which models have read the prompt (colm's assistant only once consulted)."""
        for decoder in self.decoders:
            decoder.evaluated = 0

    def run(self) -> Iterator[Chunk]:
        try:
            for index in self.every_token:
                self._catch_up(index)
            finish = "length"
            while len(self.generated) < self.sampling.max_tokens:
                if self.request.stopped():
                    return
                token, source, values = self._next()
                if self.decoders[0].is_end(token):
                    finish = "stop"
                    break
                self.generated.append(token)
                self.sources.append(source)
                shown, stopped = self.text.add(self.decoders[0].piece(token))
                logprobs = self._logprobs(values, token)
                if stopped:
                    yield chunk(shown, "stop", logprobs)
                    finish = ""
                    break
                if shown or logprobs:
                    yield chunk(shown, None, logprobs)
                if len(self.prompt) + len(self.generated) >= min(d.n_ctx for d in self.decoders):
                    break  # no cell left for the next token
                for index in self.every_token:
                    self.decoders[index].step(token)
            if self.request.stopped():  # the generation was cut short
                return
            if finish:
                yield chunk(self.text.flush(), finish, None)
            sent = len(self.prompt) * sum(self.read)
            evaluated = sum(decoder.evaluated for decoder in self.decoders)
            yield usage_chunk(sent, evaluated, len(self.generated), {"fusion": self._report()})
        finally:
            self.sampler.free()

    def _catch_up(self, index: int) -> None:
        """Bring a model to the prompt plus every token generated so far: the prompt by the
        engine's chunking rule, generated tokens missed since its last step in one batch."""
        self.decoders[index].reach(
            self.prompt + self.generated, self.cuts, split_last=not self.generated
        )
        self.read[index] = True

    def _penalised(self, index: int) -> np.ndarray:
        """The model's logits with llama.cpp's repeat penalty over the last generated tokens."""
        logits = self.decoders[index].logits()
        return repeat_penalised(logits, self.generated, self.sampling.repeat_penalty)

    def _next(self) -> tuple[int, int, np.ndarray]:
        """The next token, the model it is credited to, and the distribution it came from."""
        strategy = self.model.strategy
        if strategy == "colm":
            base = self._penalised(0)
            if self._defers(base):
                self._catch_up(1)
                values, source = self._penalised(1), 1
            else:
                values, source = base, 0
            return self.sampler.draw(values), source, values
        active = self.every_token
        logits = [self._penalised(index) for index in active]
        weights = [self.weights[index] for index in active]
        if strategy == "prob":
            probs = [_softmax(row) for row in logits]
            mixed = sum(w * p for w, p in zip(weights, probs, strict=True))
            with np.errstate(divide="ignore"):  # a probability of 0 is a logit of -inf
                values = np.log(mixed).astype(np.float32)
            token = self.sampler.draw(values)
            support = [p[token] for p in probs]
        else:
            mixed = sum(w * row.astype(np.float64) for w, row in zip(weights, logits, strict=True))
            values = np.asarray(mixed, dtype=np.float32)
            token = self.sampler.draw(values)
            support = [row[token] - _log_sum_exp(row) for row in logits]
        return token, active[int(np.argmax(support))], values

    def _defers(self, base_logits: np.ndarray) -> bool:
        if len(self.generated) < self.model.defer_first:
            return True
        gate = self.model._gate
        if gate is not None:
            threshold = self.model.threshold if self.model.threshold is not None else gate.threshold
            return gate.probability(self.decoders[0].hidden()) >= threshold
        threshold = 0.5 if self.model.threshold is None else self.model.threshold
        return float(_softmax(base_logits).max()) <= threshold

    def _logprobs(self, values: np.ndarray, token: int) -> dict[str, Any] | None:
        k = self.sampling.top_logprobs
        return None if k is None else token_logprobs(values, token, k, self.decoders[0].piece)

    def _report(self) -> dict[str, Any]:
        counts = [self.sources.count(index) for index in range(len(self.decoders))]
        total = max(1, len(self.sources))
        return {
            "strategy": self.model.strategy,
            "models": [decoder.name for decoder in self.decoders],
            "sources": self.sources,
            "tokens_by_model": counts,
            "share_by_model": [count / total for count in counts],
            "evaluated_by_model": [decoder.evaluated for decoder in self.decoders],
            "deferral_rate": counts[1] / total if self.model.strategy == "colm" else None,
        }


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits.astype(np.float64) - logits.max())
    return exp / exp.sum()


def _log_sum_exp(logits: np.ndarray) -> float:
    top = float(logits.max())
    return top + float(np.log(np.exp(logits.astype(np.float64) - top).sum()))


def gguf_path(spec: str) -> Path:
    """A fused model's path from `local`, `llama:PATH` or a plain path."""
    if spec == "local":
        from moot.models.embedded import embedded_model_path

        return Path(embedded_model_path()).resolve()
    path = spec.removeprefix("llama:")
    if ":" in path.split("/")[0] and not Path(path).exists():
        raise ModelSpecError(
            f"cannot fuse {spec!r}: token-level fusion runs local llama.cpp models only "
            "(use 'local', 'llama:/path/model.gguf' or a .gguf path)"
        )
    return check_gguf(Path(path).expanduser())


def check_tokenizers(paths: list[Path]) -> None:
    """Refuse models whose GGUF headers hold different tokenizers (naming the difference)."""
    try:
        from moot.gguf import GGUFFile, check_same_tokenizer, gguf_module

        gguf_module()
    except (ImportError, MissingExtraError) as error:
        raise MissingExtraError("gguf", "fusion", "token-level fusion") from error
    check_same_tokenizer([GGUFFile(path) for path in paths], what="fused")


def shared_decoder(
    path: Path, copy: int = 0, cache: ModelCache = default_cache, **options: Any
) -> Decoder:
    """The decoder for `path` with these options, loaded once into `cache` (`copy` numbers
    further instances of the same model, for a fusion that names it more than once)."""
    key = ("decoder", path, copy, *sorted(options.items()))
    return cache.get(key, lambda: Decoder(path, **options))
