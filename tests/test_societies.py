"""Societies on scripted models: strategies, topologies, stop conditions, critic loop,
mixture-of-agents, judges and conformity."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

import moot
from moot.presets import MACHINESOM_STRATEGIES, machinesom, machinesom_grid
from moot.testing import ScriptedChatModel


def named(*answers: str) -> list[ScriptedChatModel]:
    return [ScriptedChatModel(respond=lambda m, a=a: f"Reasoning.\nAnswer: {a}") for a in answers]


def society(models, **protocol) -> moot.Society:
    agents = [moot.Agent(name=f"a{i}", model=model) for i, model in enumerate(models)]
    return moot.Society(agents=agents, protocol=moot.Debate(**protocol))


def shown_peers(message) -> set[str]:
    return {
        line.split()[-1].rstrip(":")
        for line in message.text.splitlines()
        if line.startswith("Answer of ")
    }


# -- strategies -------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", MACHINESOM_STRATEGIES)
def test_each_strategy_shows_peers_only_in_debate_rounds(strategy):
    models = named("1", "2", "3")
    result = society(models, strategy=strategy).run("q")
    moves = strategy.split("-")
    assert result.rounds == 4 and len(result.turns) == 12
    for index, model in enumerate(models):
        assert len(model.calls) == 4
        for round, move in enumerate(moves, start=2):
            prompt = model.calls[round - 1]
            newest = prompt[-1]
            # Each prompt extends the agent's previous one with its reply and one new message.
            assert prompt[: len(model.calls[round - 2])] == model.calls[round - 2]
            assert isinstance(prompt[-2], AIMessage)
            others = {f"a{j}" for j in range(3) if j != index}
            if move == "debate":
                assert shown_peers(newest) == others
                assert result.round_turns(round)[index].peers == sorted(others)
            else:
                assert shown_peers(newest) == set()
                assert "Examine your previous answer" in newest.text
                assert result.round_turns(round)[index].peers == []


def test_moves_can_differ_per_agent_within_a_round():
    models = named("1", "2", "3")
    society(models, strategy=[{"a1": "reflect"}, "debate"]).run("q")
    assert shown_peers(models[0].calls[1][-1]) == {"a1", "a2"}
    assert shown_peers(models[1].calls[1][-1]) == set()
    assert shown_peers(models[1].calls[2][-1]) == {"a0", "a2"}


def test_strategy_must_fit_the_rounds():
    with pytest.raises(ValueError, match="strategy has 2 moves but rounds=4 needs 3"):
        moot.Debate(rounds=4, strategy="debate-reflect")
    with pytest.raises(ValueError):
        moot.Debate(strategy="debate-argue")
    assert moot.Debate(strategy="reflect-reflect").rounds == 3


# -- topologies -------------------------------------------------------------------------------


def test_ring_shows_the_two_neighbours():
    models = named("1", "2", "3", "4", "5")
    society(models, rounds=2, topology="ring").run("q")
    assert shown_peers(models[0].calls[1][-1]) == {"a4", "a1"}
    assert shown_peers(models[2].calls[1][-1]) == {"a1", "a3"}


def test_star_shows_the_hub_everyone_and_the_others_only_the_hub():
    models = named("1", "2", "3", "4")
    society(models, rounds=2, topology="star", hub="a2").run("q")
    assert shown_peers(models[2].calls[1][-1]) == {"a0", "a1", "a3"}
    for index in (0, 1, 3):
        assert shown_peers(models[index].calls[1][-1]) == {"a2"}


def test_custom_adjacency_and_unknown_names():
    models = named("1", "2", "3")
    society(models, rounds=2, topology={"a0": ["a2"], "a1": ["a0", "a2"]}).run("q")
    assert shown_peers(models[0].calls[1][-1]) == {"a2"}
    assert shown_peers(models[1].calls[1][-1]) == {"a0", "a2"}
    # a2 is shown no one, so it reflects.
    assert "Examine your previous answer" in models[2].calls[1][-1].text
    with pytest.raises(ValueError, match="unknown agents: zed"):
        society(named("1", "2"), topology={"a0": ["zed"]})


def test_peer_views_bound_what_is_shown():
    long_reply = "x" * 2000 + "\nAnswer: 7"
    models = [ScriptedChatModel(respond=lambda m: long_reply) for _ in range(2)]
    society(models, rounds=2, peer_view="answer").run("q")
    assert "Answer of a1:\n```\n7\n```" in models[0].calls[1][-1].text
    models = [ScriptedChatModel(respond=lambda m: long_reply) for _ in range(2)]
    society(models, rounds=2, peer_view="tail", peer_chars=100).run("q")
    shown = models[0].calls[1][-1].text
    assert "x" * 90 + "\nAnswer: 7" in shown and "x" * 200 not in shown


# -- stop conditions --------------------------------------------------------------------------


def test_consensus_stops_when_all_agree():
    result = society(named("5", "5", "5"), rounds=3, consensus=1.0).run("q")
    assert result.stop_reason == "consensus" and result.rounds == 1
    assert result.answer == "5" and result.usage.calls == 3


def test_consensus_share_and_no_consensus():
    models = named("5", "5", "6")
    assert society(models, rounds=3, consensus=0.6).run("q").stop_reason == "consensus"
    full = society(named("5", "5", "6"), rounds=3, consensus=1.0).run("q")
    assert full.stop_reason == "rounds" and full.rounds == 3


def test_consensus_after_agents_come_round():
    def follower(messages):
        return "Answer: 9" if len(messages) > 2 else "Answer: 1"

    models = [ScriptedChatModel(respond=follower), *named("9", "9")]
    result = society(models, rounds=4, consensus=1.0).run("q")
    assert result.stop_reason == "consensus" and result.rounds == 2


def test_token_budget_stops_after_the_round_that_reaches_it():
    # Each reply is 3 words; round-1 prompts are 20+ words each: round 1 alone passes 60.
    result = society(named("1", "2", "3"), rounds=4, token_budget=60).run("What is one plus one?")
    assert result.stop_reason == "token_budget" and result.rounds == 1
    assert result.answer == "1"
    unlimited = society(named("1", "2", "3"), rounds=4, token_budget=10**9).run("q")
    assert unlimited.stop_reason == "rounds" and unlimited.rounds == 4


# -- MachineSoM -------------------------------------------------------------------------------


def test_all_32_machinesom_societies_are_expressible_and_run():
    model = ScriptedChatModel(respond=lambda m: "Answer: B")
    grid = machinesom_grid(model=model)
    assert len(grid) == 32
    for key, member in grid.items():
        overconfident = int(key[2])
        traits = [agent.trait for agent in member.agents]
        assert traits.count("overconfident") == overconfident
        assert traits.count("easy-going") == 3 - overconfident
        assert member.aggregator.min_votes == 2
        assert member.protocol.rounds == 4
        result = member.run("Which letter?")
        assert result.answer == "B" and result.usage.calls == 12


def test_machinesom_needs_two_votes():
    models = named("A", "B", "C")
    agents = [moot.Agent(name=f"a{i}", model=m) for i, m in enumerate(models)]
    preset = machinesom(1, "reflect-reflect-reflect", model=models[0])
    plurality = moot.Society(agents=agents, protocol=preset.protocol, aggregator=preset.aggregator)
    assert plurality.run("q").answer is None


# -- critic loop ------------------------------------------------------------------------------


def critic(verdicts: list[str]) -> ScriptedChatModel:
    replies = iter(verdicts)
    return ScriptedChatModel(respond=lambda m: f"Looks fine.\nVerdict: {next(replies)}")


def critic_society(writer, critics, reviser=None, rounds=3) -> moot.Society:
    agents = [moot.Agent(name="writer", role="generator", model=writer)]
    agents += [moot.Agent(name=f"critic{i}", role="critic", model=c) for i, c in enumerate(critics)]
    if reviser is not None:
        agents.append(moot.Agent(name="editor", role="reviser", model=reviser))
    return moot.Society(agents=agents, protocol=moot.CriticLoop(rounds=rounds))


def test_critic_loop_stops_when_all_critics_accept():
    writer = ScriptedChatModel(respond=lambda m: f"Draft {len(m)}.\nAnswer: {len(m)}")
    critics = [critic(["REVISE", "ACCEPT"]), critic(["ACCEPT", "ACCEPT"])]
    result = critic_society(writer, critics).run("q")
    assert result.stop_reason == "accepted"
    assert [(t.round, t.agent, t.answer) for t in result.turns] == [
        (1, "writer", "2"),
        (1, "critic0", "revise"),
        (1, "critic1", "accept"),
        (2, "writer", "4"),
        (2, "critic0", "accept"),
        (2, "critic1", "accept"),
    ]
    assert result.answer == "4"
    # The critic reviews the draft; the writer revises in its own conversation.
    assert "Draft 2." in critics[0].calls[0][-1].text
    revision = writer.calls[1]
    assert [type(m) for m in revision] == [SystemMessage, HumanMessage, AIMessage, HumanMessage]
    assert "Verdict: REVISE" in revision[-1].text and "Verdict: ACCEPT" in revision[-1].text


def test_critic_loop_stops_at_the_round_limit_without_a_last_review():
    writer = ScriptedChatModel(respond=lambda m: "Answer: 3")
    critics = [critic(["REVISE"] * 5)]
    result = critic_society(writer, critics, rounds=3).run("q")
    assert result.stop_reason == "rounds"
    assert [t.agent for t in result.turns] == ["writer", "critic0", "writer", "critic0", "writer"]


def test_a_separate_reviser_and_a_missing_verdict():
    writer = ScriptedChatModel(respond=lambda m: "Answer: 1")
    editor = ScriptedChatModel(respond=lambda m: "Answer: 2")
    silent = ScriptedChatModel(respond=lambda m: "Hmm.")
    result = critic_society(writer, [silent], reviser=editor, rounds=2).run("q")
    assert [t.agent for t in result.turns] == ["writer", "critic0", "editor"]
    assert result.turns[1].answer is None  # no verdict counts as not accepted
    assert result.answer == "2" and len(writer.calls) == 1
    assert "Answer: 1" in editor.calls[0][2].text


def test_critic_loop_needs_a_critic():
    with pytest.raises(ValueError, match="at least one agent with role 'critic'"):
        moot.Society(agents=[moot.Agent(name="w", role="generator")], protocol=moot.CriticLoop())


# -- mixture-of-agents and judges ---------------------------------------------------------------


def test_mixture_layers_see_all_previous_replies_and_the_aggregator_synthesises():
    proposers = named("1", "2", "2")
    synthesiser = ScriptedChatModel(respond=lambda m: "Combined.\nAnswer: 2")
    agents = [moot.Agent(name=f"p{i}", role="proposer", model=m) for i, m in enumerate(proposers)]
    judge = moot.Judge(agent=moot.Agent(name="agg", role="aggregator", model=synthesiser))
    result = moot.Society(
        agents=agents, protocol=moot.MixtureOfAgents(layers=3), aggregator=judge
    ).run("q")
    for model in proposers:
        layer2 = model.calls[1]
        assert len(layer2) == 2  # a fresh prompt, no history
        assert shown_peers(layer2[-1]) == {"p0", "p1", "p2"}  # its own reply included
    assert shown_peers(synthesiser.calls[0][-1]) == {"p0", "p1", "p2"}
    assert "Some of them may be wrong" in synthesiser.calls[0][-1].text
    assert result.turns[-1].agent == "agg" and result.turns[-1].round == 3
    assert result.answer == "2" and result.usage.calls == 10
    assert [s.round for s in result.conformity] == [1, 2, 3]


def test_a_judge_decides_a_debate_and_its_turn_is_recorded():
    judge_model = ScriptedChatModel(respond=lambda m: "The second is right.\nAnswer: 8")
    judge = moot.Judge(agent=moot.Agent(name="judge", role="judge", model=judge_model))
    agents = [moot.Agent(name=f"a{i}", model=m) for i, m in enumerate(named("7", "7", "8"))]
    result = moot.Society(agents=agents, protocol=moot.Debate(rounds=2), aggregator=judge).run("q")
    assert result.answer == "8"  # not the majority
    assert result.turns[-1].role == "judge" and result.usage.calls == 7
    prompt = judge_model.calls[0][-1].text
    assert shown_peers(judge_model.calls[0][-1]) == {"a0", "a1", "a2"}
    assert "Decide which answer is correct" in prompt


# -- conformity -------------------------------------------------------------------------------


def test_conformity_records_distribution_changes_and_agreement():
    def convert(messages):
        return "Answer: 2" if len(messages) > 2 else "Answer: 1"

    models = [ScriptedChatModel(respond=convert), *named("2", "3")]
    result = society(models, rounds=2).run("q")
    first, second = result.conformity
    assert first.answers == {"1": 1, "2": 1, "3": 1} and first.changed == []
    assert first.agreement == pytest.approx(1 / 3)
    assert second.answers == {"2": 2, "3": 1} and second.changed == ["a0"]
    assert second.agreement == pytest.approx(2 / 3)
