"""Prompt-lookup drafting: guess a sequence's next tokens from its own earlier tokens.

In a debate's later rounds an agent's prompt holds its peers' replies and its own, and its new
reply copies much of them (BENCHMARKS.md, issue 39). Where the sequence's last few tokens
occurred before, the tokens that followed them then are a draft of what comes next; one decode
of the next token and the draft gives the model's logits at every drafted position, and the
engine keeps the drafted tokens the model's own sampler picks in turn (see `ContextWorker`).
Sampling each position as it would be sampled anyway keeps every reply's distribution exact,
greedy or not: a drafted token is kept only when it is the token sampled there.

The draft depends only on the sequence's own tokens and on how its earlier drafts fared, never
on other sequences, so seeded runs repeat however requests interleave. llama.cpp's
`common/ngram-cache` and its `lookup` example do the same from a corpus-wide n-gram cache; this
one looks in the sequence alone, and adapts the draft's length to what was accepted.
"""

from __future__ import annotations

from collections.abc import Iterable

NGRAMS = (4, 3, 2)
"""Lengths of the endings looked up, longest first (a longer match drafts more reliably)."""
LENGTHS = (1, 3, 7, 15)
"""The lengths a draft may have: drafts of one length are decoded together (a sequence's rows
must not be split by llama.cpp, which it does where sequences bring unequal rows), so a few
lengths make company likelier."""


class PromptLookup:
    """The tokens of one sequence, indexed by the n-grams they contain, and its draft length."""

    def __init__(self, tokens: Iterable[int], most: int) -> None:
        self.lengths = [length for length in LENGTHS if length <= most]
        """The lengths a draft may have (`LENGTHS` up to `most`, at least 1)."""
        self.length = self.lengths[min(1, len(self.lengths) - 1)]
        """The next draft's length: a step up after a draft kept whole, down to what was kept
        after one that was not."""
        self.tokens: list[int] = []
        self._after: dict[tuple[int, ...], int] = {}
        """Each n-gram seen, to the index of the token that followed its latest occurrence."""
        self.extend(tokens)

    def extend(self, tokens: Iterable[int]) -> None:
        """Add the sequence's next tokens (its prompt, then each token generated)."""
        own, after = self.tokens, self._after
        for token in tokens:
            end = len(own)
            for n in NGRAMS:
                if end >= n:
                    after[tuple(own[end - n : end])] = end
            own.append(token)

    def draft(self, limit: int) -> list[int]:
        """What followed the latest earlier occurrence of the sequence's ending (the longest of
        `NGRAMS` that occurred), at most `limit` tokens; empty where none did."""
        own = self.tokens
        for n in NGRAMS:
            start = self._after.get(tuple(own[-n:])) if len(own) >= n else None
            if start is not None:
                found = own[start : start + min(self.length, limit)]
                return found[: self._fitting(len(found))]
        return []

    def judged(self, drafted: int, kept: int) -> None:
        """Adapt the draft length to how the last draft fared."""
        if kept == drafted:
            longer = [length for length in self.lengths if length > drafted]
            self.length = longer[0] if longer else self.lengths[-1]
        else:
            self.length = self._fitting(max(1, kept))

    def _fitting(self, most: int) -> int:
        """The longest of the draft lengths up to `most` (0 if none is)."""
        return max((length for length in self.lengths if length <= most), default=0)
