"""Orchestration cost of a moot debate, on scripted models (no real model time).

(a) overhead per agent turn: an instant model, 8 agents x 5 rounds, against a bare hand-written
    LangGraph fan-out of the same shape calling the same model, measured alternately in one run,
    in wall time and in CPU time (all threads; steadier on a shared machine); each ratio is the
    median of each repeat's ratio to the bare run beside it. A round protocol
    whose agents are shown the question alone separates moot's runtime from the debate's
    prompt building (each agent's whole conversation, rebuilt every round).
(b) parallel efficiency: a model that sleeps 200 ms per call, 8 agents x 3 rounds, against the
    ideal of 3 x 200 ms.

    python benchmarks/orchestration.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import operator
import statistics
import time
from typing import Annotated, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

import moot
from moot.graphs._rounds import AgentTask, RoundProtocol
from moot.graphs.types import RunContext
from moot.testing import ScriptedChatModel

REPLY = "Let me think.\nAnswer: 42"


class InstantModel(BaseChatModel):
    """Replies at once with a fixed message and fixed usage, whatever the prompt's length, so
    that both graphs pay exactly the same model cost and only orchestration differs."""

    @property
    def _llm_type(self) -> str:
        return "instant"

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[no-untyped-def]
        usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
        message = AIMessage(content=REPLY, usage_metadata=usage)  # type: ignore[arg-type]
        return ChatResult(generations=[ChatGeneration(message=message)])


def debate_society(agents: int, rounds: int, delay: float = 0.0) -> moot.Society:
    model: BaseChatModel = (
        ScriptedChatModel(respond=lambda messages: REPLY, delay=delay) if delay else InstantModel()
    )
    members = [moot.Agent(name=f"a{i}", model=model) for i in range(agents)]
    return moot.Society(agents=members, protocol=moot.Debate(rounds=rounds))


class QuestionOnly(RoundProtocol):
    """Rounds of the same shape as a debate, each agent shown the question alone."""

    def conversation_for(
        self, task: AgentTask, context: RunContext
    ) -> tuple[list[BaseMessage], list[str]]:
        return [HumanMessage(self.first_prompt(task["question"], context))], []


class BareState(TypedDict):
    round: int
    replies: Annotated[list[str], operator.add]


def bare_graph(agents: int, rounds: int):
    """The same shape by hand: per round, fan out one model call per agent, then join."""
    model = InstantModel()

    def fan_out(state: BareState):
        if state["round"] > rounds:
            return END
        return [Send("agent", {"round": state["round"], "agent": i}) for i in range(agents)]

    def agent(task: dict):
        reply = model.invoke([HumanMessage(content="What is 6*7?")])
        return {"replies": [reply.text]}

    def join(state: BareState):
        return {"round": state["round"] + 1}

    graph = StateGraph(BareState)
    graph.add_node("agent", agent)
    graph.add_node("join", join)
    graph.add_conditional_edges(START, fan_out, ["agent", END])
    graph.add_edge("agent", "join")
    graph.add_conditional_edges("join", fan_out, ["agent", END])
    return graph.compile()


def overhead(repeats: int) -> None:
    agents, rounds = 8, 5
    debate = debate_society(agents, rounds)
    plain = debate.model_copy(update={"protocol": QuestionOnly(rounds=rounds)})
    bare = bare_graph(agents, rounds)
    turns = agents * rounds

    def run_bare() -> None:
        out = bare.invoke(
            {"round": 1, "replies": []}, {"recursion_limit": 100, "max_concurrency": 8}
        )
        assert len(out["replies"]) == turns

    def run(society: moot.Society) -> None:
        assert len(society.run("What is 6*7?").turns) == turns

    contenders = {
        "moot debate": lambda: run(debate),
        "moot rounds, question alone": lambda: run(plain),
        "bare LangGraph fan-out": run_bare,
    }
    wall: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    for go in contenders.values():
        go()  # warm up
    for _ in range(repeats):
        for name, go in contenders.items():
            started, used = time.perf_counter(), time.process_time()
            go()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - used)
    per_turn = {
        name: (
            statistics.median(wall[name]) / turns * 1e3,
            statistics.median(cpu[name]) / turns * 1e3,
        )
        for name in contenders
    }
    bare = "bare LangGraph fan-out"

    def paired(times: dict[str, list[float]], name: str) -> float:
        # Each repeat's ratio to the bare run beside it: the machine's drifts cancel.
        return statistics.median(
            mine / theirs for mine, theirs in zip(times[name], times[bare], strict=True)
        )

    print(
        f"| (a) per agent turn, 8 agents x 5 rounds, instant model, median of {repeats} "
        "| wall | CPU | wall / bare | CPU / bare |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name, (wall_ms, cpu_ms) in per_turn.items():
        print(
            f"| {name} | {wall_ms:.3f} ms | {cpu_ms:.3f} ms | {paired(wall, name):.2f} "
            f"| {paired(cpu, name):.2f} |"
        )
    print("(target: moot debate / bare <= 1.1)")


def parallel(repeats: int) -> None:
    agents, rounds, delay = 8, 3, 0.2
    society = debate_society(agents, rounds, delay=delay)
    walls = []
    for _ in range(max(3, repeats // 10)):
        started = time.perf_counter()
        result = society.run("What is 6*7?")
        walls.append(time.perf_counter() - started)
        assert result.usage.calls == agents * rounds
    ideal = rounds * delay
    wall = statistics.median(walls)
    print()
    print("| (b) parallel efficiency, 8 agents x 3 rounds, 200 ms per call | value |")
    print("| --- | --- |")
    print(f"| wall time, median of {len(walls)} | {wall:.3f} s |")
    print(f"| ideal (3 x 200 ms) | {ideal:.3f} s |")
    print(f"| ratio (target <= 1.15) | {wall / ideal:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    overhead(args.repeats)
    parallel(args.repeats)


if __name__ == "__main__":
    main()
