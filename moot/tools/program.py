"""Program agents (`Agent(kind="program")`): the reply's Python program is run in the sandbox
and its printed output becomes the agent's answer (program-of-thought, PAL: Gao et al. 2023;
Chen et al. 2023). The reply keeps the program, and the output and an answer line are added,
so peers in a debate see both how the answer was computed and what came out."""

from __future__ import annotations

import re

from langchain_core.messages import AIMessage, BaseMessage

from moot.agents import Agent
from moot.errors import ProgramError
from moot.tools.sandbox import SandboxLimits, run_python

_FENCED = re.compile(r"```[ \t]*(\w*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
OUTPUT_SHOWN = 1_000
"""Most characters of a program's output kept in the reply (the answer is its last line)."""


def program_of(text: str) -> str | None:
    """The program in a reply: its first ```python block, else its first fenced block whose
    language is unnamed; None when there is none."""
    blocks = [(language.lower(), body) for language, body in _FENCED.findall(text)]
    for wanted in ("python", "py", ""):
        for language, body in blocks:
            if language == wanted and body.strip():
                return body
    return None


def run_program(
    agent: Agent, reply: BaseMessage, limits: SandboxLimits | None = None
) -> BaseMessage:
    """`reply` with its program's output and answer line (text agents' replies unchanged).

    Raises ProgramError, carrying the reply, when the reply has no program or the program
    fails: the turn fails with the model's text and cost kept.
    """
    if agent.kind != "program":
        return reply
    program = program_of(reply.text)
    if program is None:
        raise ProgramError("the reply has no program (a ```python block)", reply, lasting=True)
    run = run_python(program, limits)
    if run.failed:
        raise ProgramError(f"the program failed: {run.error}", reply, lasting=not run.stopped)
    lines = [line.strip() for line in run.output.splitlines() if line.strip()]
    if not lines:
        raise ProgramError("the program printed nothing", reply, lasting=True)
    output = run.output.strip()
    if len(output) > OUTPUT_SHOWN:
        output = "..." + output[-OUTPUT_SHOWN:]
    text = f"{reply.text.rstrip()}\n\nOutput:\n```\n{output}\n```\nAnswer: {lines[-1]}"
    return AIMessage(
        content=text,
        usage_metadata=getattr(reply, "usage_metadata", None),
        response_metadata=reply.response_metadata,
        id=reply.id,
    )
