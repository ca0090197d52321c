"""Agents: who speaks, in what role, with which traits, on which model."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool
from pydantic import Field, field_validator, model_validator

import moot.prompts as prompts
from moot.config import Config
from moot.tools.mcp import MCPServer

ToolChoice = Literal["auto", "first", "reason-first"]
"""How an agent's turn may call its tools (`Agent.tool_choice`)."""


def check_tool_choice(tool_choice: ToolChoice, tools: list[Any]) -> None:
    """A tool choice other than "auto" without tools is a mistake, not a no-op: say so."""
    if tool_choice != "auto" and not tools:
        raise ValueError(
            f"tool_choice {tool_choice!r} needs tools: give the agent tools (calculator, "
            "MODULE:NAME or mcp:SERVER; --tools on the command line) or leave tool_choice at "
            "'auto'"
        )


class Agent(Config):
    """One participant of a society.

    Agents that name the same model spec (or hold the same model object) share one loaded model.
    """

    name: str = Field(min_length=1)
    """Unique within a society; shown in turns and in the CLI."""
    role: str = "debater"
    """A role with a prompt of its own (debater, critic, generator, reviser, aggregator, judge,
    proposer, reflector, router: `moot/prompts/system/`) or any text, which the default system
    prompt names."""
    kind: Literal["text", "program"] = "text"
    """How the agent answers: "text", in words; "program", with a short Python program that
    moot runs in its sandbox (`moot.tools.sandbox`), whose printed output is the answer. A
    program that fails or breaks the sandbox's limits fails the agent's turn. Asked for in a
    Debate (moot's prompts), a Cascade's tiers and a Router's experts; refused elsewhere."""
    trait: str | None = None
    """A preset trait ("easy-going", "overconfident") or a free-text persona."""
    model: BaseChatModel | str = "local"
    """A spec for `moot.load_model` ("local", "llama:PATH", "openai:MODEL") or a chat model."""
    description: str | None = None
    """What the agent is good at; routers match questions against it."""
    temperature: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)
    """Most tokens per reply (None: the model's default)."""
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    logprobs: bool = False
    """Ask the model for token logprobs (for confidence); llama models must be loaded with
    logprobs=True, OpenAI-compatible servers must support them."""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds one model call may take; past it the turn fails with a timeout and the run goes
    on (llama.cpp stops generating; an OpenAI request gets it as its own timeout)."""
    retries: int = Field(default=2, ge=0, le=10)
    """How often a call that failed for a passing reason (rate limit, server error, dropped
    connection, a server's timeout) is repeated, with exponential backoff and jitter."""
    retry_delay: float = Field(default=0.5, ge=0)
    """The first backoff in seconds; each further retry waits up to twice as long."""
    tools: list[BaseTool | MCPServer] = Field(default_factory=list)
    """Tools the agent may call in a turn: LangChain tools, plain functions (made tools by
    `langchain_core.tools.tool`), names of built-in tools ("calculator"), "module:attribute"
    paths, or MCP servers whose tools it may call ("mcp:python server.py", "mcp:URL",
    {"mcp": {...}}: `moot.tools.mcp`). The model must support tool calls (`bind_tools`)."""
    max_tool_calls: int = Field(default=4, ge=0, le=50)
    """Most tool calls in one turn; then the model is asked to answer with what it has."""
    tool_choice: ToolChoice = "auto"
    """"auto": the model decides whether to call; "first": its first step in a turn must be a
    call (forced by the backend: `tool_choice="required"`, a grammar on llama.cpp), then it
    answers freely with the result. Small local models call tools reliably only so.
    "reason-first": as "first", but the step may reason in text before its call (on llama.cpp
    the grammar lets free text precede the call; OpenAI decides itself), so a multi-step problem
    is worked out before it is computed."""

    @field_validator("role")
    @classmethod
    def _role_is_a_word(cls, role: str) -> str:
        if not role.strip():
            raise ValueError("role must not be empty")
        return role.strip()

    @field_validator("tools", mode="before")
    @classmethod
    def _as_tools(cls, tools: Any) -> list[BaseTool | MCPServer]:
        from moot.tools import as_tool
        from moot.tools.mcp import server_of

        if not isinstance(tools, (list, tuple)):
            raise ValueError("tools must be a list of tools, functions or tool names")
        made = [server_of(item) or as_tool(item) for item in tools]
        names = [entry.name if isinstance(entry, BaseTool) else entry.label for entry in made]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"tool names must differ; given twice: {', '.join(twice)}")
        return made

    @model_validator(mode="after")
    def _tool_choice_has_tools(self) -> Agent:
        check_tool_choice(self.tool_choice, self.tools)
        return self

    def chat_model(self) -> BaseChatModel:
        """The agent's model, loaded on first use (and shared with agents naming the same spec)."""
        if isinstance(self.model, str):
            from moot.models import load_model

            return load_model(self.model)
        return self.model

    def sampling(self) -> dict[str, Any]:
        """Sampling settings to pass with each call; unset ones are left to the model."""
        settings = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
            "logprobs": self.logprobs or None,
        }
        return {key: value for key, value in settings.items() if value is not None}

    def system_prompt(self) -> str:
        """The role's system prompt, followed by the trait if any."""
        role = "program" if self.kind == "program" else self.role
        role_prompt = f"system/{role}" if prompts.exists(f"system/{role}") else None
        text = (
            prompts.render(role_prompt, name=self.name)
            if role_prompt
            else prompts.render("system/default", name=self.name, role=self.role)
        )
        if self.trait:
            trait_prompt = f"traits/{self.trait}"
            text += "\n" + (
                prompts.load(trait_prompt) if prompts.exists(trait_prompt) else self.trait
            )
        return text
