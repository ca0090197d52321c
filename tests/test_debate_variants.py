"""Debate settings against conformity (issue 38): anonymous peers, the keep-unless-wrong update,
decisions over the whole trajectory, and selection by self-consistency."""

from __future__ import annotations

from typing import Any

import pytest

import moot
from moot.aggregate.crosscheck import CrossCheckVote
from moot.aggregate.select import ConsistencySelect
from moot.aggregate.trajectory import TrajectoryVote
from moot.result import Turn
from moot.testing import ScriptedChatModel


def _agent(name: str, replies: list[str], kind: str = "text", model: Any = None) -> moot.Agent:
    script = iter(replies)
    seen: list[str] = []

    def respond(messages: list[Any]) -> str:
        seen.append(str(messages[-1].content))
        return next(script)

    agent = moot.Agent(name=name, kind=kind, model=model or ScriptedChatModel(respond=respond))
    agent.__dict__["seen"] = seen  # what the agent was last asked, for the assertions
    return agent


def test_anonymous_peers_are_shown_without_their_names() -> None:
    agents = [_agent(n, ["Answer: 1", "Answer: 1"]) for n in ("alice", "bob")]
    debate = moot.Debate(rounds=2, anonymous=True)
    moot.Society(agents=agents, protocol=debate, max_concurrency=1).run("Q?")
    update = agents[0].__dict__["seen"][1]
    assert "bob" not in update and "One agent's answer:" in update


def test_named_peers_are_the_default() -> None:
    agents = [_agent(n, ["Answer: 1", "Answer: 1"]) for n in ("alice", "bob")]
    moot.Society(agents=agents, protocol=moot.Debate(rounds=2)).run("Q?")
    assert "bob" in agents[0].__dict__["seen"][1]


def test_sparse_views_show_each_agent_the_next_peers_only() -> None:
    names = ("a", "b", "c", "d")
    agents = [_agent(n, ["Answer: 1", "Answer: 1"]) for n in names]
    debate = moot.Debate(rounds=2, peers_shown=2)
    result = moot.Society(agents=agents, protocol=debate).run("Q?")
    assert {t.agent: t.peers for t in result.turns if t.round == 2} == {
        "a": ["b", "c"], "b": ["c", "d"], "c": ["a", "d"], "d": ["a", "b"]
    }  # fmt: skip
    assert "Answer of d" not in agents[0].__dict__["seen"][1]
    ring = moot.Debate(rounds=2, topology="ring", peers_shown=1)  # of its two ring neighbours
    assert [ring.neighbours(agents, i) for i in range(4)] == [["b"], ["c"], ["d"], ["a"]]
    with pytest.raises(ValueError, match="peers_shown"):
        moot.Debate(peers_shown=0)


def test_the_keep_update_asks_to_name_an_error_before_changing() -> None:
    agents = [_agent(n, ["Answer: 1", "Answer: 1"]) for n in ("alice", "bob")]
    debate = moot.Debate(rounds=2, update_style="keep")
    moot.Society(agents=agents, protocol=debate).run("Q?")
    update = agents[0].__dict__["seen"][1]
    assert "Keep your own answer unless you find a specific error" in update
    assert "Use their reasoning as additional advice" not in update


def _turn(round: int, agent: str, answer: str | None, failed: bool = False) -> Turn:
    return Turn(
        round=round, agent=agent, role="debater", answer=answer, error="x" if failed else None
    )


def test_the_trajectory_vote_keeps_the_first_answers_in_the_decision() -> None:
    # Round 1: a and b say 7, c says 9; round 2: a and c conform to 9 -> the last round says 9.
    turns = [
        _turn(1, "a", "7"), _turn(1, "b", "7"), _turn(1, "c", "9"),
        _turn(2, "a", "9"), _turn(2, "b", "7"), _turn(2, "c", "9"),
    ]  # fmt: skip
    names = ["a", "b", "c"]
    vote = TrajectoryVote()
    # 7: a1 1 + b1 1 + b2 kept 1 = 3; 9: c1 1 + a2 changed 0.5 + c2 kept 1 = 2.5
    assert vote.weights(turns, names) == [
        ("7", 1.0), ("7", 1.0), ("9", 1.0), ("9", 0.5), ("7", 1.0), ("9", 1.0)
    ]  # fmt: skip
    assert vote.aggregate({"turns": turns}, None, names) == {"answer": "7"}  # type: ignore[arg-type]
    last_only = TrajectoryVote(first=0, keep=0, change=0, last=1)
    assert last_only.aggregate({"turns": turns}, None, names) == {"answer": "9"}  # type: ignore[arg-type]


