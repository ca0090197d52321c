"""Carrying out a call: the run's `Caller`.

A call is made with its agent's retries (passing failures only, with backoff), its time limit
and the run's call cache, and always comes back as a `Turn`: the reply's text, answer, usage
and cost, or the error that ended it. A call is written once, as generators of steps (the
attempts and the waits between them; within an attempt, model calls, tools, the program and
the answer line) that `drive` carries out in sync runs and `adrive` in async ones: only how one
step is carried out differs (a thread or a task, a sleep or an await).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import random
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphBubbleUp

import moot.prompts as prompts
from moot.agents import Agent
from moot.aggregate.confidence import logprob_confidence, stated_confidence
from moot.cache import CallCache
from moot.errors import CallCancelledError, CallTimeoutError, ProgramError
from moot.graphs._tool_loop import Ask, summed_usage, tool_turn
from moot.graphs.helpers import valid_text
from moot.graphs.types import Call, adrive, drive
from moot.models import PROFILES, ModelProfile, ModelProfiles
from moot.result import FusionStats, ToolCall, Turn, Usage
from moot.tools.program import run_program
from moot.tools.sandbox import sandbox_identity

Reply = tuple[BaseMessage, int]
"""What an attempt gives: the reply, and how many model calls it took."""


class CallRunner:
    """Makes the calls of one run (its `Caller`), sync or async."""

    def __init__(
        self,
        cache: CallCache | None = None,
        slots: threading.Semaphore | None = None,
        profiles: ModelProfiles = PROFILES,
    ) -> None:
        self.cache = cache
        """Where identical calls are answered from (`run(..., cache=)`), if anywhere."""
        self.slots = slots
        """Bounds a sync run's model calls in flight (its `max_concurrency`): taken before a
        call's clock starts, given back when the call ends (not while a retry waits).
        LangGraph's thread pool cannot be the bound: its stream waiter takes one of its
        threads."""
        self.profiles = profiles
        """Where each model's profile is read, once a run."""
        self._known: dict[int, tuple[object, Any]] = {}
        """By id: a model and its profile, an agent and its system prompt."""

    def call(self, calls: list[Call]) -> list[Turn]:
        return [drive(self._turn_steps(call), _run) for call in calls]

    async def acall(self, calls: list[Call]) -> list[Turn]:
        if len(calls) == 1:  # a task per call is for batches
            return [await adrive(self._turn_steps(calls[0]), _arun)]
        made = asyncio.gather(*(adrive(self._turn_steps(call), _arun) for call in calls))
        return list(await made)

    def profile(self, model: BaseChatModel) -> ModelProfile:
        """The model's profile, read once a run."""
        return self._once(model, self.profiles.of)  # type: ignore[no-any-return]

    def _once(self, key: Any, make: Any) -> Any:
        known = self._known.get(id(key))
        if known is None or known[0] is not key:  # (the object is held: its id stays its own)
            known = self._known[id(key)] = (key, make(key))
        return known[1]

    def _turn_steps(self, call: Call) -> Generator[Any, Any, Turn]:
        """A call with its retries: its attempts and the waits between them; gives the turn."""
        agent, profile = call.speaker.agent, self.profile(call.speaker.model)
        request = self._request(call, profile)
        keys = self._keys(call, request)
        stored = self._stored_turn(call, profile, keys)
        if stored is not None:
            return stored
        for attempt in range(agent.retries + 1):
            tools: list[ToolCall] = []
            steps = self._attempt_steps(call, request, profile, tools)
            try:
                if agent.timeout is None:  # its steps are carried out here, holding a slot
                    with self.slots or _NO_SLOT:
                        reply, calls = yield from steps
                else:
                    reply, calls = yield _Timed(steps, agent.name, agent.timeout, self.slots)
            except (GraphBubbleUp, CallCancelledError):
                raise  # a cancelled call is unfinished work: resume makes it again
            except Exception as error:  # noqa: BLE001 - any model failure is recorded, not raised
                if attempt < agent.retries and is_transient(error):
                    yield _Wait(_backoff(agent.retry_delay, attempt))
                    continue
                if isinstance(error, ProgramError) and error.lasting and keys:
                    self._keep_failed_program(keys[0], error)
                return _failed_turn(call, profile, error, attempt, tools)
            turn = _turn(call, profile, reply, attempt, calls, tools)
            if self.cache is not None and keys and not turn.failed:  # (a failed one: above)
                self.cache.put(keys[0], reply)
            return turn
        raise AssertionError("unreachable: the last attempt returns")

    def _stored_turn(self, call: Call, profile: ModelProfile, keys: list[str]) -> Turn | None:
        """The call's turn from the cache: its stored reply, or for a program agent the reply
        whose program failed the same way wherever it runs (stored under a key of its own,
        with the sandbox's identity, so that nothing else and no other sandbox reads it)."""
        if self.cache is None or not keys:
            return None
        stored = self.cache.find(keys)
        if stored is not None:
            return _turn(call, profile, stored, cached=True)
        if call.speaker.agent.kind != "program":
            return None
        failed = self.cache.get(_failed_program_key(keys[0]))
        why = None if failed is None else failed.response_metadata.get(_PROGRAM_FAILED)
        if failed is None or not isinstance(why, str):
            return None
        return _failed_turn(call, profile, ProgramError(why, failed), 0, cached=True)

    def _keep_failed_program(self, key: str, error: ProgramError) -> None:
        """Store a reply whose program fails the same way wherever it runs, with why, so that
        a replay fails it again without calling the model."""
        if self.cache is None or not isinstance(error.reply, BaseMessage):
            return
        metadata = {**error.reply.response_metadata, _PROGRAM_FAILED: str(error)}
        reply = error.reply.model_copy(update={"response_metadata": metadata})
        self.cache.put(_failed_program_key(key), reply)

    def _attempt_steps(
        self, call: Call, request: Ask, profile: ModelProfile, tools: list[ToolCall]
    ) -> Generator[Any, Any, Reply]:
        """One attempt: the reply (after the agent's tools), its program run, and the answer
        line where the reply states none that reads."""
        who = call.speaker
        if who.agent.tools:
            reply, calls = yield from tool_turn(request, who.agent, who.answer_format, tools)
        else:
            reply, calls = (yield request), 1
        if who.agent.kind == "program":  # (run_program passes a text agent's reply as it is)
            reply = yield _RunProgram(who.agent, reply)
        follow = _answer_request(call, request, profile, reply)
        if follow is None:
            return reply, calls
        try:
            line = yield follow
        except (GraphBubbleUp, CallCancelledError):
            raise
        except Exception:  # noqa: BLE001 - the reply stands without its answer line
            line = None
        return _with_answer_line(reply, line), calls + 1

    def _request(self, call: Call, profile: ModelProfile) -> Ask:
        """The model call: the agent's system prompt first, the run config (tagged so that
        streams split by agent and traces name each turn) and the call's options: sampling,
        the time limit for models that take one, the answer schema for models that hold a
        reply to one."""
        agent = call.speaker.agent
        system = self._once(agent, _system_prompt) if call.system_prompt else []
        config: RunnableConfig = {
            "run_name": f"{agent.name} round {call.round}",
            "tags": [f"moot:agent:{agent.name}"],
            "metadata": {
                "moot_agent": agent.name,
                "moot_role": agent.role,
                "moot_round": call.round,
            },
        }
        options = agent.sampling()
        if agent.timeout is not None and profile.takes_timeout:
            options["timeout"] = agent.timeout
        if not agent.tools and profile.takes_answer_schema:
            schema = call.speaker.answer_format.json_schema()
            if schema is not None:  # a grammar or a response format holds the reply to it
                options["answer_schema"] = schema
        return Ask(call.speaker.model, [*system, *_join_user(call.conversation)], config, options)

    def _keys(self, call: Call, request: Ask) -> list[str]:
        """The call's cache keys (`CallCache.keys`); none without a cache, or for an agent
        with tools (a stored reply would lose its tool calls)."""
        if self.cache is None or call.speaker.agent.tools:
            return []
        # How long to wait does not change the reply.
        options = {name: value for name, value in request.options.items() if name != "timeout"}
        return self.cache.keys(call.speaker.model, request.messages, options)


