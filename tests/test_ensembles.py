"""Ensembles, routing, cascades and pipelines on scripted models."""

from __future__ import annotations

import math
import re

import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult

import moot
from moot.aggregate.confidence import logprob_confidence, stated_confidence
from moot.graphs.cascade import TierOutcome, calibrate, simulate
from moot.graphs.router import Router
from moot.presets import self_consistency
from moot.result import Turn
from moot.testing import ScriptedChatModel


def says(answer: str, extra: str = "") -> ScriptedChatModel:
    return ScriptedChatModel(respond=lambda m: f"Thinking.{extra}\nAnswer: {answer}")


def turn(agent: str, answer: str | None, confidence: float | None = None) -> Turn:
    return Turn(round=1, agent=agent, role="debater", answer=answer, confidence=confidence)


# -- aggregators ------------------------------------------------------------------------------


def test_weighted_vote_arithmetic_and_ties():
    vote = moot.WeightedVote(weights={"a": 3.0, "b": 1.0, "c": 1.0})
    assert vote.choose([turn("a", "1"), turn("b", "2"), turn("c", "2")]) == "1"  # 3 > 2
    vote = moot.WeightedVote(weights={"a": 1.0, "b": 0.5, "c": 0.5})
    assert vote.choose([turn("a", "1"), turn("b", "2"), turn("c", "2")]) == "1"  # tie: first
    assert vote.choose([None, turn("b", None)]) is None


def test_confidence_vote_weighs_by_reported_confidence():
    vote = moot.ConfidenceVote(default=0.1)
    turns = [turn("a", "1", 0.9), turn("b", "2", 0.4), turn("c", "2", 0.4)]
    assert vote.choose(turns) == "1"  # 0.9 > 0.8
    assert vote.choose([turn("a", "1"), turn("b", "2", 0.2)]) == "2"  # default 0.1 < 0.2


def test_confidence_from_logprobs_and_from_the_reply():
    def entry(token, logprob):
        return {"token": token, "logprob": logprob}

    logprobs = {
        "content": [entry("So", -2.0), entry(" Answer", -0.1), entry(":", -0.1),
                    entry(" 4", math.log(0.8)), entry("2", math.log(0.5))]
    }  # fmt: skip
    assert logprob_confidence(logprobs) == pytest.approx(math.sqrt(0.8 * 0.5))
    assert logprob_confidence(None) is None
    assert stated_confidence("Answer: 4\nConfidence: 0.75") == 0.75
    assert stated_confidence("Confidence: 80%") == 0.8
    assert stated_confidence("no number") is None


