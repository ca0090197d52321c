"""Debate protocol logic on scripted models: who sees what, failures, usage, concurrency."""

from __future__ import annotations

import asyncio
import threading

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.graph import StateGraph

import moot
from moot.testing import ScriptedChatModel
from tests.conftest import loop_ticks_while, society_of


def test_round_one_is_independent_and_later_rounds_show_the_others(echo_numbers):
    models = echo_numbers("1", "2", "3")
    result = society_of(models, rounds=3).run("What is 1+1?")

    for index, model in enumerate(models):
        first, second, third = model.calls
        # Round 1: system prompt and the question only.
        assert [type(m) for m in first] == [SystemMessage, HumanMessage]
        assert "What is 1+1?" in first[1].text
        assert f"Your name is a{index}." in first[0].text
        # Round 2: own round-1 reply replayed, then the other two agents' round-1 replies.
        assert [type(m) for m in second] == [SystemMessage, HumanMessage, AIMessage, HumanMessage]
        assert second[2].text == f"I think so.\nAnswer: {index + 1}"
        others = {f"a{j}" for j in range(3) if j != index}
        shown = second[3].text
        for other in others:
            assert f"Answer of {other}:" in shown
        assert f"Answer of a{index}:" not in shown
        # Round 3 extends round 2's conversation exactly (so a prefix cache can reuse it).
        assert third[: len(second)] == second
        assert isinstance(third[len(second)], AIMessage)

    assert result.rounds == 3
    assert [(t.round, t.agent) for t in result.turns] == [
        (r, f"a{i}") for r in (1, 2, 3) for i in range(3)
    ]
    assert result.turns[3].peers == ["a1", "a2"]
    assert result.turns[0].peers == []


def test_final_answer_is_majority_of_last_round_with_ties_to_first_agent(echo_numbers):
    assert society_of(echo_numbers("5", "7", "7")).run("q").answer == "7"
    assert society_of(echo_numbers("9", "8")).run("q").answer == "9"


def test_agents_change_their_minds_and_the_vote_uses_the_last_round():
    def follower(messages):
        # Round 1 says 1; once shown others, adopts "2".
        return "Answer: 2" if len(messages) > 2 else "Answer: 1"

    models = [ScriptedChatModel(respond=follower) for _ in range(2)]
    models.append(ScriptedChatModel(respond=lambda m: "Answer: 2"))
    result = society_of(models, rounds=2).run("q")
    assert [t.answer for t in result.round_turns(1)] == ["1", "1", "2"]
    assert result.answer == "2"


def test_a_failing_agent_becomes_a_failed_turn_and_the_debate_goes_on(echo_numbers):
    def broken(messages):
        raise RuntimeError("model crashed")  # not a passing error: not retried

    good = echo_numbers("4", "4")
    bad = ScriptedChatModel(respond=broken)
    result = society_of([good[0], bad, good[1]], rounds=2).run("q")

    failed = [t for t in result.turns if t.failed]
    assert [(t.round, t.agent) for t in failed] == [(1, "a1"), (2, "a1")]
    assert failed[0].error == "RuntimeError: model crashed"
    assert failed[0].usage.calls == 1 and failed[0].usage.total_tokens == 0
    # The others were not shown the failed agent.
    assert "Answer of a1" not in good[0].calls[1][-1].text
    assert result.turns[3].peers == ["a2"]
    # The failed agent's round-2 prompt holds the question and the others' answers in one
    # user message (no reply of its own to put between them).
    second = bad.calls[1]
    assert [type(m) for m in second] == [SystemMessage, HumanMessage]
    assert "Answer of a0" in second[1].text and "q" in second[1].text
    assert result.answer == "4"
    assert result.usage.calls == 6


def test_garbage_reply_counts_but_does_not_vote():
    models = [
        ScriptedChatModel(respond=lambda m: "%%%% no idea"),
        ScriptedChatModel(respond=lambda m: "Answer: 3"),
    ]
    result = society_of(models, rounds=1).run("q")
    assert [t.answer for t in result.turns] == [None, "3"]
    assert result.answer == "3"


def test_usage_is_counted_per_turn_and_summed(echo_numbers):
    result = society_of(echo_numbers("1", "2", "3"), rounds=2).run("What is 1+1?")
    for turn in result.turns:
        assert turn.usage.calls == 1
        assert turn.usage.output_tokens == 5  # "I think so.\nAnswer: N" is five words
        assert turn.usage.input_tokens > 0
        assert turn.usage.total_tokens == turn.usage.input_tokens + turn.usage.output_tokens
    total = result.usage
    assert total.calls == 6
    assert total.input_tokens == sum(t.usage.input_tokens for t in result.turns)
    assert total.total_tokens == total.input_tokens + total.output_tokens
    # Later rounds send longer prompts.
    assert result.turns[3].usage.input_tokens > result.turns[0].usage.input_tokens


