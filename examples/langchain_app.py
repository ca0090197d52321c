"""A LangGraph agent that calls a debate as a tool.

    python examples/langchain_app.py "What is 17+25?"                    # embedded model
    python examples/langchain_app.py "What is 17+25?" --model openai:gpt-4o-mini

Local models (the embedded 135M model cannot emit tool calls at all; small GGUFs do so
unreliably) get an agent that decides by rule (questions with numbers go to the debate), and
the model phrases the reply from the tool's answer. An API model (openai:...) gets LangGraph's
prebuilt ReAct agent instead.
"""

from __future__ import annotations

import argparse
import re
import warnings
from typing import Annotated, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode

import moot


class AgentState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def rule_agent(model: BaseChatModel, tool: BaseTool):
    """plan (call the tool for numeric questions) -> tools -> respond."""

    def plan(state: AgentState) -> AgentState:
        question = state["messages"][-1].text
        if re.search(r"\d", question):
            call = {"name": tool.name, "args": {"question": question}, "id": "debate-1"}
            return {"messages": [AIMessage(content="", tool_calls=[call])]}
        return {"messages": [model.invoke(state["messages"])]}

    def respond(state: AgentState) -> AgentState:
        question, said = state["messages"][0].text, state["messages"][-1].text
        prompt = f"Question: {question}\nA panel of agents answered: {said}\nReply in one sentence."
        return {"messages": [model.invoke([SystemMessage("Be brief."), HumanMessage(prompt)])]}

    graph = StateGraph(AgentState)
    graph.add_node("plan", plan)
    graph.add_node("tools", ToolNode([tool]))
    graph.add_node("respond", respond)
    graph.add_edge(START, "plan")
    graph.add_conditional_edges(
        "plan", lambda state: "tools" if state["messages"][-1].tool_calls else END
    )
    graph.add_edge("tools", "respond")
    graph.add_edge("respond", END)
    return graph.compile()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("question", nargs="?", default="What is 17+25?")
    parser.add_argument("--model", default="local")
    args = parser.parse_args()

    model = moot.load_model(args.model)
    debaters = [moot.Agent(name=f"agent{i}", model=model, max_tokens=128) for i in (1, 2, 3)]
    society = moot.Society(agents=debaters, protocol=moot.Debate(rounds=2))
    tool = society.as_tool("ask_debate", "Three agents debate a question and return the answer.")

    if not args.model.startswith("openai:"):
        agent = rule_agent(model, tool)
    else:
        from langgraph.prebuilt import create_react_agent

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            agent = create_react_agent(model, [tool])
    state = agent.invoke({"messages": [HumanMessage(args.question)]})
    for message in state["messages"]:
        print(f"[{message.type}] {message.text or message.tool_calls}")


if __name__ == "__main__":
    main()
