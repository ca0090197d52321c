"""The simple engine: one llama-cpp-python `Llama`, one call at a time.

Calls run one after another on a worker thread, through llama-cpp-python's own
`create_chat_completion`. Each conversation's state is kept in a RAM cache of llama.cpp states
so a continued conversation skips its prefix; a seeded call skips the cache and evaluates its
whole prompt, because there a cached prefix changes logits in the last bits.

An unseeded call gets a fresh random seed: llama-cpp-python derives one from the seed it was
loaded with, so every process would otherwise draw the same samples.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from moot.errors import ContextLengthError, ModelSpecError
from moot.llamacpp.chunks import Chunk, usage_chunk
from moot.llamacpp.engine import LoadOptions, Request
from moot.llamacpp.model import LoadedModel, require_llama_cpp
from moot.llamacpp.prompt import registered_formatter
from moot.llamacpp.sampling import SAMPLING_FIELDS
from moot.llamacpp.serial import SerialEngine


class SimpleEngine(SerialEngine):
    """A `Llama` behind a lasting serial worker, counting what each call evaluates."""

    keeps_worker = True

    def __init__(self, path: Path, options: LoadOptions) -> None:
        super().__init__()
        llama_class = _counting_llama_class()
        if options.chat_format is not None:
            registered_formatter(options.chat_format)  # an unknown name: a ModelSpecError now
        as_named = {"n_ctx", "n_gpu_layers", "n_threads", "n_batch", "chat_format"}  # by `Llama`
        try:
            self.llama = llama_class(
                model_path=str(path),
                **options.model_dump(include=as_named),
                # The batch default is every core, which oversubscribes a busy machine.
                n_threads_batch=options.n_threads,
                logits_all=options.logprobs,
                verbose=False,
            )
        except (ValueError, RuntimeError) as error:
            raise ModelSpecError(
                f"llama.cpp could not load {path}: {error} (check the load options: "
                f"n_ctx={options.n_ctx}, n_batch={options.n_batch}, "
                f"n_gpu_layers={options.n_gpu_layers}; a large n_ctx needs much memory)"
            ) from error
        if options.prefix_cache:
            self.llama.set_cache(_compact_ram_cache(options.cache_bytes, options.logprobs))
        self.model = LoadedModel(self.llama._model, path, options.n_gpu_layers)

    @property
    def context_window(self) -> int:
        return int(self.llama.n_ctx())

    def generate(self, request: Request) -> Iterator[Chunk]:
        llama: Any = self.llama
        sampling = request.sampling
        params: dict[str, Any] = {name: getattr(sampling, name) for name in SAMPLING_FIELDS}
        if sampling.seed is None:
            params["seed"] = secrets.randbits(32)
        if request.stop:
            params["stop"] = request.stop
        if sampling.grammar is not None:
            from llama_cpp import LlamaGrammar

            params["grammar"] = LlamaGrammar.from_string(sampling.grammar, verbose=False)
        if sampling.top_logprobs is not None:
            params["logprobs"] = True
            params["top_logprobs"] = sampling.top_logprobs
        cache = llama.cache
        if sampling.seed is not None:  # reproducible: the whole prompt, no cached state
            llama.reset()
            llama.cache = None
        llama.stop_check = request.stopped
        try:
            stream = llama.create_chat_completion(messages=request.messages, stream=True, **params)
            for raw in stream:
                chunk = cast(Chunk, raw)
                if sampling.top_logprobs is not None:
                    _trim_top_logprobs(chunk, sampling.top_logprobs)
                yield chunk
        except ValueError as error:
            if "exceed context window" in str(error):
                raise ContextLengthError(
                    f"the prompt does not fit the context window of {llama.n_ctx()} tokens: "
                    "shorten it or load the model with a larger n_ctx"
                ) from error
            raise
        finally:
            llama.cache = cache
            llama.stop_check = None
        usage = usage_chunk(
            llama.prompt_tokens, llama.prompt_tokens_evaluated, llama.generated_tokens
        )
        self.count(usage["usage"])
        if not request.stopped():
            yield usage

    def free(self) -> None:
        self.llama.close()


def _trim_top_logprobs(chunk: Chunk, k: int) -> None:
    """Keep the k most likely alternatives, as OpenAI does (llama.cpp adds the sampled token)."""
    logprobs = chunk["choices"][0].get("logprobs") or {}
    for entry in logprobs.get("content") or []:
        ranked = sorted(entry.get("top_logprobs") or [], key=lambda alt: -alt["logprob"])
        entry["top_logprobs"] = ranked[:k]


def _counting_llama_class() -> type:
    """A `Llama` that counts prompt tokens evaluated and tokens generated per call, and stops
    when its `stop_check` says so."""
    llama_cpp = require_llama_cpp("the llama.cpp backend")
    from llama_cpp import Llama

    class CountingLlama(Llama):
        prompt_tokens = 0
        prompt_tokens_evaluated = 0
        generated_tokens = 0
        _prompt_pending = False
        stop_check: Callable[[], bool] | None = None
        """Checked before each token; True ends the generation (a deadline, a cancel)."""

        def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[int]:  # type: ignore[override]
            self.prompt_tokens = len(tokens)
            self.prompt_tokens_evaluated = 0
            self.generated_tokens = 0
            self._prompt_pending = True
            for token in super().generate(tokens, *args, **kwargs):
                if self.stop_check is not None and self.stop_check():
                    return
                # End-of-generation tokens are not part of the reply (llama.cpp's usage agrees).
                if not llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
                    self.generated_tokens += 1
                yield token

        def eval(self, tokens: Sequence[int]) -> None:
            if self._prompt_pending:  # the first eval of a call is the uncached part of the prompt
                self._prompt_pending = False
                self.prompt_tokens_evaluated = len(tokens)
            super().eval(tokens)

    return CountingLlama


def _compact_ram_cache(capacity_bytes: int, keep_all_logits: bool) -> Any:
    """llama-cpp-python's LlamaRAMCache, storing one row of logits per state.

    A saved state copies n_batch x n_vocab logits (about 100 MB for a 49k vocabulary) that are
    never read again unless the model keeps all logits: after a restore, llama.cpp re-evaluates
    at least one token before sampling.
    """
    from llama_cpp import LlamaRAMCache

    class CompactRAMCache(LlamaRAMCache):
        def __setitem__(self, key: Sequence[int], value: Any) -> None:
            if not keep_all_logits:
                value.scores = value.scores[-1:].copy()
            super().__setitem__(key, value)

    return CompactRAMCache(capacity_bytes=capacity_bytes)
