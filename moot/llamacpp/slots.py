"""A context of the batched engine: its sequences (slots), and the worker thread that decodes
them, a prompt chunk and a batch of generated tokens at each step (see
`moot.llamacpp.batched` for why it decodes as it does)."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from moot.llamacpp.chunks import Text, chunk, usage_chunk
from moot.llamacpp.context import Context, KVSequence, reusable_prefix
from moot.llamacpp.drafting import PromptLookup
from moot.llamacpp.prompt import prompt_chunks
from moot.llamacpp.sampling import Sampler, token_logprobs

if TYPE_CHECKING:
    from moot.llamacpp.engine import Request
    from moot.llamacpp.model import LoadedModel


class SlotOwner(Protocol):
    """What a context worker needs of its engine (the batched engine): its model and sizes,
    the lock every slot change is made under, and where it reports tokens and asks for work."""

    model: LoadedModel
    n_ctx: int
    n_batch: int
    draft: int
    lock: threading.Condition
    closed: bool

    def count(self, usage: dict[str, int]) -> None: ...

    def admit(self) -> None: ...


@dataclass(eq=False)
class Job:
    """A request on the batched engine: its prompt as tokens, and what it has used so far."""

    request: Request
    prompt: list[int]
    cuts: list[int]
    """Prompt lengths where a message ends; a chunk ends there (see `prompt_chunks`)."""
    stop: list[str]
    """The request's stop strings and the chat template's."""
    evaluated: int = 0
    generated: int = 0
    steps: int = 0
    """Decodes that generated its tokens."""
    drafted: int = 0
    draft_kept: int = 0


@dataclass(eq=False)
class Slot:
    """A sequence of one context and the request it serves."""

    worker: ContextWorker
    kv: KVSequence
    job: Job | None = None
    last_used: int = 0
    # Set on admission, carried out by the context's worker before its next decode:
    keep: int = 0
    """Tokens of `kv.tokens` kept; the rest is removed from the KV cache."""
    donor: Slot | None = None
    """A slot of the same context whose first `copy` tokens are copied in first."""
    lending: int = 0
    """Slots waiting to copy from this one; until they have, it takes no new request."""
    copy: int = 0
    # While the request runs:
    pending: deque[list[int]] = field(default_factory=deque)
    """Prompt chunks still to evaluate."""
    next_token: int | None = None
    """A sampled token not yet evaluated."""
    sampler: Sampler | None = None
    text: Text | None = None
    drafter: PromptLookup | None = None
    """Drafts the next tokens from the sequence's own (with the `draft` load option)."""

    def serves(self, request: Request) -> bool:
        return self.job is not None and self.job.request is request

    def reusable(self, prompt: list[int], upcoming: bool = False) -> int:
        """How many first tokens of `prompt` this sequence can give (`KVSequence.reusable`).
        `upcoming` counts what the prompt it is about to read, or reading, will give."""
        if not upcoming:
            return self.kv.reusable(prompt)
        tokens, boundaries = self.planned()
        return reusable_prefix(tokens, boundaries, prompt)

    def planned(self) -> tuple[list[int], set[int]]:
        """The tokens and boundaries this sequence will hold once its prompt is read."""
        job = self.job
        if job is None:
            return self.kv.tokens, self.kv.boundaries
        if self.text is None:  # admitted, not started: it will keep `keep` tokens, then read
            if self.donor is not None:
                return [], {0}  # what it copies is not settled yet
            chunks = prompt_chunks(job.prompt, job.cuts, self.keep, self.worker.engine.n_batch)
            kept = {b for b in self.kv.boundaries if b <= self.keep}
        else:
            # Copies: the worker pops chunks and marks boundaries without the engine lock.
            chunks, kept = deque(self.pending), set(self.kv.boundaries)
        start = len(job.prompt) - sum(len(chunk) for chunk in chunks)
        ends = itertools.accumulate((len(chunk) for chunk in chunks), initial=start)
        return job.prompt, kept | set(ends)


