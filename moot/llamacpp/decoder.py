"""One GGUF on a context of its own, stepped a token at a time (token fusion's models).

The context is built as the batched engine builds its contexts (flash attention off on CPU) and
a prompt is cut into chunks by the same rule. Weights are repacked for llama.cpp's faster CPU
kernels unless `repack=False`; without repacking a model stepped here computes the logits it
computes on the batched engine, bit for bit.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from moot.errors import ContextLengthError
from moot.llamacpp.context import Context
from moot.llamacpp.devices import usable_cores
from moot.llamacpp.model import LoadedModel, require_llama_cpp
from moot.llamacpp.prompt import prompt_chunks

if TYPE_CHECKING:
    import numpy as np


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
        require_llama_cpp("token-level fusion")
        self.path = path
        self.model = LoadedModel.load(path, n_gpu_layers, repack)
        self.n_ctx = n_ctx or self.model.n_ctx_train
        self.n_batch = n_batch
        self.n_vocab = self.model.n_vocab
        self.n_embd = self.model.n_embd
        self.hidden_enabled = hidden
        self.context = Context(
            self.model,
            n_ctx=self.n_ctx,
            n_batch=n_batch,
            sequences=1,
            n_threads=n_threads or usable_cores(),
        )
        self.sequence = self.context.sequences[0]
        """What the KV cache holds, and where a reused prefix may end."""
        self.evaluated = 0
        """Tokens decoded since the counter was last reset."""
        self.lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.path.name

    def piece(self, token: int) -> bytes:
        return self.model.piece(token)

    def tokenize(self, text: str, add_bos: bool, special: bool) -> list[int]:
        return self.model.tokenize(text, add_bos, special)

    def is_end(self, token: int) -> bool:
        return self.model.is_end(token)

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
        # outputs are wanted from `outputs_from`: decode it again
        keep = self.sequence.reusable(tokens, limit=outputs_from)
        self.sequence.keep(keep)
        logits: list[np.ndarray] = []
        hidden: list[np.ndarray] = []
        for chunk in prompt_chunks(tokens, cuts, keep, self.n_batch, split_last):
            start = len(self.sequence.tokens)
            rows = [
                r
                for r in range(len(chunk))
                if outputs_from is not None and start + r >= outputs_from
            ]
            self._decode(chunk, {*rows, len(chunk) - 1})
            logits.extend(self.context.logits(row).copy() for row in rows)
            if self.hidden_enabled:
                hidden.extend(self.hidden(row) for row in rows)
        return logits, hidden

    def step(self, token: int) -> None:
        """Decode one more token; `logits()` then predicts the one after it."""
        self._decode([token], {0})

    def logits(self) -> np.ndarray:
        """The next-token logits after the last decoded token (a copy)."""
        return self.context.logits(-1).copy()

    def hidden(self, row: int = -1) -> np.ndarray:
        """The last layer's hidden state (after the output norm) at the last decoded token
        (loaded with `hidden=True`; a decode whose rows are all outputs)."""
        return self.context.hidden(row).copy()

    def _decode(self, chunk: list[int], outputs: set[int]) -> None:
        sequence = self.sequence
        if len(sequence.tokens) + len(chunk) > self.n_ctx:
            raise ContextLengthError(
                f"{self.name}: {len(sequence.tokens) + len(chunk)} tokens do not fit the "
                f"context window of {self.n_ctx}: shorten the conversation or raise n_ctx"
            )
        # Hidden states make llama.cpp compute every row of the batch, logits included (a
        # 151,936-row output layer per prompt token): on only for batches of outputs alone.
        self.context.set_embeddings(self.hidden_enabled and len(outputs) == len(chunk))
        self.context.add(sequence, chunk, outputs)
        try:
            self.context.decode()
        except RuntimeError as error:
            sequence.clear()
            raise RuntimeError(f"{error} on {self.name}") from None
        sequence.mark()
        self.evaluated += len(chunk)

    def close(self, grace: float = 30.0) -> bool:
        """Free the context and the model once no call holds `lock` (False if one still does
        after `grace` seconds)."""
        if not self.lock.acquire(timeout=grace):
            return False
        self.context.free()
        self.model.close()
        return True
