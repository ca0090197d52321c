"""A llama.cpp context on loaded weights: its sequences (KV caches), the batch it decodes next,
and the outputs of the last decode."""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from moot.errors import ModelSpecError
from moot.llamacpp.prompt import common_prefix

if TYPE_CHECKING:
    import numpy as np

    from moot.llamacpp.model import LoadedModel


class Context:
    """A context of `sequences` sequences of n_ctx tokens each. Flash attention is off on the
    CPU: its kernel sums a row's attention differently when sequences of other lengths share
    the batch (see `moot.llamacpp.batched`). One thread decodes it at a time."""

    def __init__(
        self, model: LoadedModel, *, n_ctx: int, n_batch: int, sequences: int, n_threads: int
    ) -> None:
        api = model.api
        self.api = api
        self.model = model
        self.n_ctx = n_ctx
        """Tokens one sequence holds."""
        self.n_batch = n_batch
        params = api.llama_context_default_params()
        params.n_ctx = n_ctx * sequences
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = sequences
        params.kv_unified = False  # each sequence gets its own n_ctx cells
        if model.on_cpu:
            params.flash_attn_type = api.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.n_threads = params.n_threads_batch = n_threads
        self.ctx = api.llama_init_from_model(model.raw.model, params)
        if not self.ctx:
            raise ModelSpecError(
                f"llama.cpp could not create a context of {sequences} x {n_ctx} tokens: "
                "lower n_ctx or sequences"
            )
        self.memory = api.llama_get_memory(self.ctx)
        self._batch = api.llama_batch_init(n_batch, 0, 1)
        self._rows = 0
        self._embeddings = False
        self.sequences = [KVSequence(self, seq_id) for seq_id in range(sequences)]

    def add(self, sequence: KVSequence, tokens: Sequence[int], outputs: Container[int]) -> int:
        """Put `tokens` in the next decode, after what `sequence` holds (which takes them now),
        with outputs at the indexes in `outputs`; returns the batch row of the first."""
        batch, first = self._batch, self._rows
        if first + len(tokens) > self.n_batch:  # writing past the batch would corrupt memory
            raise RuntimeError(f"{first + len(tokens)} tokens do not fit a batch of {self.n_batch}")
        for index, token in enumerate(tokens):
            row = first + index
            batch.token[row] = token
            batch.pos[row] = len(sequence.tokens)
            batch.n_seq_id[row] = 1
            batch.seq_id[row][0] = sequence.seq_id
            batch.logits[row] = index in outputs
            sequence.tokens.append(token)
        self._rows += len(tokens)
        return first

    def discard(self) -> None:
        """Forget the rows added since the last decode (a step that failed before decoding)."""
        self._rows = 0

    def decode(self) -> None:
        """Decode the rows added since the last decode (a RuntimeError if llama.cpp fails)."""
        self._batch.n_tokens, self._rows = self._rows, 0
        status = self.api.llama_decode(self.ctx, self._batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")

    def logits(self, row: int) -> np.ndarray:
        """The next-token logits at a row of the last decode (a view, valid until the next)."""
        return self._output(self.api.llama_get_logits_ith, row, self.model.n_vocab)

    def hidden(self, row: int) -> np.ndarray:
        """The last layer's hidden state at a row of the last decode (with embeddings on)."""
        return self._output(self.api.llama_get_embeddings_ith, row, self.model.n_embd)

    def set_embeddings(self, on: bool) -> None:
        """Hidden states make llama.cpp compute every row of a batch, logits included: on only
        for decodes whose rows are all outputs."""
        if on != self._embeddings:
            self.api.llama_set_embeddings(self.ctx, on)
            self._embeddings = on

    def _output(self, getter: object, row: int, size: int) -> np.ndarray:
        import numpy as np

        pointer = getter(self.ctx, row)  # type: ignore[operator]
        if not pointer:
            raise RuntimeError(f"llama.cpp returned no output for row {row}")
        return np.ctypeslib.as_array(pointer, shape=(size,))

    def free(self) -> None:
        self.api.llama_batch_free(self._batch)
        self.api.llama_free(self.ctx)


@dataclass(eq=False)
class KVSequence:
    """One sequence of a context: the tokens its KV cache holds, and the lengths at which a
    decode ended (its *boundaries*: the only places a reused prefix may end, since chunking
    changes logits)."""

    context: Context
    seq_id: int
    tokens: list[int] = field(default_factory=list)
    boundaries: set[int] = field(default_factory=lambda: {0})

    def reusable(self, prompt: Sequence[int], limit: int | None = None) -> int:
        """How many first tokens of `prompt` this sequence can give (at most `limit`)."""
        return reusable_prefix(self.tokens, self.boundaries, prompt, limit)

    def keep(self, n: int) -> None:
        """Keep the first n tokens (n a boundary); remove the rest from the KV cache."""
        self.context.api.llama_memory_seq_rm(self.context.memory, self.seq_id, n, -1)
        del self.tokens[n:]
        self.boundaries = {b for b in self.boundaries if b <= n}

    def copy_from(self, donor: KVSequence, n: int) -> None:
        """Hold the first n tokens of `donor`, a sequence of the same context, in place of
        what this one holds (llama.cpp copies the cells instead of evaluating them)."""
        api, memory = self.context.api, self.context.memory
        api.llama_memory_seq_rm(memory, self.seq_id, -1, -1)
        api.llama_memory_seq_cp(memory, donor.seq_id, self.seq_id, -1, -1)
        api.llama_memory_seq_rm(memory, self.seq_id, n, -1)
        self.tokens = donor.tokens[:n]
        self.boundaries = {b for b in donor.boundaries if b <= n}

    def clear(self) -> None:
        """Empty the sequence (after a failure, when what its cache holds is unknown)."""
        self.context.api.llama_memory_seq_rm(self.context.memory, self.seq_id, -1, -1)
        self.tokens, self.boundaries = [], {0}

    def mark(self) -> None:
        """Record that a decode ended here."""
        self.boundaries.add(len(self.tokens))


def reusable_prefix(
    tokens: Sequence[int], boundaries: set[int], prompt: Sequence[int], limit: int | None = None
) -> int:
    """The longest common prefix of `tokens` and `prompt`, cut back to a boundary and short of
    the last prompt token (whose logits are needed), and of `limit`."""
    end = min(common_prefix(tokens, prompt), len(prompt) - 1)
    if limit is not None:
        end = min(end, limit)
    return max(b for b in boundaries if b <= end)
