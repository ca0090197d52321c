"""One GGUF on its own llama.cpp context, stepped a token at a time by the fusion loop.

Contexts are built as the batched engine builds them (flash attention off on CPU) and a prompt
is cut into chunks by the same rule. Weights are repacked for llama.cpp's faster CPU kernels
unless `repack=False`; without repacking a model stepped here computes the logits it computes on
the batched engine, bit for bit, and a fusion that gives one model all the weight decodes that
model's own tokens there.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from moot.models._engine import (
    common_prefix,
    load_model,
    new_context,
    prompt_chunks,
    token_piece,
    usable_cores,
)


class Decoder:
    """A loaded model with one sequence whose KV cache keeps the last conversation, so the next
    call evaluates only what it lacks. One user at a time: hold `lock`."""

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int,
        n_batch: int,
        n_threads: int | None,
        n_gpu_layers: int,
        hidden: bool,
        repack: bool = True,
    ) -> None:
        import llama_cpp

        self.api = llama_cpp
        self.path = path
        self.model = load_model(path, n_gpu_layers, repack)
        self.n_ctx = n_ctx or self.model.n_ctx_train()
        self.n_batch = n_batch
        self.n_vocab = self.model.n_vocab()
        self.n_embd = self.model.n_embd()
        self.hidden_enabled = hidden
        self._embeddings_on = False
        self.ctx = new_context(
            self.model,
            n_ctx=self.n_ctx,
            n_batch=n_batch,
            sequences=1,
            n_threads=n_threads or usable_cores(),
            on_cpu=n_gpu_layers == 0,
        )
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.tokens: list[int] = []
        """What the KV cache holds."""
        self.boundaries: set[int] = {0}
        """Lengths of `tokens` at which a decode ended: where a reused prefix may end (see
        `moot/models/_engine.py` on why chunking matters)."""
        self.evaluated = 0
        """Tokens decoded since the counter was last reset."""
        self.lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.path.name

    def piece(self, token: int) -> bytes:
        return token_piece(self.model, token)

    def tokenize(self, text: str, add_bos: bool, special: bool) -> list[int]:
        return list(self.model.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    def is_end(self, token: int) -> bool:
        return bool(self.api.llama_vocab_is_eog(self.model.vocab, token))

    def reach(
        self,
        tokens: list[int],
        cuts: Sequence[int] = (),
        outputs_from: int | None = None,
        split_last: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Make the KV cache hold `tokens`, decoding only what it lacks after the longest cached
        prefix that ends at a boundary (at least the last token is decoded, for its logits).
        Returns the logits and hidden states of every position from `outputs_from` on (for
        training a gate; none without it); `logits()` reads the last position. `split_last`
        decodes the last token alone, as the engine does with a prompt's."""
        limit = min(common_prefix(self.tokens, tokens), len(tokens) - 1)
        if outputs_from is not None:
            limit = min(limit, outputs_from)  # outputs are wanted from there: decode it again
        keep = max(b for b in self.boundaries if b <= limit)
        self.api.llama_memory_seq_rm(self.memory, 0, keep, -1)
        del self.tokens[keep:]
        self.boundaries = {b for b in self.boundaries if b <= keep}
        logits: list[np.ndarray] = []
        hidden: list[np.ndarray] = []
        for chunk in prompt_chunks(tokens, list(cuts), keep, self.n_batch, split_last):
            start = len(self.tokens)
            rows = [
                r
                for r in range(len(chunk))
                if outputs_from is not None and start + r >= outputs_from
            ]
            self._decode(chunk, {*rows, len(chunk) - 1})
            logits.extend(self._row(self.api.llama_get_logits_ith, row) for row in rows)
            if self.hidden_enabled:
                hidden.extend(self.hidden(row) for row in rows)
        return logits, hidden

    def step(self, token: int) -> None:
        """Decode one more token; `logits()` then predicts the one after it."""
        self._decode([token], {0})

    def logits(self) -> np.ndarray:
        """The next-token logits after the last decoded token (a copy)."""
        return self._row(self.api.llama_get_logits_ith, -1)

    def hidden(self, row: int = -1) -> np.ndarray:
        """The last layer's hidden state (after the output norm) at the last decoded token
        (loaded with `hidden=True`; a decode whose rows are all outputs)."""
        return self._row(self.api.llama_get_embeddings_ith, row, self.n_embd)

    def _row(self, getter: Any, row: int, size: int | None = None) -> np.ndarray:
        pointer = getter(self.ctx, row)
        if not pointer:
            raise RuntimeError(f"llama.cpp returned no output for row {row} of {self.name}")
        return np.ctypeslib.as_array(pointer, shape=(size or self.n_vocab,)).copy()

    def _decode(self, chunk: list[int], outputs: set[int]) -> None:
        if len(self.tokens) + len(chunk) > self.n_ctx:
            from moot.errors import ContextLengthError

            raise ContextLengthError(
                f"{self.name}: {len(self.tokens) + len(chunk)} tokens do not fit the context "
                f"window of {self.n_ctx}: shorten the conversation or raise n_ctx"
            )
        batch = self.batch
        for row, token in enumerate(chunk):
            batch.token[row] = token
            batch.pos[row] = len(self.tokens) + row
            batch.n_seq_id[row] = 1
            batch.seq_id[row][0] = 0
            batch.logits[row] = row in outputs
        batch.n_tokens = len(chunk)
        # Hidden states make llama.cpp compute every row of the batch, logits included (a
        # 151,936-row output layer per prompt token): on only for batches of outputs alone.
        embeddings = self.hidden_enabled and len(outputs) == len(chunk)
        if embeddings != self._embeddings_on:
            self.api.llama_set_embeddings(self.ctx, embeddings)
            self._embeddings_on = embeddings
        status = self.api.llama_decode(self.ctx, batch)
        if status != 0:
            self.api.llama_memory_seq_rm(self.memory, 0, -1, -1)
            self.tokens, self.boundaries = [], {0}
            raise RuntimeError(f"llama_decode failed with status {status} on {self.name}")
        self.tokens.extend(chunk)
        self.boundaries.add(len(self.tokens))
        self.evaluated += len(chunk)

    def close(self) -> None:
        self.api.llama_batch_free(self.batch)
        self.api.llama_free(self.ctx)
        self.model.close()