def test_one_round_is_the_independent_answers_only(echo_numbers):
    models = echo_numbers("1", "1")
    result = society_of(models, rounds=1).run("q")
    assert result.rounds == 1 and len(result.turns) == 2
    assert all(len(model.calls) == 1 for model in models)


class InFlight:
    """Counts model calls running at once. Each call waits at a barrier of `width` parties, so
    a run passes only if `width` calls are in flight together (no sleeps, no timing)."""

    def __init__(self, width: int) -> None:
        self.now = self.peak = 0
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(width, timeout=10)
        self.async_barrier = asyncio.Barrier(width)

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1

    def sync_model(self) -> ScriptedChatModel:
        def respond(messages):
            self.enter()
            self.barrier.wait()
            self.leave()
            return "Answer: 1"

        return ScriptedChatModel(respond=respond)

    def async_model(self) -> ScriptedChatModel:
        probe = self

        class Probed(ScriptedChatModel):
            async def _agenerate(self, messages, stop=None, run_manager=None, **kwargs):
                probe.enter()
                await asyncio.wait_for(probe.async_barrier.wait(), timeout=10)
                probe.leave()
                return self._generate(messages, stop, None, **kwargs)

        return Probed(respond=lambda m: "Answer: 1")


def test_agents_of_a_round_run_in_parallel_threads():
    probe = InFlight(4)
    result = society_of([probe.sync_model() for _ in range(4)], rounds=2).run("q")
    assert not any(turn.failed for turn in result.turns)  # a broken barrier fails the turn
    assert probe.peak == 4


def test_max_concurrency_bounds_calls_in_flight():
    probe = InFlight(2)
    models = [probe.sync_model() for _ in range(6)]
    result = society_of(models, rounds=2, max_concurrency=2).run("q")
    assert not any(turn.failed for turn in result.turns)
    assert probe.peak == 2


async def test_async_run_runs_a_round_as_concurrent_tasks():
    probe = InFlight(3)
    models = [probe.async_model() for _ in range(3)]
    result = await society_of(models, rounds=2).arun("q")
    assert not any(turn.failed for turn in result.turns)
    assert probe.peak == 3
    assert result.answer == "1" and len(result.turns) == 6


async def test_async_run_does_not_block_the_event_loop(echo_numbers):
    society = society_of(echo_numbers("1", "1", delay=0.2), rounds=2)
    result, ticks = await loop_ticks_while(society.arun("q"))
    assert len(result.turns) == 4
    assert ticks >= 5  # a blocked loop would not tick at all while the debate runs


def test_stream_tags_tokens_by_agent_and_round_and_ends_with_the_result(echo_numbers):
    events = list(society_of(echo_numbers("1", "2"), rounds=2).stream("q"))
    tokens = [e for e in events if isinstance(e, moot.TokenEvent)]
    turns = [e for e in events if isinstance(e, moot.TurnEvent)]
    assert isinstance(events[-1], moot.ResultEvent)
    assert {(e.agent, e.round) for e in tokens} == {("a0", 1), ("a1", 1), ("a0", 2), ("a1", 2)}
    text = "".join(e.text for e in tokens if e.agent == "a1" and e.round == 2)
    assert text == "I think so.\nAnswer: 2"
    assert len(turns) == 4
    assert events[-1].result.turns == sorted(
        (e.turn for e in turns), key=lambda t: (t.round, t.agent)
    )


async def test_astream_matches_stream(echo_numbers):
    events = [e async for e in society_of(echo_numbers("1", "2"), rounds=2).astream("q")]
    assert isinstance(events[-1], moot.ResultEvent)
    assert sum(isinstance(e, moot.TurnEvent) for e in events) == 4


def test_graph_is_an_uncompiled_state_graph(echo_numbers):
    graph = society_of(echo_numbers("1")).graph()
    assert isinstance(graph, StateGraph)
    assert {"start", "agent_turn", "end_round", "aggregate"} <= set(graph.nodes)


def test_agents_sharing_a_spec_get_one_model_object(echo_numbers):
    model = echo_numbers("1")[0]
    society = society_of([model, model])
    context = society.context()
    assert context.models[0] is context.models[1]
    result = society.run("q")
    assert len(model.calls) == 4 and result.usage.calls == 4