def _run(step: Any) -> Any:
    return step.run()


async def _arun(step: Any) -> Any:
    return await step.arun()


_NO_SLOT = contextlib.nullcontext()


@dataclass(slots=True)
class _Timed:
    """A step: one attempt at a call (its own steps) under the agent's time limit."""

    steps: Generator[Any, Any, Reply]
    agent: str
    timeout: float
    slots: threading.Semaphore | None

    def run(self) -> Reply:
        """The attempt runs in a daemon thread that is left behind (and told to stop, where the
        model can be) when the limit passes. Its slot is taken before the clock starts and
        given back when it really ends: attempts left running still count against
        `max_concurrency`."""
        if self.slots is not None:
            self.slots.acquire()
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                outcome["reply"] = drive(self.steps, _run)
            except BaseException as error:  # noqa: BLE001 - handed to the caller
                outcome["error"] = error
            finally:
                if self.slots is not None:
                    self.slots.release()
                done.set()

        # The copied context keeps LangGraph's callbacks (token streaming) in the thread.
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(work,), daemon=True).start()
        if not done.wait(self.timeout):
            raise CallTimeoutError(_timeout_message(self.agent, self.timeout))
        if "error" in outcome:
            raise outcome["error"]
        return outcome["reply"]  # type: ignore[no-any-return]

    async def arun(self) -> Reply:
        try:
            return await asyncio.wait_for(adrive(self.steps, _arun), self.timeout)
        except TimeoutError:
            raise CallTimeoutError(_timeout_message(self.agent, self.timeout)) from None


