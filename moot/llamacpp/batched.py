"""A llama.cpp engine that decodes many conversations together on one loaded model.

The model is loaded once; a small pool of contexts runs on it, each holding several sequences
(llama.cpp's `n_seq_max`). Every conversation lives in a sequence and stays there between calls,
so a continued conversation evaluates only its new tokens. Each context has one worker thread.
At every step it decodes the next prompt chunk of one sequence that is reading its prompt, then
one batch holding the next token of every generating sequence, and the last token of a prompt
read (continuous batching: a request that arrives mid-way joins at the next step, one that ends
leaves). A new prompt that shares a
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
  prompt token alone; generated tokens are decoded one at a time. A prompt chunk of two or more
  tokens is never mixed with other sequences' tokens in one decode (llama.cpp would re-split
  it); a chunk of one token, like a generated token, decodes alike in any company.
- Prompt-lookup drafts (`moot.llamacpp.drafting`, load option `draft`) are decoded as chunks of
  their own, the next token and its draft, for the same reason; a draft depends only on its
  sequence's tokens, so the chunking stays a function of the conversation.
On a GPU, kernels chosen by batch size may still differ in the last bits; seeded runs are then
repeatable only up to that.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from pathlib import Path

from moot.errors import ContextLengthError, ModelSpecError
from moot.llamacpp.devices import usable_cores
from moot.llamacpp.engine import Engine, LoadOptions, Request
from moot.llamacpp.model import LoadedModel
from moot.llamacpp.prompt import chat_formatter, chat_prompt
from moot.llamacpp.slots import ContextWorker, Job, Slot

_MIN_SHARED_PREFIX = 16  # a prefix worth copying from another sequence instead of evaluating


class BatchedEngine(Engine):
    """A GGUF loaded once, decoding requests from any thread on a pool of contexts."""

    def __init__(self, path: Path, options: LoadOptions) -> None:
        super().__init__()
        self.model = LoadedModel.load(path, options.n_gpu_layers)
        if options.draft and self.model.recurrent:
            self.model.close()
            raise ModelSpecError(
                f"draft: {path.name} keeps a recurrent state, from which rejected draft tokens "
                "cannot be removed: load it with draft=0"
            )
        self.formatter = chat_formatter(self.model, options.chat_format)
        self.n_ctx = options.n_ctx or self.model.n_ctx_train
        """Tokens one conversation holds."""
        # A token of every sequence, or a token and its draft, fit one decode.
        self.n_batch = max(options.n_batch, options.sequences, options.draft + 1)
        self.draft = options.draft
        """Most tokens drafted per step by prompt lookup (0: off)."""
        self.lock = threading.Condition()
        self.queue: deque[Job] = deque()
        self.clock = itertools.count(1)
        self.closed = False
        # llama.cpp's default is 4 threads whatever the machine, and threads beyond the cores
        # spin at every barrier: by default the usable cores are shared among the contexts.
        threads = options.n_threads or max(1, usable_cores() // options.contexts)
        self.workers = [
            ContextWorker(self, sequences=options.sequences, n_threads=threads)
            for _ in range(options.contexts)
        ]
        for worker in self.workers:
            worker.thread.start()

    @property
    def context_window(self) -> int:
        return self.n_ctx

    def submit(self, request: Request) -> None:
        if self.closed:  # its tokenizer is freed too
            raise ModelSpecError("the llama.cpp engine was closed")
        prompt, cuts, stop = chat_prompt(
            self.formatter, self.model.tokenize, request.messages, request.stop
        )
        if len(prompt) >= self.n_ctx:
            raise ContextLengthError(
                f"the prompt ({len(prompt)} tokens) does not fit the context window of "
                f"{self.n_ctx} tokens: shorten it or load the model with a larger n_ctx"
            )
        with self.lock:
            if self.closed:
                raise ModelSpecError("the llama.cpp engine was closed")
            self.queue.append(Job(request, prompt, cuts, stop))
            self.admit()
            self.lock.notify_all()

    def cancel(self, request: Request, wait: bool = False) -> None:
        """Free the request's sequence now, or, when its context is decoding it, right after
        that step."""
        with self.lock:
            request.abandoned = True
            for worker in self.workers:
                for slot in worker.slots:
                    if slot.serves(request) and slot not in worker.stepping:
                        worker.finish(slot, None)
            while wait and not self.closed and any(slot.serves(request) for slot in self._slots()):
                self.lock.wait(timeout=1.0)

    def busy(self) -> int:
        """Sequences holding a request, or lending their prefix to one about to copy it."""
        with self.lock:
            return sum(1 for slot in self._slots() if slot.job is not None or slot.lending)

    def close(self, grace: float = 30.0) -> bool:
        """Stop the workers and free the contexts and the model, unless a worker is still
        inside a decode after `grace` seconds."""
        with self.lock:
            self.closed = True
            self.lock.notify_all()
        deadline = time.monotonic() + grace
        for worker in self.workers:
            worker.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if any(worker.thread.is_alive() for worker in self.workers):
            return False
        for worker in self.workers:
            worker.free()
        self.model.close()
        return True

    def _slots(self) -> list[Slot]:
        return [slot for worker in self.workers for slot in worker.slots]

    def admit(self) -> None:
        """Give queued requests idle sequences, first come first served (holding the lock).

        A request takes the idle sequence that saves it the most evaluation: its own earlier
        conversation (the longest cached prefix), or a sequence of a context where another
        sequence holds a long shared prefix to copy; otherwise the least recently used one.
        """
        while self.queue:
            job = self.queue[0]
            if job.request.abandoned:
                self.queue.popleft()
                continue
            idle = [slot for slot in self._slots() if not slot.job and not slot.lending]
            if not idle:
                return
            self.queue.popleft()
            best: tuple[int, bool, int, int] | None = None
            chosen: tuple[Slot, Slot | None, int] | None = None
            for slot in idle:
                own = slot.reusable(job.prompt)
                donor, shared = slot.worker.best_donor(job.prompt, exclude=slot)
                copies = shared >= own + _MIN_SHARED_PREFIX
                saved = shared if copies else own
                busy = sum(1 for other in slot.worker.slots if other.job)
                rank = (saved, not copies, -busy, -slot.last_used)
                if best is None or rank > best:
                    best = rank
                    chosen = (slot, donor if copies else None, shared)
            assert chosen is not None
            slot, donor, shared = chosen
            slot.job = job
            slot.last_used = next(self.clock)
            slot.keep = slot.reusable(job.prompt)
            slot.donor = donor
            slot.copy = shared if donor else 0
            if donor is not None:
                donor.lending += 1