def test_turns_record_logprob_confidence_from_the_model():
    class WithLogprobs(ScriptedChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            assert kwargs.get("logprobs") is True
            content = [{"token": "Answer", "logprob": -0.1}, {"token": " 7", "logprob": -0.5}]
            reply = AIMessage(
                content="Answer: 7", response_metadata={"logprobs": {"content": content}}
            )
            return ChatResult(generations=[ChatGeneration(message=reply)])

    agent = moot.Agent(name="a", model=WithLogprobs(respond=str), logprobs=True)
    result = moot.Society(agents=[agent], protocol=moot.Debate(rounds=1)).run("q")
    assert result.turns[0].confidence == pytest.approx(math.exp(-0.5))


def test_pairwise_rank_compares_both_orders_and_fuses_the_top_k():
    def judge(messages):
        text = messages[-1].text
        first = re.search(r"Candidate A:\n```\n(.*?)\n```", text, re.S).group(1)
        second = re.search(r"Candidate B:\n```\n(.*?)\n```", text, re.S).group(1)
        return "Better: A" if len(first) >= len(second) else "Better: B"  # longer wins

    judge_model = ScriptedChatModel(respond=judge)
    fuser_model = ScriptedChatModel(respond=lambda m: "Merged.\nAnswer: 99")
    agents = [
        moot.Agent(name="short", model=says("1")),
        moot.Agent(name="long", model=says("2", " " + "x" * 50)),
        moot.Agent(name="mid", model=says("3", " " + "x" * 20)),
    ]
    ranker = moot.PairwiseRank(
        judge=moot.Agent(name="judge", role="judge", model=judge_model),
        fuser=moot.Agent(name="fuser", role="aggregator", model=fuser_model),
        top_k=2,
    )
    result = moot.Society(agents=agents, protocol=moot.Debate(rounds=1), aggregator=ranker).run("q")
    comparisons = [t for t in result.turns if t.agent == "judge"]
    assert len(comparisons) == 6  # 3 candidates, every pair in both orders
    assert {tuple(t.peers) for t in comparisons} == {
        (a, b) for a in ("short", "long", "mid") for b in ("short", "long", "mid") if a != b
    }
    fused = fuser_model.calls[0][-1].text
    assert "Answer of long" in fused and "Answer of mid" in fused and "Answer of short" not in fused
    assert result.answer == "99" and result.usage.calls == 3 + 6 + 1
    ranker.fuser = None
    no_fuser = moot.Society(agents=agents, protocol=moot.Debate(rounds=1), aggregator=ranker)
    assert no_fuser.run("q").answer == "2"


async def test_pairwise_rank_async_matches():
    judge_model = ScriptedChatModel(respond=lambda m: "Better: B")
    agents = [moot.Agent(name=f"a{i}", model=says(str(i))) for i in range(3)]
    ranker = moot.PairwiseRank(judge=moot.Agent(name="judge", model=judge_model))
    society = moot.Society(agents=agents, protocol=moot.Debate(rounds=1), aggregator=ranker)
    # "B" always wins: every candidate wins twice; the tie keeps agent order.
    assert (await society.arun("q")).answer == society.run("q").answer == "0"


def test_self_consistency_samples_one_model_n_times():
    model = says("5")
    society = self_consistency(moot.Agent(name="s", model=model, seed=10), samples=4)
    assert [a.name for a in society.agents] == ["s1", "s2", "s3", "s4"]
    assert [a.seed for a in society.agents] == [10, 11, 12, 13]
    result = society.run("q")
    assert result.answer == "5" and len(model.calls) == 4


# -- router -----------------------------------------------------------------------------------


def experts(**models) -> list[moot.Agent]:
    described = {"maths": "arithmetic and numbers", "history": "dates and wars"}
    described["chem"] = "molecules"
    return [
        moot.Agent(name=name, description=text, model=models.get(name, says(str(number))))
        for number, (name, text) in enumerate(described.items(), start=1)
    ]


def test_rule_router_sends_each_question_to_the_matching_expert():
    router = moot.Router(rules={"maths": [r"\d+\s*[-+*/]", "sum"], "history": ["war", "year"]})
    society = moot.Society(agents=experts(), protocol=router)
    maths = society.run("What is 2 + 3?")
    assert maths.details["route"] == ["maths"] and maths.answer == "1"
    assert [t.agent for t in maths.turns] == ["maths"] and maths.usage.calls == 1
    assert society.run("Which war ended in which year?").details["route"] == ["history"]
    assert society.run("Why is the sky blue?").details["route"] == ["maths"]  # the fallback


def test_top_k_experts_answer_and_are_aggregated():
    router = moot.Router(rules={"maths": ["sum"], "chem": ["sum", "mol"]}, top_k=2)
    models = {"maths": says("7"), "chem": says("7")}
    result = moot.Society(agents=experts(**models), protocol=router).run("sum of moles")
    assert result.details["route"] == ["chem", "maths"]
    assert sorted(t.agent for t in result.turns) == ["chem", "maths"] and result.answer == "7"


class KeywordEmbeddings(Embeddings):
    """A tiny exact embedding: counts of a few words."""

    words = ["number", "arithmetic", "war", "date", "molecule", "atom"]

    def embed_query(self, text):
        lowered = text.lower()
        return [float(lowered.count(word)) + 0.01 for word in self.words]

    def embed_documents(self, texts):
        return [self.embed_query(text) for text in texts]


def test_embedding_router_picks_the_nearest_description():
    router = Router(by="embedding", embeddings=KeywordEmbeddings())
    society = moot.Society(agents=experts(), protocol=router)
    assert society.run("A molecule and an atom walk into a bar").details["route"] == ["chem"]
    assert society.run("What date did the war start?").details["route"] == ["history"]


def test_llm_router_records_its_turn_and_its_choice():
    chooser = ScriptedChatModel(respond=lambda m: "Hmm.\nExperts: History")
    agents = [moot.Agent(name="gate", role="router", model=chooser), *experts()]
    result = moot.Society(agents=agents, protocol=moot.Router(by="llm")).run(
        "When was Rome founded?"
    )
    assert result.details["route"] == ["history"]
    assert [t.agent for t in result.turns] == ["gate", "history"] and result.answer == "2"
    assert "- chem: molecules" in chooser.calls[0][-1].text


def test_router_configuration_errors():
    with pytest.raises(ValueError, match="unknown experts: physics"):
        moot.Society(agents=experts(), protocol=moot.Router(rules={"physics": ["x"]}))
    with pytest.raises(ValueError, match="needs an agent with role 'router'"):
        moot.Society(agents=experts(), protocol=moot.Router(by="llm"))


# -- cascade ----------------------------------------------------------------------------------


def cascade_society(weak: list[str], strong: str, threshold: float) -> moot.Society:
    agents = [moot.Agent(name=f"weak{i}", model=says(a)) for i, a in enumerate(weak)]
    agents.append(moot.Agent(name="strong", model=says(strong)))
    tiers = [[f"weak{i}" for i in range(len(weak))], ["strong"]]
    return moot.Society(agents=agents, protocol=moot.Cascade(tiers=tiers, threshold=threshold))


def test_cascade_stops_at_a_confident_tier():
    result = cascade_society(["4", "4", "4"], "9", threshold=0.7).run("q")
    assert result.answer == "4" and result.stop_reason == "confident"
    assert [t["tier"] for t in result.details["tiers"]] == [1]
    assert result.usage.calls == 3


def test_cascade_escalates_exactly_when_below_the_threshold():
    # Agreement 2/3 = 0.667: escalates at a threshold of 0.7, not at 0.6 or 2/3 itself.
    escalated = cascade_society(["4", "4", "5"], "9", threshold=0.7).run("q")
    assert escalated.answer == "9" and escalated.stop_reason == "rounds"
    assert [t["confidence"] for t in escalated.details["tiers"]] == [pytest.approx(2 / 3), 1.0]
    for threshold in (0.6, 2 / 3):
        kept = cascade_society(["4", "4", "5"], "9", threshold=threshold).run("q")
        assert kept.answer == "4" and len(kept.details["tiers"]) == 1


def test_cascade_accounts_cost_per_tier():
    result = cascade_society(["4", "5"], "9", threshold=0.9).run("What is 4+5?")
    first, second = result.details["tiers"]
    assert first["agents"] == ["weak0", "weak1"] and second["agents"] == ["strong"]
    assert first["usage"]["calls"] == 2 and second["usage"]["calls"] == 1
    per_tier = first["usage"]["total_tokens"] + second["usage"]["total_tokens"]
    assert per_tier == result.usage.total_tokens


def test_cascade_on_reported_confidence():
    agents = [
        moot.Agent(name="weak", model=says("4", "\nConfidence: 0.3")),
        moot.Agent(name="strong", model=says("9", "\nConfidence: 0.9")),
    ]
    protocol = moot.Cascade(threshold=0.5, confidence="reported")
    result = moot.Society(agents=agents, protocol=protocol).run("q")
    assert [t["confidence"] for t in result.details["tiers"]] == [0.3, 0.9]
    assert result.answer == "9"


def early_stopping_vote(answers: list[str], window: int, decide: str = "all") -> moot.Society:
    agents = [moot.Agent(name=f"s{i}", model=says(a)) for i, a in enumerate(answers)]
    names = [agent.name for agent in agents]
    windows = [names[start : start + window] for start in range(0, len(names), window)]
    protocol = moot.Cascade(tiers=windows, threshold=1.0, decide=decide)
    return moot.Society(agents=agents, protocol=protocol)


def test_an_early_stopping_vote_stops_at_the_first_window_that_agrees():
    result = early_stopping_vote(["4", "5", "5", "5", "9", "9"], window=2).run("q")
    assert result.stop_reason == "confident" and result.usage.calls == 4
    assert [t["answer"] for t in result.details["tiers"]] == ["4", "5"]
    assert result.answer == "5"  # three of the four samples drawn


def test_an_early_stopping_vote_decides_by_every_sample_drawn_not_the_last_window():
    answers = ["4", "5", "4", "6", "9", "9"]  # the third window agrees on 9; 4 and 9 tie at two
    pooled = early_stopping_vote(answers, window=2).run("q")
    assert pooled.usage.calls == 6 and pooled.answer == "4"  # a tie goes to the first given
    assert early_stopping_vote(answers, window=2, decide="tier").run("q").answer == "9"


def test_a_program_agent_in_a_cascade_is_asked_for_a_program_and_its_program_runs():
    def program(messages):
        assert "Write a short Python program" in messages[-1].content
        return "```python\nprint(6 * 7)\n```"

    agents = [
        moot.Agent(name="text", model=says("41")),
        moot.Agent(name="code", model=ScriptedChatModel(respond=program), kind="program"),
        moot.Agent(name="text2", model=says("42")),
    ]
    protocol = moot.Cascade(tiers=[["text", "code"], ["text2"]], threshold=1.0, decide="all")
    result = moot.Society(agents=agents, protocol=protocol).run("What is 6 * 7?")
    assert [t.answer for t in result.turns if t.agent == "code"] == ["42"]
    assert result.answer == "42" and result.usage.calls == 3  # 41 and 42 split: a second tier


def test_a_tie_goes_to_the_agent_its_tier_lists_first():
    agents = [moot.Agent(name="a", model=says("1")), moot.Agent(name="b", model=says("2"))]
    for decide in ("tier", "all"):
        protocol = moot.Cascade(tiers=[["b", "a"]], decide=decide)
        assert moot.Society(agents=agents, protocol=protocol).run("q").answer == "2"


def test_an_early_stopping_vote_counts_each_agent_once():
    agents = [moot.Agent(name="a", model=says("1")), moot.Agent(name="b", model=says("2"))]
    with pytest.raises(ValueError, match="a is in more than one tier"):
        moot.Society(agents=agents, protocol=moot.Cascade(tiers=[["a", "b"], ["a"]], decide="all"))


def test_a_last_window_that_agrees_stops_as_confident_and_one_that_splits_on_rounds():
    assert early_stopping_vote(["4", "3", "5", "5"], window=2).run("q").stop_reason == "confident"
    assert early_stopping_vote(["4", "3", "5", "6"], window=2).run("q").stop_reason == "rounds"


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        ([["a", "a"], ["b"]], "listed twice in one tier .*: a;"),
        ([["a"], ["b", "c"]], "tier 1 has one agent"),
        ([["a", "b"]], "in no tier, so never asked: c;"),
    ],
)
def test_cascade_tiers_that_could_not_mean_what_they_say_are_refused(tiers, message):
    agents = [moot.Agent(name=n, model=says("1")) for n in "abc"]
    with pytest.raises(moot.ConfigError, match=message):
        moot.Society(agents=agents, protocol=moot.Cascade(tiers=tiers, decide="all"))