@dataclass(slots=True)
class _RunProgram:
    """A step: run the program in a program agent's reply, in the sandbox."""

    agent: Agent
    reply: BaseMessage

    def run(self) -> BaseMessage:
        return run_program(self.agent, self.reply)

    async def arun(self) -> BaseMessage:
        # The sandbox blocks: run it off the event loop.
        return await asyncio.to_thread(run_program, self.agent, self.reply)


@dataclass(slots=True)
class _Wait:
    """A step: wait before the next attempt."""

    seconds: float

    def run(self) -> None:
        time.sleep(self.seconds)

    async def arun(self) -> None:
        await asyncio.sleep(self.seconds)


def _system_prompt(agent: Agent) -> list[BaseMessage]:
    return [SystemMessage(content=agent.system_prompt())]


def _answer_request(
    call: Call, request: Ask, profile: ModelProfile, reply: BaseMessage
) -> Ask | None:
    """The follow-up call that asks a model held to a grammar for its answer line, when its
    reply states none that reads in the run's format (small models wander off the format);
    None when the reply reads, or the model or format has no grammar for it."""
    fmt = call.speaker.answer_format
    if call.speaker.agent.tools or not profile.takes_grammar:
        return None
    try:
        if fmt.readable(fmt.extractor()(valid_text(reply.text))):
            return None
        grammar = fmt.answer_grammar()
    except Exception:  # noqa: BLE001 - an extractor that fails is the turn's to report
        return None
    if grammar is None:
        return None
    reask = HumanMessage(prompts.load("formats/reask"))
    follow = [*request.messages, AIMessage(content=reply.text), reask]
    # Greedy: it states what the reply concluded, not a fresh guess; the grammar bounds it.
    options = {**request.options, "grammar": grammar, "max_tokens": 96, "temperature": 0.0}
    return Ask(request.model, follow, request.config, options)


def _with_answer_line(reply: BaseMessage, line: BaseMessage | None) -> AIMessage:
    """The reply with the constrained answer line appended (None: that call failed, the reply
    stands alone): one turn, two calls."""
    asked = [reply, line] if line is not None else [reply]
    return AIMessage(
        content=f"{reply.text.rstrip()}\n{line.text.strip()}" if line else reply.text,
        usage_metadata=summed_usage(asked),  # type: ignore[arg-type]
        response_metadata=reply.response_metadata,
    )


def _timeout_message(agent: str, timeout: float) -> str:
    return f"{agent}'s model did not answer within {timeout:g} s (the agent's timeout)"


_TRANSIENT_NAMES = {
    "APIConnectionError",  # openai: connection dropped or refused, and its request timeout
    "RateLimitError",
    "InternalServerError",
    "TimeoutException",  # httpx
    "NetworkError",
    "RemoteProtocolError",
}


def is_transient(error: BaseException) -> bool:
    """Whether a failed call may succeed when repeated: a rate limit, a server error, a dropped
    connection, a server-side timeout. moot's own time limit is final."""
    if isinstance(error, CallTimeoutError):
        return False
    if isinstance(error, (TimeoutError, ConnectionError)):
        return True
    status = getattr(error, "status_code", None)
    if status is None:
        status = getattr(getattr(error, "response", None), "status_code", None)
    if isinstance(status, int):
        return status in (408, 409, 429) or 500 <= status < 600
    return any(kind.__name__ in _TRANSIENT_NAMES for kind in type(error).__mro__)


