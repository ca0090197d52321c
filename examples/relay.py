"""A protocol of your own: agents answer in turn, each shown the reply before its own.

python examples/relay.py "What is 12+30?" [MODEL_SPEC]
"""

from __future__ import annotations

import sys
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph

import moot
from moot.graphs.base import Call, Calls, RunContext, SocietyState, agent_node


class Relay(moot.BaseProtocol):
    """Agent 1 answers; each next agent is shown the previous reply; the last one's answer wins."""

    handover: str = "The agent before you replied:"
    """What introduces the previous reply."""

    def recursion_limit(self, agents: list[moot.Agent]) -> int:
        return 5  # one node

    def build(self, *, asynchronous: bool = False) -> StateGraph[Any, RunContext, Any, Any]:
        def relay(state: SocietyState, context: RunContext) -> Calls:
            turns: list[moot.Turn] = []
            for index in range(len(context.agents)):
                prompt = self.first_prompt(state["question"], context)
                if turns:
                    prompt += f"\n\n{self.handover}\n{turns[-1].text}"
                peers = [turns[-1].agent] if turns else []
                call = Call(context.speaker(index), [HumanMessage(prompt)], index + 1, peers)
                turns += yield [call]  # the model call runs here; its turn comes back
            return {"turns": turns, "answer": turns[-1].answer}

        graph = StateGraph(SocietyState, context_schema=RunContext)
        graph.add_node("relay", agent_node(relay, asynchronous=asynchronous))
        graph.add_edge(START, "relay")
        graph.add_edge("relay", END)
        return graph


if __name__ == "__main__":
    question = sys.argv[1] if len(sys.argv) > 1 else "What is 12+30?"
    model = moot.load_model(sys.argv[2] if len(sys.argv) > 2 else "local")
    agents = [moot.Agent(name=f"runner{i}", model=model, max_tokens=96) for i in range(3)]
    result = moot.Society(agents=agents, protocol=Relay()).run(question)
    for turn in result.turns:
        print(f"{turn.agent} (round {turn.round}): answer {turn.answer}")
    print("answer:", result.answer, "| calls:", result.usage.calls)