def test_a_failed_or_unreadable_sample_never_makes_a_window_agree():
    broken = moot.Agent(name="s1", model=ScriptedChatModel(respond=lambda m: 1 / 0), retries=0)
    agents = [
        moot.Agent(name="s0", model=says("7")),
        broken,
        moot.Agent(name="s2", model=ScriptedChatModel(respond=lambda m: "no idea")),
        moot.Agent(name="s3", model=says("7")),
        moot.Agent(name="s4", model=says("8")),
    ]
    tiers = [["s0", "s1"], ["s2", "s3"], ["s4"]]
    protocol = moot.Cascade(tiers=tiers, threshold=1.0, decide="all")
    result = moot.Society(agents=agents, protocol=protocol).run("q")
    assert result.usage.calls == 5 and result.stop_reason == "rounds"
    assert [t.failed for t in result.turns].count(True) == 1  # recorded, the vote went on
    assert result.answer == "7"


def test_calibration_picks_the_cheapest_threshold_within_the_margin():
    def q(weak_correct, weak_conf, strong_correct=True):
        return [
            TierOutcome(correct=weak_correct, confidence=weak_conf, tokens=10),
            TierOutcome(correct=strong_correct, confidence=1.0, tokens=100),
        ]

    profiles = [q(True, 0.9), q(True, 0.8), q(False, 0.4), q(False, 0.3)]
    assert simulate(profiles, 0.0) == (0.5, 10.0, 0.0)
    assert simulate(profiles, 0.5) == (1.0, 60.0, 0.5)
    assert simulate(profiles, 1.5) == (1.0, 110.0, 1.0)
    best = calibrate(profiles, margin=0.0)
    assert best.threshold == 0.8 and best.accuracy == 1.0 and best.escalated == 0.5
    assert calibrate(profiles, margin=0.5).threshold == 0.0