def test_sampling_settings_reach_the_model():
    seen = []

    class Recording(ScriptedChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            seen.append(kwargs)
            return super()._generate(messages, stop, run_manager, **kwargs)

    agent = moot.Agent(
        name="a", model=Recording(respond=lambda m: "Answer: 1"), temperature=0.3, seed=7
    )
    moot.Society(agents=[agent], protocol=moot.Debate(rounds=1)).run("q")
    assert seen == [{"temperature": 0.3, "seed": 7}]


def test_traits_go_into_the_system_prompt():
    model = ScriptedChatModel(respond=lambda m: "Answer: 1")
    agents = [
        moot.Agent(name="calm", trait="easy-going", model=model),
        moot.Agent(name="bold", trait="overconfident", model=model),
        moot.Agent(name="pirate", trait="You talk like a pirate.", model=model),
    ]
    moot.Society(agents=agents, protocol=moot.Debate(rounds=1)).run("q")
    systems = sorted(call[0].text for call in model.calls)
    assert any("open to persuasion" in s for s in systems)
    assert any("persuade the others" in s for s in systems)
    assert any("talk like a pirate" in s for s in systems)


def test_bad_configuration_is_refused_with_clear_errors(echo_numbers):
    model = echo_numbers("1")[0]
    with pytest.raises(moot.ConfigError, match="question is empty"):
        society_of([model]).run("   ")
    with pytest.raises(ValueError, match="repeated: x"):
        moot.Society(agents=[moot.Agent(name="x", model=model), moot.Agent(name="x", model=model)])
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        moot.Debate(rounds=0)
    with pytest.raises(ValueError, match="at least 1 item"):
        moot.Society(agents=[])


def test_a_wide_round_runs_at_most_16_calls_at_once_by_default():
    probe = InFlight(16)
    result = society_of([probe.sync_model() for _ in range(32)], rounds=1).run("q")
    assert not any(turn.failed for turn in result.turns)
    assert probe.peak == 16


@pytest.mark.parametrize("topology", ["all", "ring"])
def test_each_prompt_is_the_conversation_built_from_scratch_for_its_round(topology):
    # The run keeps each agent's conversation and adds a round to it; the prompt must be the
    # one built from the turns alone, with a failed turn and a moderator's note in between.
    replies = {"a0": iter(["Answer: 1", "Answer: 2", "Answer: 3", "Answer: 4"])}

    def respond(name):
        def reply(messages):
            if name == "a1" and len(messages) == 4:  # a1's round-2 call fails
                raise RuntimeError("model down")
            return next(replies[name]) if name in replies else f"Answer: {len(messages)}"

        return reply

    models = {name: ScriptedChatModel(respond=respond(name)) for name in ("a0", "a1", "a2", "a3")}
    agents = [moot.Agent(name=name, model=model) for name, model in models.items()]
    protocol = moot.Debate(rounds=4, topology=topology, anonymous=True)
    society = moot.Society(agents=agents, protocol=protocol)
    result = society.run("q", moderator=lambda round, turns: moot.Moderation(note=f"n{round}"))
    assert any(turn.failed for turn in result.turns)

    run = society._run("q", {})
    for turn_round in (2, 3, 4):
        for index, name in enumerate(models):
            fresh = run.context("q")
            object.__setattr__(fresh, "memo", _Forgetful())  # everything built from the turns
            task = {
                "question": "q",
                "round": turn_round,
                "agent": index,
                "turns": [turn for turn in result.turns if turn.round < turn_round],
                "notes": [{"round": r, "text": f"n{r}"} for r in range(1, turn_round)],
            }
            conversation, _ = protocol.conversation_for(task, fresh)
            sent = models[name].calls[turn_round - 1][1:]  # after the system prompt
            # (user messages in a row, after a failed turn, are sent joined by a blank line)
            assert "\n\n".join(m.text for m in sent) == "\n\n".join(m.text for m in conversation)


class _Forgetful(dict):
    """A run's memo that keeps nothing."""

    def __setitem__(self, key, value):
        pass


def test_a_branch_checkpointed_before_conversations_were_sent_still_runs(echo_numbers):
    # Before commit 660a292 a round's branches got the question and turns (an `AgentTask`) and
    # built their conversation themselves; such a branch, resumed, builds it again.
    society = society_of(echo_numbers("1", "2"), rounds=2)
    protocol = society.protocol
    context = society._run("q", {}).context("q")
    first = [
        moot.Turn(round=1, agent=a.name, role="debater", text="Answer: 1") for a in society.agents
    ]
    old = {"question": "q", "round": 2, "agent": 0, "turns": first, "notes": []}
    body = protocol._agent_turn(old, context)
    (call,) = next(body)
    expected, peers = protocol.conversation_for(old, context)
    assert call.conversation == expected and call.peers == peers == ["a1"]


@pytest.mark.parametrize("protocol", [moot.Cascade(), moot.Pipeline()], ids=lambda p: p.kind)
def test_a_moderator_given_to_a_protocol_without_rounds_is_refused_not_ignored(protocol):
    model = ScriptedChatModel(respond=lambda messages: "Answer: 4")
    society = moot.Society(agents=[moot.Agent(name=n, model=model) for n in ("a", "b")],
                           protocol=protocol)  # fmt: skip
    with pytest.raises(moot.ConfigError, match="has no rounds for a moderator"):
        society.run("q", moderator=lambda round, turns: None)
    assert model.calls == []
