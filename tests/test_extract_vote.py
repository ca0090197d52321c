import pytest

from moot import MajorityVote
from moot.aggregate import extract_boxed, extract_choice, extract_number, extract_text
from moot.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12 + 30 = 42", "42"),
        ("First 3, then 5.\nAnswer: 8", "8"),
        ("Answer: 1,234.50 dollars", "1234.5"),
        ("The answer is -7.0", "-7"),
        ("so x = \\boxed{12}", "12"),
        ("no digits here", None),
        ("Answer: 5\nbut later I mention 99", "5"),
        # LaTeX fractions are read whole: the last number of \frac{9}{2} is not the answer 2.
        ("so she pays \\boxed{\\frac{9}{2}}", "4.5"),
        ("Answer: -\\dfrac{3}{4}", "-0.75"),
        ("\\boxed{3\\frac{1}{2}} cups", "3.5"),
        ("\\boxed{-2 \\frac{1}{2}}", "-2.5"),
        ("\\frac{1,000}{4} = \\boxed{\\tfrac{1000}{4}}", "250"),
        ("\\boxed{\\frac{x}{0}}", None),
    ],
)
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_extract_boxed_balances_braces():
    assert extract_boxed(r"\boxed{1} then \boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert extract_boxed("nothing boxed") is None
    assert extract_boxed(r"\boxed{unclosed") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: (B)", "B"),
        ("I pick C. Answer: C", "C"),
        ("A virus is ... so the option is (D).", "D"),
        ("I think A is a fine word", None),
        ("It is B) the second one", "B"),
        # A bracketed letter beats a capital that ends a sentence (a real 1.5B reply on MMLU).
        ("The statement (C) that is NOT true is:\n\n(C) Sister chromatids part in meiosis I.", "C"),
        ("Vitamin A. Type B: so (D)", "D"),
        ("Options (A) and (C) fail, so:\n\\[\n\\boxed{B}\n\\]", "B"),  # a math-tuned model's way
        # LaTeX text inside the box (1.5B replies on MMLU's maths questions, moot's prompts).
        ("so the score must have been \\(\\boxed{\\text{D}}\\).", "D"),
        ("the area of the square is $\\boxed{\\textbf{(C)}}$", "C"),
        ("the count is \\boxed{\\text{No solution}}", None),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text) == expected


def test_extract_text_normalises():
    assert extract_text("reasoning...\nAnswer: **Paris**.") == "paris"
    assert extract_text("Some thoughts\n\n  The  Moon ") == "the moon"
    assert extract_text("   ") is None


def test_majority_wins():
    assert MajorityVote().vote(["1", "2", "2"]) == "2"


def test_tie_goes_to_first_agent_order():
    assert MajorityVote().vote(["3", "4"]) == "3"
    assert MajorityVote().vote(["7", "5", "5", "7"]) == "7"
    # The first agent did not answer: the earliest answer among the tied ones wins.
    assert MajorityVote().vote([None, "5", "7", "7", "5"]) == "5"


def test_strict_plurality_needs_two_votes():
    strict = MajorityVote(min_votes=2)
    assert strict.vote(["1", "2", "3"]) is None
    assert strict.vote(["1", "2", "2"]) == "2"


def test_no_answers_no_winner():
    assert MajorityVote().vote([None, None]) is None


def test_callable_extractor_and_unknown_kind():
    vote = MajorityVote(extract=lambda text: text[:1])
    assert vote.extractor()("xyz") == "x"
    assert vote.format_prompt() == "formats/text"
    with pytest.raises(ConfigError, match="unknown extract 'roman'"):
        MajorityVote.model_construct(extract="roman", min_votes=1).extractor()


def test_agents_asked_for_a_boxed_answer_see_single_braces():
    # The format file doubles its literal braces; the agents must not see them doubled.
    import moot
    from moot.testing import ScriptedChatModel

    model = ScriptedChatModel(respond=lambda messages: "\\boxed{4}")
    society = moot.Society(
        agents=[moot.Agent(name="a", model=model)],
        protocol=moot.Debate(rounds=1),
        aggregator=MajorityVote(extract="boxed"),
    )
    assert society.run("2+2?").answer == "4"
    asked = model.calls[0][-1].text
    assert "\\boxed{}" in asked and "{{" not in asked