def test_the_trajectory_vote_skips_failed_turns_and_other_agents() -> None:
    turns = [_turn(1, "a", None, failed=True), _turn(1, "b", "3"), _turn(1, "judge", "4")]
    vote = TrajectoryVote()
    assert vote.aggregate({"turns": turns}, None, ["a", "b"]) == {"answer": "3"}  # type: ignore[arg-type]
    assert vote.aggregate({"turns": []}, None, ["a"]) == {"answer": None}  # type: ignore[arg-type]


def test_a_trajectory_society_runs_end_to_end() -> None:
    agents = [
        _agent("a", ["Answer: 7", "Answer: 9"]),
        _agent("b", ["Answer: 7", "Answer: 7"]),
        _agent("c", ["Answer: 9", "Answer: 9"]),
    ]
    society = moot.Society(
        agents=agents, protocol=moot.Debate(rounds=2), aggregator=TrajectoryVote()
    )
    assert society.run("Q?").answer == "7"


def test_selection_answers_with_the_group_that_agrees_most() -> None:
    # Two programs agree on 42; the three text agents split 40 / 41 / 40 (2 of 3 < 2 of 2).
    agents = [
        _agent("p1", ["```python\nprint(42)\n```"], kind="program"),
        _agent("p2", ["```python\nprint(6 * 7)\n```"], kind="program"),
        _agent("t1", ["Answer: 40"]),
        _agent("t2", ["Answer: 41"]),
        _agent("t3", ["Answer: 40"]),
    ]
    society = moot.Society(
        agents=agents, protocol=moot.Debate(rounds=1), aggregator=ConsistencySelect(group_by="kind")
    )
    result = society.run("What is 6*7?")
    assert result.answer == "42"


def test_selection_over_one_group_is_the_majority_vote() -> None:
    model = ScriptedChatModel(respond=lambda messages: "Answer: 5")
    agents = [moot.Agent(name=f"a{i}", model=model) for i in range(3)]
    society = moot.Society(
        agents=agents, protocol=moot.Debate(rounds=1), aggregator=ConsistencySelect()
    )
    assert society.run("Q?").answer == "5"


def test_the_cross_check_prefers_an_answer_both_kinds_reached() -> None:
    # Three text agents say 40 / 40 / 42 and the programs 42 / 45: the majority is 40, but
    # only 42 was reached by a text agent and by a program.
    agents = [
        _agent("t1", ["Answer: 40"]),
        _agent("t2", ["Answer: 40"]),
        _agent("t3", ["Answer: 42"]),
        _agent("p1", ["```python\nprint(6 * 7)\n```"], kind="program"),
        _agent("p2", ["```python\nprint(45)\n```"], kind="program"),
    ]
    society = moot.Society(
        agents=agents, protocol=moot.Debate(rounds=1), aggregator=CrossCheckVote(group_by="kind")
    )
    result = society.run("What is 6*7?")
    assert result.answer == "42"


@pytest.mark.parametrize(
    ("replies", "answer"),
    [
        (["Answer: 5", "Answer: 5", "Answer: 6"], "5"),  # one source: the majority
        (["Answer: 6", "Answer: 5", "Answer: 5"], "5"),
        (["Answer: 6", "Answer: 5", "Answer: 7"], "6"),  # no majority: the first given
        (["no answer here", "Answer: 7", "no answer"], "7"),  # unanswered turns skipped
    ],
)
def test_the_cross_check_over_one_source_is_the_majority_vote(
    replies: list[str], answer: str
) -> None:
    agents = [_agent(f"a{i}", [reply]) for i, reply in enumerate(replies)]
    society = moot.Society(
        agents=agents, protocol=moot.Debate(rounds=1), aggregator=CrossCheckVote()
    )
    assert society.run("Q?").answer == answer