class ContextWorker:
    """One llama.cpp context with its sequences, and the worker thread that decodes it."""

    def __init__(self, engine: SlotOwner, *, sequences: int, n_threads: int) -> None:
        self.engine = engine
        self.context = Context(
            engine.model,
            n_ctx=engine.n_ctx,
            n_batch=engine.n_batch,
            sequences=sequences,
            n_threads=n_threads,
        )
        self.slots = [Slot(self, kv) for kv in self.context.sequences]
        self.stepping: list[Slot] = []
        """The slots in the step the worker is decoding now (only it may touch them)."""
        self.thread = threading.Thread(target=self._work, name="moot-llama", daemon=True)

    def free(self) -> None:
        for slot in self.slots:
            if slot.sampler is not None:
                slot.sampler.free()
                slot.sampler = None
        self.context.free()

    def best_donor(self, prompt: list[int], exclude: Slot) -> tuple[Slot | None, int]:
        """The sequence of this context with the longest reusable prefix of `prompt`, counting
        the boundaries of a prompt it is still reading (holding the engine lock)."""
        best: tuple[Slot | None, int] = (None, 0)
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
                while not engine.closed and not any(slot.job for slot in self.slots):
                    engine.lock.wait()
                if engine.closed:
                    return
                active = [(slot, slot.job) for slot in self.slots if slot.job]
            ready: list[Slot] = []
            try:
                with engine.lock:  # (a slot abandoned since `active` was read is skipped)
                    ready = [
                        slot for slot, job in active if slot.job is job and self._prepare(slot)
                    ]
                    self.stepping = ready
                self._step(ready)
            except Exception as error:  # noqa: BLE001 - delivered to each request, worker lives
                self.context.discard()
                with engine.lock:
                    for slot, job in active:
                        if slot.job is job:
                            self.finish(slot, error)
            finally:
                with engine.lock:
                    self.stepping = []
                    for slot in ready:  # abandoned while decoding, with no token to deliver
                        if slot.job is not None and slot.job.request.abandoned:
                            self.finish(slot, None)

    def _prepare(self, slot: Slot) -> bool:
        """Start a newly admitted request (KV edits, sampler); False while it must wait for
        a donor's prefix. Holding the engine lock."""
        job = slot.job
        assert job is not None
        if job.request.stopped():
            self.finish(slot, None)
            return False
        if slot.text is not None:
            return True  # already running
        if slot.donor is not None:
            donor = slot.donor
            if donor.reusable(job.prompt) < slot.copy:
                if donor.job is not None and (donor.text is None or donor.pending):
                    return False  # the donor is still to read the shared prefix: wait a step
                donor.lending -= 1
                slot.donor = None  # the donor failed or was cut short: evaluate here
            else:
                donor.lending -= 1
                slot.kv.copy_from(donor.kv, slot.copy)
                slot.keep = slot.copy
                slot.donor = None
        slot.kv.keep(slot.keep)
        slot.pending = prompt_chunks(job.prompt, job.cuts, slot.keep, self.engine.n_batch)
        job.evaluated = len(job.prompt) - slot.keep
        slot.next_token = None
        slot.sampler = Sampler(self.engine.model, job.request.sampling)
        slot.text = Text(job.stop)
        draft = self.engine.draft
        slot.drafter = PromptLookup(job.prompt, most=draft) if draft else None
        return True

    def _step(self, slots: list[Slot]) -> None:
        """The next prompt chunk of the longest-waiting sequence reading its prompt, then one
        token of every generating sequence that has no draft, then each drafted sequence's
        token and draft, each as a decode of its own (see the engine's docstring). A prompt's
        last token (a chunk of its own) decodes with the generating tokens: one token per
        sequence decodes alike in any company, and a decode is saved."""
        reading = [slot for slot in slots if slot.pending]
        generating = [slot for slot in slots if slot.next_token is not None]
        if not reading and not generating:
            time.sleep(0.005)  # every request waits for a donor
            return
        context = self.context
        singles: list[tuple[Slot, int]] = []  # (slot, token): one-token rows decoded together
        drafted = []
        if reading:
            slot = min(reading, key=lambda s: s.last_used)
            tokens = slot.pending.popleft()
            if slot.pending or len(tokens) > 1:
                last = context.add(slot.kv, tokens, {len(tokens) - 1}) + len(tokens) - 1
                self._decode([(slot, last)] if not slot.pending else [])
                slot.kv.mark()
            else:
                singles.append((slot, tokens[0]))
        for slot in generating:
            token, slot.next_token = slot.next_token, None
            assert token is not None and slot.job is not None
            slot.job.steps += 1
            draft = self._draft(slot)
            if draft:
                drafted.append((slot, token, draft))
            else:
                singles.append((slot, token))
        # At most one row per sequence, and a batch holds as many (the engine's n_batch). In
        # sequence order: llama.cpp computes a run of consecutive sequence ids in one pass and
        # starts another pass at every gap or step back (`split_equal` over per-sequence KV).
        rows = []
        for slot, token in sorted(singles, key=lambda single: single[0].kv.seq_id):
            rows.append((slot, context.add(slot.kv, [token], {0})))
            slot.kv.mark()
        if rows:
            self._decode(rows)
        by_length: dict[int, list[tuple[Slot, int, list[int]]]] = {}
        for item in sorted(drafted, key=lambda item: item[0].kv.seq_id):
            by_length.setdefault(len(item[2]), []).append(item)
        for length, group in by_length.items():
            fit = max(1, self.engine.n_batch // (length + 1))  # sequences one decode holds
            for first in range(0, len(group), fit):
                self._verify(group[first : first + fit])

    def _draft(self, slot: Slot) -> list[int]:
        """The sequence's draft, no longer than its reply, its context or a decode allow."""
        job, drafter = slot.job, slot.drafter
        if drafter is None or job is None:
            return []
        engine = self.engine
        room = min(
            job.request.sampling.max_tokens - job.generated - 1,
            engine.n_ctx - len(slot.kv.tokens) - 2,  # a cell left for the token after it
            engine.n_batch - 1,
        )
        return drafter.draft(room)

    def _verify(self, group: list[tuple[Slot, int, list[int]]]) -> None:
        """Decode each sequence's next token and its draft, drafts of one length together (so
        that llama.cpp keeps each sequence's rows in one piece); sample position after
        position as usual, and keep the drafted tokens sampled in turn: the first token
        sampled otherwise is the next one. The cells of the rest of each draft are removed."""
        context = self.context
        placed = []
        for slot, token, draft in group:
            start = len(slot.kv.tokens)
            first = context.add(slot.kv, [token, *draft], set(range(len(draft) + 1)))
            placed.append((slot, draft, start, first))
        context.decode()
        outputs = []
        for slot, draft, start, first in placed:
            job, drafter = slot.job, slot.drafter
            assert job is not None and drafter is not None
            sampled = []
            for index in range(len(draft) + 1):
                sampled.append(self._sample(slot, first + index))
                token = sampled[-1][0]
                if index == len(draft) or token != draft[index] or self.engine.model.is_end(token):
                    break  # (after the end of the reply nothing more is sampled)
            kept = len(sampled) - 1
            slot.kv.keep(start + 1 + kept)
            slot.kv.mark()
            drafter.judged(len(draft), kept)
            job.drafted += len(draft)
            job.draft_kept += kept
            outputs.append((slot, job, sampled))
        with self.engine.lock:
            for slot, job, sampled in outputs:
                for output in sampled:
                    if slot.job is not job:
                        break  # the reply ended (or was dropped) at an earlier token
                    self._deliver(slot, output)

    def _decode(self, rows: list[tuple[Slot, int]]) -> None:
        """Decode the batch, then sample each (slot, row) and deliver its token."""
        self.context.decode()
        outputs = [(slot, self._sample(slot, row)) for slot, row in rows]
        with self.engine.lock:
            for slot, sampled in outputs:
                if slot.job is not None:
                    self._deliver(slot, sampled)

    def _sample(self, slot: Slot, row: int) -> tuple[int, dict[str, Any] | None]:
        job, sampler = slot.job, slot.sampler
        assert job is not None and sampler is not None
        token = sampler.sample(self.context, row)
        k = job.request.sampling.top_logprobs
        logprobs = None
        if k is not None:
            logits = self.context.logits(row)
            logprobs = token_logprobs(logits, token, k, self.engine.model.piece)
        return token, logprobs

    def _deliver(self, slot: Slot, sampled: tuple[int, dict[str, Any] | None]) -> None:
        """Turn a sampled token into text and chunks; end the request where due (locked)."""
        job, text = slot.job, slot.text
        assert job is not None and text is not None
        token, logprobs = sampled
        model = self.engine.model
        if job.request.stopped():
            self.finish(slot, None)
            return
        if model.is_end(token):
            self._end(slot, "stop", text.flush())
            return
        job.generated += 1
        if slot.drafter is not None:
            slot.drafter.extend((token,))
        shown, stopped = text.add(model.piece(token))
        if stopped:
            self._end(slot, "stop", shown)
            return
        if shown or logprobs:
            job.request.send(chunk(shown, None, logprobs))
        full = len(slot.kv.tokens) >= self.engine.n_ctx  # no cell left for the next token
        if job.generated >= job.request.sampling.max_tokens or full:
            self._end(slot, "length", text.flush())
            return
        slot.next_token = token

    def _end(self, slot: Slot, reason: str, text: str) -> None:
        job = slot.job
        assert job is not None
        job.request.send(chunk(text, reason, None))
        usage = usage_chunk(
            len(job.prompt),
            job.evaluated,
            job.generated,
            decode_steps=job.steps,
            drafted=job.drafted,
            draft_kept=job.draft_kept,
        )
        self.engine.count(usage["usage"])
        job.request.send(usage)
        self.finish(slot, None)

    def finish(self, slot: Slot, error: BaseException | None) -> None:
        """Free the slot; its KV cache stays for the conversation's next call."""
        if slot.job is not None:
            slot.job.request.send(error)
        if error is not None:  # what the KV cache holds is unknown: start afresh
            slot.kv.clear()
        slot.pending.clear()  # a prompt cut short: what was evaluated stays, up to a boundary
        if slot.sampler is not None:
            slot.sampler.free()
        slot.sampler = None
        if slot.donor is not None:  # ended while waiting to copy
            slot.donor.lending -= 1
        slot.job, slot.text, slot.next_token, slot.donor = None, None, None, None
        slot.drafter = None
        self.engine.admit()
        self.engine.lock.notify_all()
