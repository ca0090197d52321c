"""A llama.cpp engine that decodes many conversations together on one loaded model.

The model is loaded once; a small pool of contexts runs on it, each holding several sequences
(llama.cpp's `n_seq_max`). Every conversation lives in a sequence and stays there between calls,
so a continued conversation evaluates only its new tokens. Each context has one worker thread.
At every step it decodes the next prompt chunk of one sequence that is reading its prompt, then
one batch holding the next token of every generating sequence (continuous batching: a request
that arrives mid-way joins at the next step, one that ends leaves). A new prompt that shares a
prefix with a sequence of the same context copies it (`llama_memory_seq_cp`) instead of
evaluating it again.

Seeded calls repeat exactly, however requests interleave, because a sequence's logits depend
only on its own tokens and on how they were cut into chunks, never on other sequences:
- Weights are not repacked (`use_extra_bufts=False`): llama.cpp's repacked CPU kernels compute a
  row differently when it falls in a group of four, so a sequence's logits depended on how many
  others shared its batch (logits moved by up to 0.4).
- On CPU, flash attention is off: its kernel sums a row's attention differently when sequences
  of other lengths share the batch (up to 0.45). With both off, one generated token per
  sequence decodes bit-identically alone or batched with any others (measured on SmolLM2 135M
  and Qwen2.5 0.5B), at no speed cost measurable here.
- How a prompt is cut into chunks does change logits (evaluating N tokens at once or N-1 then 1
  differs by up to 0.8 on both test models), so chunks are cut by one rule that depends only on
  the conversation: each call evaluates its new tokens from the end of the longest cached prefix
  that ends where an earlier call's chunk ended (a *boundary*), in n_batch pieces, the last
  prompt token alone; generated tokens are decoded one at a time. A prompt chunk is never mixed
  with other sequences' tokens in one decode (llama.cpp would re-split it).
On a GPU, kernels chosen by batch size may still differ in the last bits; seeded runs are then
repeatable only up to that.
"""

from __future__ import annotations

import codecs
import ctypes
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moot.errors import ConfigError, ContextLengthError, ModelSpecError

Chunk = dict[str, Any]
"""A completion chunk in llama-cpp-python's streaming shape, or `{"usage": ...}` at the end."""

PENALTY_LAST_N = 64  # llama-cpp-python's last_n_tokens_size, so both engines sample alike
_MIN_SHARED_PREFIX = 16  # a prefix worth copying from another sequence instead of evaluating


@dataclass
class Sampling:
    """Per-request sampling, the same chain llama-cpp-python builds."""

    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    seed: int | None
    max_tokens: int
    top_logprobs: int | None = None
    """Return logprobs with this many alternatives per token (None: no logprobs)."""
    grammar: str | None = None
    """A GBNF grammar the reply must follow (a forced tool call), or None."""


@dataclass(eq=False)
class Request:
    """One completion: a prompt's tokens in, chunks out through `emit`."""

    prompt: list[int]
    cuts: list[int]
    """Prompt lengths where a message ends; a chunk ends there (see `_chunks`)."""
    sampling: Sampling
    stop: list[str]
    emit: Callable[[Chunk | BaseException | None], None]
    """Receives each chunk, then None at the end, or an exception."""
    halted: Callable[[], bool]
    """Checked at every step; True ends this request alone (a deadline, a cancel)."""
    abandoned: bool = False
    """Set by a consumer that stopped reading; the worker drops the request."""
    evaluated: int = 0
    generated: int = 0

    def send(self, item: Chunk | BaseException | None) -> None:
        """Hand an item to the consumer; one that is gone (a closed event loop) is dropped."""
        try:
            self.emit(item)
        except Exception:  # noqa: BLE001 - the worker must outlive any consumer
            self.abandoned = True


