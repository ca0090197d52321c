"""Sampling: its settings (written once, for every local model), llama.cpp's sampler chain built
from them, the repeat penalty and token logprobs."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from moot.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from moot.llamacpp.context import Context
    from moot.llamacpp.model import LoadedModel

PENALTY_LAST_N = 64
"""Generated tokens the repeat penalty looks back on (llama-cpp-python's last_n_tokens_size),
so every engine samples alike."""


class SamplingSettings(BaseModel):
    """How a local model samples: the defaults of a chat model, which a call may override."""

    temperature: float = Field(default=0.7, ge=0)
    max_tokens: int = Field(default=512, ge=1)
    """Most tokens per reply; at least 1 (there is no "unlimited")."""
    top_p: float = Field(default=0.95, gt=0, le=1)
    top_k: int = Field(default=40, ge=0)
    min_p: float = Field(default=0.05, ge=0, le=1)
    repeat_penalty: float = Field(default=1.1, gt=0)
    seed: int | None = None


SAMPLING_FIELDS = tuple(SamplingSettings.model_fields)


class Sampling(SamplingSettings):
    """One request's sampling: the settings, with what a call adds."""

    top_logprobs: int | None = None
    """Return logprobs with this many alternatives per token (None: no logprobs)."""
    grammar: str | None = None
    """A GBNF grammar the reply must follow (a forced tool call, a typed answer), or None."""

    @classmethod
    def of(
        cls,
        defaults: SamplingSettings,
        overrides: Mapping[str, Any],
        *,
        top_logprobs: int | None = None,
        grammar: str | None = None,
    ) -> Sampling:
        """`defaults` with a call's `overrides` (unchecked, as llama.cpp takes them)."""
        values = {name: overrides.get(name, getattr(defaults, name)) for name in SAMPLING_FIELDS}
        return cls.model_construct(**values, top_logprobs=top_logprobs, grammar=grammar)


class Sampler:
    """llama-cpp-python's chain (`Llama._init_sampler`) for one request: penalties over the last
    64 generated tokens (unless `penalties` is False), then greedy at temperature 0, else top-k,
    top-p, min-p, temperature and a draw; and the request's grammar, applied only when the
    chain's choice breaks it. Free it with `free()`."""

    def __init__(self, model: LoadedModel, sampling: Sampling, penalties: bool = True) -> None:
        self.api = api = model.api
        self.n_vocab = model.n_vocab
        self.chain = _chain(api, sampling, model.n_vocab, penalties)
        self.grammar = None
        if sampling.grammar is not None:
            self.grammar = api.llama_sampler_init_grammar(
                model.vocab, sampling.grammar.encode(), b"root"
            )
            if not self.grammar:
                self.free()
                raise ConfigError(
                    "llama.cpp could not parse the grammar (a forced tool call, a typed answer)"
                )
        self._candidates: Any = None

    def sample(self, context: Context, row: int) -> int:
        """The next token from the logits at `row` of the context's last decode."""
        if self.grammar is None:
            return int(self.api.llama_sampler_sample(self.chain, context.ctx, row))
        return self._sample_by_grammar(context.logits(row))

    def draw(self, logits: np.ndarray) -> int:
        """The next token drawn from `logits` (a fused distribution) by the chain."""
        token = self._choose(logits, self.chain)
        self.api.llama_sampler_accept(self.chain, token)
        return token

    def _sample_by_grammar(self, logits: np.ndarray) -> int:
        """The chain's choice if the grammar allows it, else the chain's choice among the
        tokens the grammar allows (as llama.cpp's own common sampler does): the same
        distribution as filtering first, without checking the grammar against the whole
        vocabulary at every token (most tokens of a free-text part pass)."""
        import numpy as np
        from llama_cpp._internals import LlamaTokenDataArray

        api = self.api
        token = self._choose(logits, self.chain)
        single = LlamaTokenDataArray(n_vocab=1)
        single.copy_logits(logits[token : token + 1])
        single.candidates_data.id[0] = token
        api.llama_sampler_apply(self.grammar, ctypes.byref(single.candidates))
        if not np.isfinite(single.candidates_data.logit[0]):  # the grammar forbids it
            token = self._choose(logits, self.grammar, self.chain)
        api.llama_sampler_accept(self.grammar, token)
        api.llama_sampler_accept(self.chain, token)
        return token

    def _choose(self, logits: np.ndarray, *samplers: Any) -> int:
        """The token `samplers` select from `logits`, applied in order (nothing accepted)."""
        if self._candidates is None:
            from llama_cpp._internals import LlamaTokenDataArray

            self._candidates = LlamaTokenDataArray(n_vocab=self.n_vocab)
        candidates = self._candidates
        candidates.copy_logits(logits)
        for sampler in samplers:
            self.api.llama_sampler_apply(sampler, ctypes.byref(candidates.candidates))
        return int(candidates.candidates_data.id[candidates.candidates.selected])

    def free(self) -> None:
        for sampler in (self.chain, self.grammar):
            if sampler is not None:
                self.api.llama_sampler_free(sampler)
        self.chain = self.grammar = None


def _chain(api: Any, sampling: Sampling, n_vocab: int, penalties: bool) -> Any:
    chain = api.llama_sampler_chain_init(api.llama_sampler_chain_default_params())
    add = api.llama_sampler_chain_add
    if penalties:
        add(
            chain,
            api.llama_sampler_init_penalties(
                n_vocab, PENALTY_LAST_N, sampling.repeat_penalty, 0.0, 0.0
            ),
        )
    if sampling.temperature == 0:
        add(chain, api.llama_sampler_init_greedy())
        return chain
    seed = api.LLAMA_DEFAULT_SEED if sampling.seed is None else sampling.seed
    add(chain, api.llama_sampler_init_top_k(sampling.top_k))
    add(chain, api.llama_sampler_init_top_p(sampling.top_p, 1))
    add(chain, api.llama_sampler_init_min_p(sampling.min_p, 1))
    add(chain, api.llama_sampler_init_temp(sampling.temperature))
    add(chain, api.llama_sampler_init_dist(ctypes.c_uint32(seed & 0xFFFFFFFF).value))
    return chain


def repeat_penalised(logits: np.ndarray, generated: Sequence[int], penalty: float) -> np.ndarray:
    """`logits` (changed in place) with llama.cpp's repeat penalty over the last generated
    tokens, for distributions sampled outside its chain."""
    import numpy as np

    if penalty != 1.0 and generated:
        seen = np.unique(np.asarray(generated[-PENALTY_LAST_N:], dtype=np.intp))
        values = logits[seen]
        logits[seen] = np.where(values <= 0, values * penalty, values / penalty)
    return logits


def token_logprobs(
    logits: np.ndarray, token: int, k: int, piece: Callable[[int], bytes]
) -> dict[str, Any]:
    """OpenAI's logprobs entry for `token` with the k most likely alternatives."""
    import numpy as np

    shifted = logits.astype(np.float64) - logits.max()
    log_probs = shifted - np.log(np.exp(shifted).sum())
    top = np.argpartition(-log_probs, k)[:k] if k < len(log_probs) else np.arange(k)
    top = top[np.argsort(-log_probs[top])]

    def entry(candidate: int) -> dict[str, Any]:
        text = piece(int(candidate))
        return {
            "token": text.decode("utf-8", errors="replace"),
            "logprob": float(log_probs[candidate]),
            "bytes": list(text),
        }

    return {**entry(token), "top_logprobs": [entry(int(c)) for c in top]}