# -- pipeline ---------------------------------------------------------------------------------


def test_pipeline_passes_each_stage_its_predecessors_output():
    parse = ScriptedChatModel(respond=lambda m: "Numbers: 2 and 3")
    solve = ScriptedChatModel(respond=lambda m: "2+3=5\nAnswer: 5")
    verify = ScriptedChatModel(respond=lambda m: "Checked.\nAnswer: 5")
    agents = [
        moot.Agent(name="p", role="parse the question", model=parse),
        moot.Agent(name="s", role="solve", model=solve),
        moot.Agent(name="v", role="verify", model=verify),
    ]
    result = moot.Society(agents=agents, protocol=moot.Pipeline()).run("What is 2+3?")
    assert [(t.round, t.agent) for t in result.turns] == [(1, "p"), (2, "s"), (3, "v")]
    assert "Your part: parse the question" in parse.calls[0][-1].text
    assert (
        "The previous step (parse the question, p) wrote:\n```\nNumbers: 2 and 3"
        in solve.calls[0][-1].text
    )
    assert "2+3=5" in verify.calls[0][-1].text
    assert result.answer == "5" and result.usage.calls == 3


def test_a_society_file_states_an_early_stopping_vote(tmp_path):
    path = tmp_path / "esc.yaml"
    text = (
        "agents:\n  - {name: s, copies: 4, model: test}\n"
        "protocol: {kind: cascade, tiers: [[s1, s2], [s3, s4]], threshold: 1.0, decide: all}\n"
    )
    path.write_text(text)
    society = moot.load_society(path)
    assert society.protocol.decide == "all" and society.protocol.tiers[1] == ["s3", "s4"]
    path.write_text(text.replace("decide: all", "decide: sometimes"))
    with pytest.raises(moot.ConfigError, match=r"decide.*'tier' or 'all'"):
        moot.load_society(path)