@dataclass(eq=False)
class _Slot:
    """A sequence of one context: the tokens its KV cache holds and who uses it."""

    context: _Context
    seq_id: int
    tokens: list[int] = field(default_factory=list)
    boundaries: set[int] = field(default_factory=lambda: {0})
    """Lengths of `tokens` at which a chunk ended: the only places a cached prefix may end."""
    request: Request | None = None
    last_used: int = 0
    # Set on admission, carried out by the context's worker before its next decode:
    keep: int = 0
    """Tokens of `tokens` kept; the rest is removed from the KV cache."""
    donor: _Slot | None = None
    """A slot of the same context whose first `copy` tokens are copied in first."""
    lending: int = 0
    """Slots waiting to copy from this one; until they have, it takes no new request."""
    copy: int = 0
    # While the request runs:
    pending: deque[list[int]] = field(default_factory=deque)
    """Prompt chunks still to evaluate."""
    next_token: int | None = None
    """A sampled token not yet evaluated."""
    sampler: Any = None
    grammar: Any = None
    """The request's grammar sampler, if it has a grammar."""
    candidates: Any = None
    """Reused candidate array for sampling under a grammar."""
    text: Text | None = None

    def reusable(self, prompt: list[int], upcoming: bool = False) -> int:
        """How many first tokens of `prompt` this sequence can give: the longest common prefix,
        cut back to a boundary and short of the last prompt token (whose logits are needed).
        `upcoming` counts what the prompt it is about to read, or reading, will give."""
        tokens, boundaries = self.planned() if upcoming else (self.tokens, self.boundaries)
        limit = min(common_prefix(tokens, prompt), len(prompt) - 1)
        return max(b for b in boundaries if b <= limit)

    def planned(self) -> tuple[list[int], set[int]]:
        """The tokens and boundaries this sequence will hold once its prompt is read."""
        request = self.request
        if request is None:
            return self.tokens, self.boundaries
        if self.text is None:  # admitted, not started: it will keep `keep` tokens, then read
            if self.donor is not None:
                return [], {0}  # what it copies is not settled yet
            chunks = prompt_chunks(
                request.prompt, request.cuts, self.keep, self.context.engine.n_batch
            )
            kept = {b for b in self.boundaries if b <= self.keep}
        else:
            chunks, kept = self.pending, self.boundaries
        start = len(request.prompt) - sum(len(chunk) for chunk in chunks)
        ends = itertools.accumulate((len(chunk) for chunk in chunks), initial=start)
        return request.prompt, kept | set(ends)


