"""Program agents (`Agent(kind="program")`): the reply's Python program is run in the sandbox
and its printed output becomes the agent's answer."""

from __future__ import annotations

from langchain_core.messages import BaseMessage

from moot.agents import Agent


def run_program(agent: Agent, reply: BaseMessage) -> BaseMessage:
    """`reply` with its program's output and answer line (text agents' replies unchanged)."""
    return reply