def _backoff(first: float, attempt: int) -> float:
    """Exponential backoff with full jitter: up to first * 2**attempt seconds, at most 30."""
    return random.uniform(0, min(30.0, first * 2**attempt))


def _join_user(messages: list[BaseMessage]) -> list[BaseMessage]:
    """Join consecutive user messages, which some chat templates reject.

    They arise when an agent's own turn failed and its conversation has no reply in between.
    """
    joined: list[BaseMessage] = []
    for message in messages:
        if joined and isinstance(message, HumanMessage) and isinstance(joined[-1], HumanMessage):
            joined[-1] = HumanMessage(content=f"{joined[-1].text}\n\n{message.text}")
        else:
            joined.append(message)
    return joined


# -- turns ------------------------------------------------------------------------------------


_PROGRAM_FAILED = "moot_program_failed"
"""In a cached reply's metadata: why its program failed (a turn that fails again on replay)."""


def _failed_program_key(key: str) -> str:
    """Where a call's failed program is stored: apart from replies (a text agent or an older
    moot reading the call's own key finds nothing) and per sandbox identity."""
    return hashlib.sha256(f"{key} failed its program in {sandbox_identity()}".encode()).hexdigest()


def _recorded(call: Call) -> dict[str, Any]:
    agent = call.speaker.agent
    return {"round": call.round, "agent": agent.name, "role": agent.role, "peers": call.peers}


def _usage(
    reply: BaseMessage, profile: ModelProfile, retries: int, calls: int, cached: bool
) -> Usage:
    """What a reply cost: its tokens, `calls` model calls after `retries` failed ones, and
    its price; a cache hit made no call and costs nothing."""
    metadata: dict[str, Any] = getattr(reply, "usage_metadata", None) or {}
    tokens_in = int(metadata.get("input_tokens", 0))
    tokens_out = int(metadata.get("output_tokens", 0))
    total = int(metadata.get("total_tokens", tokens_in + tokens_out))
    cost = profile.cost(tokens_in, tokens_out)
    if cached:
        return Usage(
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            total_tokens=total,
            cached_calls=1,
            cost=None if cost is None else 0.0,
        )
    return Usage(
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        total_tokens=total,
        calls=calls + retries,
        retries=retries,
        cost=cost,
    )


def _failed_turn(
    call: Call,
    profile: ModelProfile,
    error: BaseException,
    retries: int,
    tools: list[ToolCall] | None = None,
    cached: bool = False,
) -> Turn:
    message = valid_text(f"{type(error).__name__}: {error}")
    usage = Usage(calls=1 + retries, retries=retries)
    reply = error.reply if isinstance(error, ProgramError) else None
    if isinstance(reply, BaseMessage):  # the model answered; its program failed: keep both
        usage = _usage(reply, profile, retries, 1, cached=cached)
        text = valid_text(reply.text)
        return Turn(**_recorded(call), text=text, usage=usage, error=message)
    return Turn(**_recorded(call), usage=usage, error=message, tool_calls=list(tools or []))


def _turn(
    call: Call,
    profile: ModelProfile,
    reply: BaseMessage,
    retries: int = 0,
    calls: int = 1,
    tools: list[ToolCall] | None = None,
    cached: bool = False,
) -> Turn:
    """The turn of a reply. Nothing a model returns may abort a run: the text is made valid,
    and a failure while reading it (an extractor, odd metadata) becomes the turn's error."""
    try:
        usage = _usage(reply, profile, retries, calls, cached)
    except Exception:  # noqa: BLE001 - usage that cannot be read is not counted
        usage = Usage(calls=1 + retries, retries=retries)
    fmt = call.speaker.answer_format
    try:
        text = valid_text(reply.text)
        confidence = logprob_confidence(reply.response_metadata.get("logprobs"))
        fusion = reply.response_metadata.get("fusion")
        answer = fmt.extractor()(text)
        return Turn(
            **_recorded(call),
            text=text,
            answer=answer,
            answer_error=fmt.problem(text) if answer is None else None,
            usage=usage,
            confidence=confidence if confidence is not None else stated_confidence(text),
            fusion=FusionStats.model_validate(fusion, strict=False) if fusion else None,
            tool_calls=list(tools or []),
        )
    except Exception as error:  # noqa: BLE001
        failed = _failed_turn(call, profile, error, retries)
        return failed.model_copy(update={"usage": usage})