class Engine:
    """A GGUF loaded once, decoding requests from any thread on a pool of contexts."""

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int,
        sequences: int,
        contexts: int,
        n_threads: int | None,
        n_batch: int,
        n_gpu_layers: int,
    ) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.model = load_model(path, n_gpu_layers)
        self.n_vocab = self.model.n_vocab()
        self.vocab = self.model.vocab  # the grammar sampler reads token texts from it
        self.n_ctx = n_ctx or self.model.n_ctx_train()
        """Tokens one conversation holds."""
        self.n_batch = max(n_batch, sequences)  # room for one token of every sequence
        self.on_cpu = n_gpu_layers == 0
        self.lock = threading.Condition()
        self.queue: deque[Request] = deque()
        self.clock = itertools.count(1)
        self.closed = False
        # llama.cpp's default is 4 threads whatever the machine, and threads beyond the cores
        # spin at every barrier: by default the usable cores are shared among the contexts.
        threads = n_threads or max(1, usable_cores() // contexts)
        self.contexts = [
            _Context(self, sequences=sequences, n_threads=threads) for _ in range(contexts)
        ]
        for context in self.contexts:
            context.thread.start()

    def piece(self, token: int) -> bytes:
        return token_piece(self.model, token)

    def tokenize(self, text: str, add_bos: bool, special: bool) -> list[int]:
        return self.model.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def submit(self, request: Request) -> None:
        """Queue a request; its chunks arrive through `request.emit` from a worker thread."""
        if len(request.prompt) >= self.n_ctx:
            raise ContextLengthError(
                f"the prompt ({len(request.prompt)} tokens) does not fit the context window of "
                f"{self.n_ctx} tokens: shorten it or load the model with a larger n_ctx"
            )
        with self.lock:
            if self.closed:
                raise ModelSpecError("the llama.cpp engine was closed")
            self.queue.append(request)
            self._admit()
            self.lock.notify_all()

    def abandon(self, request: Request, wait: bool = False) -> None:
        """Drop `request` (its caller stopped reading, was cancelled or timed out) and free its
        sequence now, or, when its context is decoding it, right after that step; `wait` returns
        only once the sequence is free, so a call made next finds it idle."""
        with self.lock:
            request.abandoned = True
            for context in self.contexts:
                for slot in context.slots:
                    if slot.request is request and slot not in context.stepping:
                        context.finish(slot, None)
            while (
                wait
                and not self.closed
                and any(slot.request is request for c in self.contexts for slot in c.slots)
            ):
                self.lock.wait(timeout=1.0)

    def close(self, grace: float = 30.0) -> bool:
        """Stop the workers and free the contexts and the model; a worker still inside a
        decode after `grace` seconds keeps them (freeing them under it would crash): then
        False, and the caller must keep the engine alive."""
        with self.lock:
            self.closed = True
            self.lock.notify_all()
        deadline = time.monotonic() + grace
        for context in self.contexts:
            context.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if any(context.thread.is_alive() for context in self.contexts):
            return False
        for context in self.contexts:
            context.free()
        self.model.close()
        return True

    def _admit(self) -> None:
        """Give queued requests idle sequences, first come first served (holding the lock).

        A request takes the idle sequence that saves it the most evaluation: its own earlier
        conversation (the longest cached prefix), or a sequence of a context where another
        sequence holds a long shared prefix to copy; otherwise the least recently used one.
        """
        while self.queue:
            request = self.queue[0]
            if request.abandoned:
                self.queue.popleft()
                continue
            idle = [
                slot
                for context in self.contexts
                for slot in context.slots
                if not slot.request and not slot.lending
            ]
            if not idle:
                return
            self.queue.popleft()
            best: tuple[int, bool, int, int] | None = None
            chosen: tuple[_Slot, _Slot | None, int] | None = None
            for slot in idle:
                own = slot.reusable(request.prompt)
                donor, shared = slot.context.best_donor(request.prompt, exclude=slot)
                copies = shared >= own + _MIN_SHARED_PREFIX
                saved = shared if copies else own
                busy = sum(1 for other in slot.context.slots if other.request)
                rank = (saved, not copies, -busy, -slot.last_used)
                if best is None or rank > best:
                    best = rank
                    chosen = (slot, donor if copies else None, shared)
            assert chosen is not None
            slot, donor, shared = chosen
            slot.request = request
            slot.last_used = next(self.clock)
            slot.keep = slot.reusable(request.prompt)
            slot.donor = donor
            slot.copy = shared if donor else 0
            if donor is not None:
                donor.lending += 1


class _Context:
    """One llama.cpp context with `sequences` sequences and the worker thread that decodes it."""

    def __init__(self, engine: Engine, *, sequences: int, n_threads: int) -> None:
        llama_cpp = engine._llama_cpp
        self.engine = engine
        self.api = llama_cpp
        self.ctx = new_context(
            engine.model,
            n_ctx=engine.n_ctx,
            n_batch=engine.n_batch,
            sequences=sequences,
            n_threads=n_threads,
            on_cpu=engine.on_cpu,
        )
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(engine.n_batch, 0, 1)
        self.slots = [_Slot(self, seq_id) for seq_id in range(sequences)]
        self.stepping: list[_Slot] = []
        """The slots in the step the worker is decoding now (only it may touch them)."""
        self.thread = threading.Thread(target=self._work, name="moot-llama", daemon=True)

    def free(self) -> None:
        for slot in self.slots:
            for sampler in (slot.sampler, slot.grammar):
                if sampler is not None:
                    self.api.llama_sampler_free(sampler)
            slot.sampler = slot.grammar = None
        self.api.llama_batch_free(self.batch)
        self.api.llama_free(self.ctx)

    def best_donor(self, prompt: list[int], exclude: _Slot) -> tuple[_Slot | None, int]:
        """The sequence of this context with the longest reusable prefix of `prompt`, counting
        the boundaries of a prompt it is still reading (holding the engine lock)."""
        best: tuple[_Slot | None, int] = (None, 0)
        for slot in self.slots:
            if slot is exclude:
                continue
            shared = slot.reusable(prompt, upcoming=True)
            if shared > best[1]:
                best = (slot, shared)
        return best

    def _work(self) -> None:
        engine = self.engine
        while True:
            with engine.lock:
                while not engine.closed and not any(slot.request for slot in self.slots):
                    engine.lock.wait()
                if engine.closed:
                    return
                active = [(slot, slot.request) for slot in self.slots if slot.request]
            ready: list[_Slot] = []
            try:
                with engine.lock:  # (a slot abandoned since `active` was read is skipped)
                    ready = [
                        slot
                        for slot, request in active
                        if slot.request is request and self._prepare(slot)
                    ]
                    self.stepping = ready
                self._step(ready)
            except Exception as error:  # noqa: BLE001 - delivered to each request, worker lives
                with engine.lock:
                    for slot, request in active:
                        if slot.request is request:
                            self.finish(slot, error)
            finally:
                with engine.lock:
                    self.stepping = []
                    for slot in ready:  # abandoned while decoding, with no token to deliver
                        if slot.request is not None and slot.request.abandoned:
                            self.finish(slot, None)

    def _prepare(self, slot: _Slot) -> bool:  # noqa: C901 - one decision list, read in order
        """Start a newly admitted request (KV edits, sampler); False while it must wait for
        a donor's prefix. Holding the engine lock."""
        request = slot.request
        assert request is not None
        if request.abandoned or request.halted():
            self.finish(slot, None)
            return False
        if slot.text is not None:
            return True  # already running
        if slot.donor is not None:
            donor = slot.donor
            if donor.reusable(request.prompt) < slot.copy:
                if donor.request is not None and (donor.text is None or donor.pending):
                    return False  # the donor is still to read the shared prefix: wait a step
                donor.lending -= 1
                slot.donor = None  # the donor failed or was cut short: evaluate here
            else:
                donor.lending -= 1
                self.api.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
                self.api.llama_memory_seq_cp(self.memory, donor.seq_id, slot.seq_id, -1, -1)
                self.api.llama_memory_seq_rm(self.memory, slot.seq_id, slot.copy, -1)
                slot.tokens = donor.tokens[: slot.copy]
                slot.boundaries = {b for b in donor.boundaries if b <= slot.copy}
                slot.keep = slot.copy
                slot.donor = None
        self.api.llama_memory_seq_rm(self.memory, slot.seq_id, slot.keep, -1)
        del slot.tokens[slot.keep :]
        slot.boundaries = {b for b in slot.boundaries if b <= slot.keep}
        slot.pending = prompt_chunks(request.prompt, request.cuts, slot.keep, self.engine.n_batch)
        request.evaluated = len(request.prompt) - slot.keep
        slot.next_token = None
        slot.sampler = sampler_chain(self.api, request.sampling, self.engine.n_vocab)
        if request.sampling.grammar is not None:
            slot.grammar = grammar_sampler(self.api, request.sampling.grammar, self.engine.vocab)
        slot.text = Text(request.stop)
        return True

    def _step(self, slots: list[_Slot]) -> None:
        """The next prompt chunk of the longest-waiting sequence reading its prompt, then one
        token of every generating sequence, as two decodes (see the module docstring)."""
        reading = [slot for slot in slots if slot.pending]
        generating = [slot for slot in slots if slot.next_token is not None]
        if not reading and not generating:
            time.sleep(0.005)  # every request waits for a donor
            return
        if reading:
            slot = min(reading, key=lambda s: s.last_used)
            chunk = slot.pending.popleft()
            for row, token in enumerate(chunk):
                self._add(row, token, len(slot.tokens), slot.seq_id, row == len(chunk) - 1)
                slot.tokens.append(token)
            self._decode(len(chunk), [(slot, len(chunk) - 1)] if not slot.pending else [])
            slot.boundaries.add(len(slot.tokens))
        if generating:
            for row, slot in enumerate(generating):
                assert slot.next_token is not None
                self._add(row, slot.next_token, len(slot.tokens), slot.seq_id, True)
                slot.tokens.append(slot.next_token)
                slot.boundaries.add(len(slot.tokens))
                slot.next_token = None
            self._decode(len(generating), [(slot, row) for row, slot in enumerate(generating)])

    def _decode(self, n: int, rows: list[tuple[_Slot, int]]) -> None:
        """Decode the first n batch rows, then sample each (slot, row) and deliver its token."""
        self.batch.n_tokens = n
        status = self.api.llama_decode(self.ctx, self.batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")
        outputs = [(slot, self._sample(slot, row)) for slot, row in rows]
        with self.engine.lock:
            for slot, sampled in outputs:
                if slot.request is not None:
                    self._deliver(slot, sampled)

    def _add(self, row: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        batch = self.batch
        batch.token[row] = token
        batch.pos[row] = pos
        batch.n_seq_id[row] = 1
        batch.seq_id[row][0] = seq_id
        batch.logits[row] = logits

    def _sample(self, slot: _Slot, row: int) -> tuple[int, dict[str, Any] | None]:
        request = slot.request
        assert request is not None
        if slot.grammar is None:
            token = self.api.llama_sampler_sample(slot.sampler, self.ctx, row)
        else:
            token = self._sample_by_grammar(slot, row)
        logprobs = None
        if request.sampling.top_logprobs is not None:
            logits = np.ctypeslib.as_array(
                self.api.llama_get_logits_ith(self.ctx, row), shape=(self.engine.n_vocab,)
            )
            logprobs = token_logprobs(
                logits, token, request.sampling.top_logprobs, self.engine.piece
            )
        return token, logprobs

    def _sample_by_grammar(self, slot: _Slot, row: int) -> int:
        """The chain's choice if the grammar allows it, else the chain's choice among the
        tokens the grammar allows (as llama.cpp's own common sampler does): the same
        distribution as filtering first, without checking the grammar against the whole
        vocabulary at every token (most tokens of a free-text part pass)."""
        from llama_cpp._internals import LlamaTokenDataArray

        api, n_vocab = self.api, self.engine.n_vocab
        logits = np.ctypeslib.as_array(api.llama_get_logits_ith(self.ctx, row), shape=(n_vocab,))
        if slot.candidates is None:
            slot.candidates = LlamaTokenDataArray(n_vocab=n_vocab)
        candidates = slot.candidates
        candidates.copy_logits(logits)
        api.llama_sampler_apply(slot.sampler, ctypes.byref(candidates.candidates))
        token = int(candidates.candidates_data.id[candidates.candidates.selected])
        single = LlamaTokenDataArray(n_vocab=1)
        single.copy_logits(logits[token : token + 1])
        single.candidates_data.id[0] = token
        api.llama_sampler_apply(slot.grammar, ctypes.byref(single.candidates))
        if not np.isfinite(single.candidates_data.logit[0]):  # the grammar forbids it
            candidates.copy_logits(logits)
            api.llama_sampler_apply(slot.grammar, ctypes.byref(candidates.candidates))
            api.llama_sampler_apply(slot.sampler, ctypes.byref(candidates.candidates))
            token = int(candidates.candidates_data.id[candidates.candidates.selected])
        api.llama_sampler_accept(slot.grammar, token)
        api.llama_sampler_accept(slot.sampler, token)
        return token

    def _deliver(self, slot: _Slot, sampled: tuple[int, dict[str, Any] | None]) -> None:
        """Turn a sampled token into text and chunks; end the request where due (locked)."""
        request, text = slot.request, slot.text
        assert request is not None and text is not None
        token, logprobs = sampled
        engine = self.engine
        if request.abandoned or request.halted():
            self.finish(slot, None)
            return
        if self.api.llama_vocab_is_eog(engine.model.vocab, token):
            self._end(slot, "stop", text.flush())
            return
        request.generated += 1
        piece = engine.piece(token)
        shown, stopped = text.add(piece)
        if stopped:
            self._end(slot, "stop", shown)
            return
        if shown or logprobs:
            request.send(chunk(shown, None, logprobs))
        full = len(slot.tokens) >= engine.n_ctx  # no cell left for the next token
        if request.generated >= request.sampling.max_tokens or full:
            self._end(slot, "length", text.flush())
            return
        slot.next_token = token

    def _end(self, slot: _Slot, reason: str, text: str) -> None:
        request = slot.request
        assert request is not None
        request.send(chunk(text, reason, None))
        request.send(
            {
                "usage": {
                    "prompt_tokens": len(request.prompt),
                    "prompt_tokens_evaluated": request.evaluated,
                    "completion_tokens": request.generated,
                }
            }
        )
        self.finish(slot, None)

    def finish(self, slot: _Slot, error: BaseException | None) -> None:
        """Free the slot; its KV cache stays for the conversation's next call."""
        request = slot.request
        if request is not None:
            request.send(error)
        if error is not None:  # what the KV cache holds is unknown: start afresh
            self.api.llama_memory_seq_rm(self.memory, slot.seq_id, -1, -1)
            slot.tokens, slot.boundaries = [], {0}
        slot.pending.clear()  # a prompt cut short: what was evaluated stays, up to a boundary
        for sampler in (slot.sampler, slot.grammar):
            if sampler is not None:
                self.api.llama_sampler_free(sampler)
        slot.sampler = slot.grammar = None
        if slot.donor is not None:  # ended while waiting to copy
            slot.donor.lending -= 1
        slot.request, slot.text, slot.next_token, slot.donor = None, None, None, None
        self.engine._admit()
        self.engine.lock.notify_all()


class Text:
    """Incremental UTF-8 decoding and stop strings: text is released once no stop string can
    start in it."""

    def __init__(self, stop: list[str]) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stop = [s for s in stop if s]
        self.held = ""

    def add(self, piece: bytes) -> tuple[str, bool]:
        """(text to show now, whether a stop string ended the reply)."""
        self.held += self.decoder.decode(piece)
        for stop in self.stop:
            at = self.held.find(stop)
            if at >= 0:
                shown, self.held = self.held[:at], ""
                return shown, True
        keep = max((_partial_stop(self.held, stop) for stop in self.stop), default=0)
        cut = len(self.held) - keep
        shown, self.held = self.held[:cut], self.held[cut:]
        return shown, False

    def flush(self) -> str:
        shown, self.held = self.held + self.decoder.decode(b"", final=True), ""
        return shown


def _partial_stop(text: str, stop: str) -> int:
    """Length of the longest end of `text` that begins `stop`."""
    for length in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-length:]):
            return length
    return 0


def token_logprobs(
    logits: np.ndarray, token: int, k: int, piece: Callable[[int], bytes]
) -> dict[str, Any]:
    """OpenAI's logprobs entry for `token` with the k most likely alternatives."""
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


def chunk(text: str, finish_reason: str | None, logprobs: dict[str, Any] | None) -> Chunk:
    choice: dict[str, Any] = {"delta": {"content": text}, "finish_reason": finish_reason}
    if logprobs is not None:
        choice["logprobs"] = {"content": [logprobs]}
    return {"choices": [choice]}


def token_piece(model: Any, token: int) -> bytes:
    """The bytes a token stands for (special tokens as nothing, as in replies)."""
    import llama_cpp

    buffer = ctypes.create_string_buffer(64)
    n = llama_cpp.llama_token_to_piece(model.vocab, token, buffer, len(buffer), 0, False)
    if n < 0:
        buffer = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(model.vocab, token, buffer, len(buffer), 0, False)
    return buffer.raw[:n]


def load_model(path: Path, n_gpu_layers: int, repack: bool = False) -> Any:
    """A llama-cpp-python `LlamaModel`, its weights not repacked unless asked (see the module
    docstring: the engine never repacks; token fusion does by default)."""
    import llama_cpp
    from llama_cpp import _internals, _logger

    _logger.set_verbose(False)  # llama.cpp logs every KV copy and graph to stderr
    model_params = llama_cpp.llama_model_default_params()
    model_params.n_gpu_layers = n_gpu_layers
    model_params.use_extra_bufts = repack
    try:
        return _internals.LlamaModel(path_model=str(path), params=model_params, verbose=False)
    except ValueError as error:
        raise ModelSpecError(f"llama.cpp could not load {path}: {error}") from error


def new_context(
    model: Any,
    *,
    n_ctx: int,
    n_batch: int,
    sequences: int,
    n_threads: int,
    on_cpu: bool,
) -> Any:
    """A llama.cpp context on `model` (a `LlamaModel`) of `sequences` sequences of n_ctx tokens
    each; flash attention off on CPU (see the module docstring)."""
    import llama_cpp

    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx * sequences
    params.n_batch = params.n_ubatch = n_batch
    params.n_seq_max = sequences
    params.kv_unified = False  # each sequence gets its own n_ctx cells
    if on_cpu:
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.n_threads = params.n_threads_batch = n_threads
    ctx = llama_cpp.llama_init_from_model(model.model, params)
    if not ctx:
        raise ModelSpecError(
            f"llama.cpp could not create a context of {sequences} x {n_ctx} tokens: "
            "lower n_ctx or sequences"
        )
    return ctx


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Device:
    """A device one of llama.cpp's backends registered."""

    name: str
    """ggml's name for it: "CPU", "CUDA0", "Metal", "Vulkan0"..."""
    description: str
    """What it is, e.g. "NVIDIA GeForce RTX 4090" or the CPU's model name."""
    kind: str
    """CPU, GPU, IGPU (integrated GPU) or ACCEL (BLAS, AMX...)."""
    backend: str
    """The backend that registered it: CPU, CUDA, Metal, Vulkan, ROCm..."""
    memory_gib: float


_DEVICE_KINDS = ("CPU", "GPU", "IGPU", "ACCEL")  # ggml's enum ggml_backend_dev_type, in order


def backend_devices() -> list[Device]:
    """The devices in ggml's backend registry: what llama.cpp was built for and found here
    (llama-cpp-python wraps no registry call, so they are read from its ggml library). Empty
    where that library lacks them."""
    import llama_cpp

    llama_cpp.llama_supports_gpu_offload()  # loads the backends of a build that loads them late
    try:
        from llama_cpp._ggml import libggml
    except (ImportError, OSError):
        return []

    def call(name: str, result: Any, *args: Any) -> Any:
        function = libggml[name]  # a fresh function object: llama_cpp's own are left alone
        function.restype = result
        function.argtypes = [type(arg) for arg in args]
        return function(*args)

    def text(name: str, handle: ctypes.c_void_p) -> str:
        return bytes(call(name, ctypes.c_char_p, handle) or b"").decode(errors="replace")

    devices = []
    try:
        for index in range(call("ggml_backend_dev_count", ctypes.c_size_t)):
            device = ctypes.c_void_p(
                call("ggml_backend_dev_get", ctypes.c_void_p, ctypes.c_size_t(index))
            )
            free, total = ctypes.c_size_t(), ctypes.c_size_t()
            call(
                "ggml_backend_dev_memory", None, device, ctypes.pointer(free), ctypes.pointer(total)
            )
            kind = call("ggml_backend_dev_type", ctypes.c_int, device)
            registry = ctypes.c_void_p(
                call("ggml_backend_dev_backend_reg", ctypes.c_void_p, device)
            )
            devices.append(
                Device(
                    name=text("ggml_backend_dev_name", device),
                    description=text("ggml_backend_dev_description", device),
                    kind=_DEVICE_KINDS[kind] if 0 <= kind < len(_DEVICE_KINDS) else str(kind),
                    backend=text("ggml_backend_reg_name", registry),
                    memory_gib=total.value / (1 << 30),
                )
            )
    except AttributeError:  # a ggml older than its device registry
        return []
    return devices


def prompt_chunks(
    prompt: list[int], cuts: list[int], start: int, size: int, split_last: bool = True
) -> deque[list[int]]:
    """A call's prompt from `start` as chunks, cut where a message ends, then every `size`
    tokens, and the last token alone (so an identical prompt can reuse all but that token;
    unless `split_last` is False)."""
    last = len(prompt) - 1 if split_last else len(prompt)
    ends = sorted({cut for cut in cuts if start < cut < last})
    ends.append(last)
    pieces: deque[list[int]] = deque()
    for end in ends:
        while start < end:
            pieces.append(prompt[start : min(start + size, end)])
            start += len(pieces[-1])
    if split_last:
        pieces.append(prompt[-1:])
    return pieces


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def sampler_chain(api: Any, sampling: Sampling, n_vocab: int, penalties: bool = True) -> Any:
    """llama-cpp-python's chain (`Llama._init_sampler`) but for the grammar (`grammar_sampler`,
    applied only when the chain's choice breaks it): penalties over the last 64 generated
    tokens (unless `penalties` is False), then greedy at temperature 0, else top-k, top-p,
    min-p, temperature and a draw."""
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


def grammar_sampler(api: Any, grammar: str, vocab: Any) -> Any:
    """llama.cpp's sampler for a GBNF grammar (its rule "root")."""
    sampler = api.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not sampler:
        raise ConfigError(
            "llama.cpp could not parse the grammar (a forced tool call, a typed answer)"
        )
    return sampler