def test_the_cross_check_has_no_answer_when_no_agent_gave_one() -> None:
    agents = [_agent(f"a{i}", ["I cannot say."]) for i in range(2)]
    society = moot.Society(
        agents=agents, protocol=moot.Debate(rounds=1), aggregator=CrossCheckVote()
    )
    assert society.run("Q?").answer is None


def test_bench_method_names_carry_the_settings() -> None:
    from moot.bench.methods import MethodSettings, check_method, method_spec

    settings = MethodSettings(model="test")
    spec = method_spec("debate-3x3-consensus-keep-anon-trajectory", "number", settings)
    debate = spec.protocol
    assert isinstance(debate, moot.Debate)
    assert (debate.rounds, debate.consensus, debate.anonymous, debate.update_style) == (
        3,
        1.0,
        True,
        "keep",
    )
    assert isinstance(spec.aggregator, TrajectoryVote)
    mixed = method_spec("vote-3-pal3-select", "number", settings)
    assert [(a.kind, a.seed) for a in mixed.agents] == [
        ("text", 0), ("text", 1), ("text", 2), ("program", 0), ("program", 1), ("program", 2)
    ]  # fmt: skip
    assert isinstance(mixed.aggregator, ConsistencySelect)
    cross = method_spec("vote-6-pal3-crosscheck", "number", settings)
    assert [a.kind for a in cross.agents] == ["text"] * 6 + ["program"] * 3
    assert isinstance(cross.aggregator, CrossCheckVote)
    assert [a.kind for a in method_spec("pal-2", "number", settings).agents] == ["program"] * 2
    sparse = method_spec("debate-4x2-sparse1", "number", settings).protocol
    assert isinstance(sparse, moot.Debate) and sparse.peers_shown == 1
    wrongs = ("vote-3-keep-keep", "debate-3x2-loud", "vote-3-crosscheck-select")
    for wrong in (*wrongs, "debate-3x2-sparse1-sparse2"):
        with pytest.raises(moot.ConfigError, match="unknown method"):
            check_method(wrong)
    for wrong in ("vote-3-pal0", "pal-0", "debate-3x2-sparse0"):
        with pytest.raises(moot.ConfigError, match="every count is 1 or more"):
            check_method(wrong)
    with pytest.raises(moot.ConfigError, match="use --prompts moot"):
        method_spec("vote-3-pal1", "number", settings.model_copy(update={"prompt_set": "du-gsm8k"}))


def test_each_method_meets_the_vote_of_at_least_its_tokens() -> None:
    from moot.bench.matched import matched_votes
    from moot.bench.records import BenchRecord, RoundRecord

    def record(
        method: str, qid: str, answers: dict[str, str], right: str, tokens: int
    ) -> BenchRecord:
        first = RoundRecord(
            round=1, answers=answers, correct={a: v == right for a, v in answers.items()},
            vote=None, vote_correct=False, agreement=0, tokens=tokens, calls=len(answers),
        )  # fmt: skip
        return BenchRecord(
            task="t", method=method, model="m", settings="s", trial=0, question_id=qid,
            reference=right, answer=None, correct=False, tokens=tokens, per_round=[first],
        )  # fmt: skip

    five = {f"agent{i}": a for i, a in enumerate(["1", "2", "2", "2", "1"], 1)}
    records = [
        record("vote-5", "q1", five, "2", 500),  # 100 tokens a sample
        record("vote-5", "q2", {k: "9" for k in five}, "3", 500),
        record("clever", "q1", {}, "2", 250).model_copy(update={"correct": True}),
        record("clever", "q2", {}, "3", 250).model_copy(update={"correct": True}),
    ]
    (matched,) = matched_votes(records)
    # 250 tokens -> the vote of 3 (its first three agents: 1, 2, 2 -> "2": right on q1)
    assert (matched.method, matched.votes, matched.enough) == ("clever", 3, True)
    assert (matched.method_right, matched.vote_right) == (2, 1)
    assert (matched.only_method, matched.only_vote) == (1, 0)
