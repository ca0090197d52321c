"""A society inside LangChain and LangGraph apps, on scripted models."""

from __future__ import annotations

import re
import warnings

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_tests.unit_tests import ChatModelUnitTests

import moot
from moot.integrations.langchain import SocietyChatModel
from moot.testing import ScriptedChatModel


def adder(messages) -> str:
    """Adds the two numbers of the question (the first user message)."""
    question = next(m for m in messages if isinstance(m, HumanMessage)).text
    a, b = (int(n) for n in re.findall(r"\d+", question)[:2])
    return f"Adding.\nAnswer: {a + b}"


def adding_society(rounds: int = 2) -> moot.Society:
    agents = [moot.Agent(name=f"a{i}", model=ScriptedChatModel(respond=adder)) for i in range(3)]
    return moot.Society(agents=agents, protocol=moot.Debate(rounds=rounds))


def test_society_inside_an_lcel_chain():
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Be brief."), ("human", "What is {a} plus {b}?")]
    )
    chain = prompt | adding_society().as_runnable() | StrOutputParser()
    assert chain.invoke({"a": 2, "b": 40}) == "42"
    assert chain.batch([{"a": 1, "b": 1}, {"a": 10, "b": 5}]) == ["2", "15"]


async def test_runnable_async_and_full_result():
    runnable = adding_society().as_runnable(output="result")
    result = await runnable.ainvoke("What is 3 plus 4?")
    assert isinstance(result, moot.Result) and result.answer == "7" and result.usage.calls == 6
    assert await adding_society().as_runnable().ainvoke({"question": "What is 1 plus 1?"}) == "2"
    with pytest.raises(moot.ConfigError, match="takes {'question': ...}"):
        adding_society().as_runnable().invoke({"q": "x"})


async def test_astream_events_carry_agent_tokens():
    runnable = adding_society(rounds=1).as_runnable()
    streamed = []
    async for event in runnable.astream_events("What is 5 plus 6?", version="v2"):
        if event["event"] == "on_chat_model_stream":
            streamed.append((event["metadata"]["moot_agent"], event["data"]["chunk"].text))
        if event["event"] == "on_chain_end" and event["name"] == "moot_society":
            final = event["data"]["output"]
    assert {agent for agent, _ in streamed} == {"a0", "a1", "a2"}
    assert "".join(text for agent, text in streamed if agent == "a1") == "Adding.\nAnswer: 11"
    assert final == "11"


def test_chat_model_replies_with_the_answer_and_summed_usage():
    society = adding_society()
    model = society.as_chat_model(name="adders")
    reply = model.invoke([SystemMessage("ignored"), HumanMessage("What is 20 plus 22?")])
    assert reply.text == "42"
    record = reply.response_metadata["moot"]
    assert record["rounds"] == 2 and len(record["turns"]) == 6
    assert reply.usage_metadata["total_tokens"] == record["usage"]["total_tokens"] > 0
    assert reply.usage_metadata["input_tokens"] == record["usage"]["input_tokens"]


def test_chat_model_applies_temperature_to_every_agent():
    seen = []

    class Recording(ScriptedChatModel):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            seen.append(kwargs.get("temperature"))
            return super()._generate(messages, stop, run_manager, **kwargs)

    agents = [moot.Agent(name=f"a{i}", model=Recording(respond=adder)) for i in range(2)]
    society = moot.Society(agents=agents, protocol=moot.Debate(rounds=1))
    SocietyChatModel(society=society, temperature=0.0).invoke("What is 1 plus 2?")
    assert seen == [0.0, 0.0]
    assert [agent.temperature for agent in society.agents] == [None, None]


class TestSocietyChatModelStandard(ChatModelUnitTests):
    """langchain-tests' standard unit tests for chat models (pinned in the dev extra)."""

    @property
    def chat_model_class(self) -> type[SocietyChatModel]:
        return SocietyChatModel

    @property
    def chat_model_params(self) -> dict:
        return {"society": adding_society(rounds=1)}


class ToolCaller(ScriptedChatModel):
    """Calls the tool once with the user's question, then repeats what the tool said."""

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        from langchain_core.outputs import ChatGeneration, ChatResult

        last = messages[-1]
        if isinstance(last, ToolMessage):
            reply = AIMessage(content=f"The society says {last.text}.")
        else:
            call = {"name": "ask_society", "args": {"question": last.text}, "id": "call-1"}
            reply = AIMessage(content="", tool_calls=[call])
        return ChatResult(generations=[ChatGeneration(message=reply)])


def test_a_langgraph_agent_calls_a_debate_as_a_tool():
    from langgraph.prebuilt import create_react_agent

    tool = adding_society().as_tool("ask_society", "Ask a debating society a question.")
    assert tool.name == "ask_society" and "question" in tool.args
    with warnings.catch_warnings():  # moved to langchain.agents, which moot does not depend on
        warnings.simplefilter("ignore")
        agent = create_react_agent(ToolCaller(respond=lambda m: ""), [tool])
    state = agent.invoke({"messages": [HumanMessage("What is 19 plus 23?")]})
    assert state["messages"][-1].text == "The society says 42."
    assert any(isinstance(m, ToolMessage) and m.text == "42" for m in state["messages"])


def test_two_societies_as_chat_models_never_share_a_cache_key(tmp_path):
    """A society model at temperature 0 is cached: its key tells its agents, protocol and
    aggregator apart, so another society asked the same never gets the first one's reply."""
    model = ScriptedChatModel(respond=lambda messages, info: f"{info.agent} says\nAnswer: 7")

    def society(rounds: int) -> moot.Society:
        agents = [moot.Agent(name=f"a{i}", model=model) for i in range(2)]
        return moot.Society(agents=agents, protocol=moot.Debate(rounds=rounds))

    one, two = (society(r).as_chat_model() for r in (1, 2))
    outer = [moot.Agent(name="s", model=m, temperature=0) for m in (one, two)]
    cache = tmp_path / "calls.sqlite"
    first = moot.Society(agents=outer[:1], protocol=moot.Debate(rounds=1)).run("3+4?", cache=cache)
    second = moot.Society(agents=outer[1:], protocol=moot.Debate(rounds=1)).run("3+4?", cache=cache)
    assert first.usage.cached_calls == 0 and second.usage.cached_calls == 0
    again = moot.Society(agents=outer[1:], protocol=moot.Debate(rounds=1)).run("3+4?", cache=cache)
    assert again.usage.cached_calls == 1