@pytest.mark.parametrize(
    "protocol", [moot.Pipeline(), moot.MixtureOfAgents(layers=1), moot.CriticLoop()]
)
def test_protocols_that_never_ask_for_a_program_refuse_program_agents(protocol):
    agents = [
        moot.Agent(name="text", model=says("1"), role="proposer"),
        moot.Agent(name="critic", model=says("1"), role="critic"),
        moot.Agent(name="code", model=says("1"), kind="program", role="proposer"),
    ]
    with pytest.raises(ValueError, match="program agents code would fail every turn"):
        moot.Society(agents=agents, protocol=protocol)


def test_a_router_that_chooses_or_a_judge_is_never_a_program_agent():
    expert = moot.Agent(name="a", model=says("1"))
    router = moot.Agent(name="r", model=says("a"), role="router", kind="program")
    with pytest.raises(ValueError, match="router agent r is a program agent"):
        moot.Society(agents=[expert, router], protocol=moot.Router(by="llm"))
    coder = moot.Agent(name="c", model=says("1"), kind="program")
    routed = moot.Society(agents=[expert, coder], protocol=moot.Router(fallback="c"))
    assert routed.protocol.asks_for_programs()  # a program agent can be an expert
    judge = moot.Judge(agent=moot.Agent(name="j", model=says("1"), kind="program"))
    with pytest.raises(ValueError, match="Judge's j is a program agent"):
        moot.Society(agents=[expert], aggregator=judge)
