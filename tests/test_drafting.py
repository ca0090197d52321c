"""Prompt-lookup drafting: what a sequence's own tokens predict of its next ones."""

from __future__ import annotations

from moot.llamacpp.drafting import PromptLookup


def test_the_draft_is_what_followed_the_latest_earlier_occurrence_of_the_ending():
    lookup = PromptLookup([1, 2, 3, 4, 5, 9, 1, 2, 3, 7, 8, 6, 1, 2, 3], most=8)
    assert lookup.draft(3) == [7, 8, 6]  # the latest "1 2 3" before the ending one


def test_the_longest_ending_that_occurred_wins():
    # "5 1 2" occurred once, followed by 40; "1 2" occurred later, followed by 50.
    lookup = PromptLookup([5, 1, 2, 40, 41, 42, 7, 1, 2, 50, 51, 52, 5, 1, 2], most=8)
    assert lookup.draft(3) == [40, 41, 42]


def test_no_draft_without_an_earlier_occurrence_or_room():
    assert PromptLookup([1, 2, 3, 4, 5], most=8).draft(4) == []
    lookup = PromptLookup([1, 2, 3, 4, 1, 2], most=8)
    assert lookup.draft(0) == []
    assert lookup.draft(1) == [3]


def test_generated_tokens_extend_the_index():
    lookup = PromptLookup([10, 11, 12, 13, 14], most=8)
    lookup.extend([10, 11])
    assert lookup.draft(4) == [12, 13, 14]


def test_the_draft_length_steps_up_after_a_whole_draft_kept_and_down_after_a_miss():
    lookup = PromptLookup(list(range(20)) * 2, most=8)
    assert lookup.lengths == [1, 3, 7] and lookup.length == 3
    lookup.judged(3, 3)
    assert lookup.length == 7
    lookup.judged(7, 7)
    assert lookup.length == 7  # at most `most`
    lookup.judged(7, 5)
    assert lookup.length == 3  # the longest length up to what was kept
    lookup.judged(3, 0)
    assert lookup.length == 1
    assert lookup.draft(10) == [0]


def test_a_draft_is_cut_to_one_of_the_lengths():
    lookup = PromptLookup([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3], most=8)
    lookup.judged(3, 3)  # length 7
    assert lookup.draft(5) == [4, 5, 6]  # room for 5: the longest length that fits is 3
    assert lookup.draft(2) == [4]
