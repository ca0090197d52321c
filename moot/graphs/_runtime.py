"""How protocol graphs call agents: the runtime context, one guarded model call, and nodes
written once for both sync and async graphs.

A node body takes the node's input state and the `RunContext` and returns its state update; a
body that needs model calls is a generator that yields batches of `Call`s and receives their
turns, then returns the update. `agent_node` turns a body into a LangGraph node: sync graphs run
a batch's calls one after another, async graphs run them as concurrent tasks.
"""

from __future__ import annotations

import asyncio
import contextvars
import operator
import random
import re
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphBubbleUp
from langgraph.runtime import Runtime

from moot import prompts
from moot.agents import Agent
from moot.aggregate.base import Aggregator, AnswerFormat
from moot.aggregate.confidence import logprob_confidence, stated_confidence
from moot.cache import CallCache
from moot.errors import CallCancelledError, CallTimeoutError, ProgramError
from moot.graphs._tool_loop import (
    MODEL_CALLS,
    PARTIAL_TOOL_CALLS,
    TOOL_CALLS,
    arun_turn,
    run_turn,
)
from moot.models import model_prices
from moot.tools.program import run_program
from moot.result import FusionStats, StopReason, ToolCall, Turn, Usage


class SocietyState(TypedDict, total=False):
    """State every protocol graph keeps (checkpointed, so it holds no model objects).

    A protocol that needs more keys subclasses it; every key written by parallel branches
    needs a reducer.
    """

    question: str
    """The question being answered."""
    round: int
    """The round that runs next (1-based)."""
    turns: Annotated[list[Turn], operator.add]
    """All turns so far; agents of one round append in parallel."""
    answer: str | None
    """The final answer, once aggregated."""
    stop_reason: StopReason | None
    """Set when the run should end (the graph then aggregates), and why."""
    notes: Annotated[list[dict[str, Any]], operator.add]
    """Moderator notes: {"round": r, "text": ...}, shown to the agents after round r."""
    fallback: str | None
    """Why the answer is not what the aggregator's own agent gave (it failed), if so."""


@dataclass(frozen=True)
class Speaker:
    """Who is called for a turn: the agent, its model, and how its answer is read."""

    agent: Agent
    model: BaseChatModel
    answer_format: AnswerFormat
    cache: CallCache | None = None
    """Where identical calls are answered from, if the run has a call cache."""
    slots: threading.Semaphore | None = None
    """Bounds the model calls of a sync run in flight at once (its `max_concurrency`): taken
    before a call's clock starts, given back when the call ends (not while a retry waits)."""


@dataclass(frozen=True)
class RunContext:
    """Runtime context of a society's graph: live objects that are never checkpointed."""

    agents: list[Agent]
    """The society's agents, in order."""
    models: list[BaseChatModel]
    """The agents' chat models, in agent order (agents naming one spec share one object)."""
    aggregator: Aggregator
    """How the final answer is chosen; also the answer format agents are asked for."""
    aggregator_models: dict[str, BaseChatModel] = field(default_factory=dict)
    """Models of the aggregator's own agents (a judge, a ranker, a fuser), by agent name."""
    moderated: bool = False
    """Pause after each round (but the last) for a moderator (a LangGraph interrupt)."""
    cache: CallCache | None = None
    """The run's call cache (`run(..., cache=)`), if any."""
    answer_format: AnswerFormat | None = None
    """How agents state and are read for their answers, when not the aggregator's (a
    society's `answer_schema`)."""
    slots: threading.Semaphore | None = None
    """A sync run's bound on model calls in flight. LangGraph's thread pool cannot be the
    bound: its stream waiter takes one of the pool's threads."""

    def speaker(self, index: int, answer_format: AnswerFormat | None = None) -> Speaker:
        """Agent `index` with its model, reading answers in `answer_format` (default: the
        aggregator's)."""
        fmt = answer_format or self.answer_format or self.aggregator
        return Speaker(self.agents[index], self.models[index], fmt, self.cache, self.slots)

    def aggregator_speaker(self, agent: Agent, answer_format: AnswerFormat) -> Speaker:
        """One of the aggregator's own agents with its model."""
        model = self.aggregator_models[agent.name]
        return Speaker(agent, model, answer_format, self.cache, self.slots)

    def format_instruction(self) -> str:
        """The text that tells agents how to state their answer."""
        return (self.answer_format or self.aggregator).instruction()


@dataclass(frozen=True)
class Call:
    """One model call a node asks for."""

    speaker: Speaker
    conversation: list[BaseMessage]
    """The messages after the system prompt (which comes from the agent)."""
    round: int
    """The round the turn belongs to."""
    peers: list[str] = field(default_factory=list)
    """Agents whose replies the conversation shows (recorded in the turn)."""
    system_prompt: bool = True
    """Whether the agent's system prompt comes first (some published prompts have none)."""


Update = Mapping[str, Any]
Calls = Generator[list[Call], list[Turn], Update]
"""A node body that calls models: yields batches of calls, receives their turns in order."""
NodeBody = Callable[[Any, RunContext], "Update | Calls"]


def agent_node(body: NodeBody, *, asynchronous: bool) -> Callable[..., Any]:
    """A LangGraph node running `body`; async nodes run each batch of calls concurrently."""
    if asynchronous:

        async def anode(state: Any, *, runtime: Runtime[RunContext]) -> Update:
            return await arun_calls(body(state, runtime.context))

        return anode

    def node(state: Any, *, runtime: Runtime[RunContext]) -> Update:
        return run_calls(body(state, runtime.context))

    return node


def run_calls(plan: Update | Calls) -> Update:
    """Drive a node body: make its calls one after another, return its update."""
    if not isinstance(plan, Generator):
        return plan
    try:
        batch = next(plan)
        while True:
            batch = plan.send([call_agent(call) for call in batch])
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]


async def arun_calls(plan: Update | Calls) -> Update:
    """Drive a node body: each batch of calls runs as concurrent tasks."""
    if not isinstance(plan, Generator):
        return plan
    try:
        batch = next(plan)
        while True:
            turns = await asyncio.gather(*(acall_agent(call) for call in batch))
            batch = plan.send(list(turns))
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]


def call_agent(call: Call) -> Turn:
    """Make `call` and record the turn; retry passing failures; never raise.

    A failing model call becomes a failed turn: a LangGraph superstep is all-or-nothing, so an
    exception here would throw away the sibling agents' answers of the same round.
    """
    agent = call.speaker.agent
    key, stored = _cached(call)
    if stored is not None:
        return _turn(call, stored, 0, cached=True)
    for attempt in range(agent.retries + 1):
        try:
            reply = _invoke(call)
        except (GraphBubbleUp, CallCancelledError):
            raise  # a cancelled call is unfinished work: resume makes it again
        except Exception as error:  # noqa: BLE001 - any model failure is recorded, not raised
            if attempt < agent.retries and is_transient(error):
                time.sleep(_backoff(agent.retry_delay, attempt))
                continue
            return _failed_turn(call, error, attempt)
        return _store(call, key, _turn(call, reply, attempt), reply)
    raise AssertionError("unreachable: the last attempt returns")


async def acall_agent(call: Call) -> Turn:
    """`call_agent` for async graphs: the model call runs as a task on the event loop."""
    agent = call.speaker.agent
    key, stored = _cached(call)
    if stored is not None:
        return _turn(call, stored, 0, cached=True)
    for attempt in range(agent.retries + 1):
        try:
            reply = await _ainvoke(call)
        except (GraphBubbleUp, CallCancelledError):
            raise  # a cancelled call is unfinished work: resume makes it again
        except Exception as error:  # noqa: BLE001
            if attempt < agent.retries and is_transient(error):
                await asyncio.sleep(_backoff(agent.retry_delay, attempt))
                continue
            return _failed_turn(call, error, attempt)
        return _store(call, key, _turn(call, reply, attempt), reply)
    raise AssertionError("unreachable: the last attempt returns")


def _cached(call: Call) -> tuple[str | None, BaseMessage | None]:
    """The call's cache key (None: not cached) and the stored reply, if any."""
    cache = call.speaker.cache
    if cache is None or call.speaker.agent.tools:  # a stored reply would lose its tool calls
        return None, None
    messages, _, options = _request(call)
    options.pop("timeout", None)  # how long to wait does not change the reply
    key = cache.key(call.speaker.model, messages, options)
    return key, (cache.get(key) if key else None)


def _store(call: Call, key: str | None, turn: Turn, reply: BaseMessage) -> Turn:
    """Keep a successful reply in the call cache (a failed turn is not kept)."""
    if key and call.speaker.cache is not None and not turn.failed:
        call.speaker.cache.put(key, reply)
    return turn


def _invoke(call: Call) -> BaseMessage:
    """The model's reply (with its answer line, where it needed one); with a time limit, the
    call runs in a daemon thread that is left behind (and told to stop, where the model can be)
    when the limit passes. The call's slot is taken before the clock starts and given back
    when the call really ends, so calls left running still count against `max_concurrency`."""
    who = call.speaker
    messages, config, options = _request(call)

    def ask() -> BaseMessage:
        if who.agent.tools:
            reply = run_turn(who.model, who.agent, messages, config, options, who.answer_format)
        else:
            reply = who.model.invoke(messages, config=config, **options)
        reply = run_program(who.agent, reply)
        request = _answer_request(call, reply)
        if request is None:
            return reply
        try:
            return _with_answer_line(reply, who.model.invoke(*request[0], **request[1]))
        except (GraphBubbleUp, CallCancelledError):
            raise
        except Exception:  # noqa: BLE001 - the reply stands without its answer line
            return _with_answer_line(reply, None)

    if who.slots is not None:
        who.slots.acquire()
    timeout = who.agent.timeout
    if timeout is None:
        try:
            return ask()
        finally:
            if who.slots is not None:
                who.slots.release()
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["reply"] = ask()
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            outcome["error"] = error
        finally:
            if who.slots is not None:
                who.slots.release()
            done.set()

    # The copied context keeps LangGraph's callbacks (token streaming) in the thread.
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(work,), daemon=True).start()
    if not done.wait(timeout):
        raise CallTimeoutError(_timeout_message(who.agent.name, timeout))
    if "error" in outcome:
        raise outcome["error"]
    return cast(BaseMessage, outcome["reply"])


async def _ainvoke(call: Call) -> BaseMessage:
    who = call.speaker
    messages, config, options = _request(call)

    async def ask() -> BaseMessage:
        if who.agent.tools:
            reply = await arun_turn(
                who.model, who.agent, messages, config, options, who.answer_format
            )
        else:
            reply = await who.model.ainvoke(messages, config=config, **options)
        if who.agent.kind == "program":  # the sandbox blocks: run it off the event loop
            reply = await asyncio.to_thread(run_program, who.agent, reply)
        request = _answer_request(call, reply)
        if request is None:
            return reply
        try:
            return _with_answer_line(reply, await who.model.ainvoke(*request[0], **request[1]))
        except (GraphBubbleUp, CallCancelledError):
            raise
        except Exception:  # noqa: BLE001 - the reply stands without its answer line
            return _with_answer_line(reply, None)

    if who.agent.timeout is None:
        return await ask()
    try:
        return await asyncio.wait_for(ask(), who.agent.timeout)
    except TimeoutError:
        raise CallTimeoutError(_timeout_message(who.agent.name, who.agent.timeout)) from None


def _answer_request(
    call: Call, reply: BaseMessage
) -> tuple[tuple[list[BaseMessage], RunnableConfig], dict[str, Any]] | None:
    """The follow-up call that asks a local model for its answer line under a grammar, when its
    reply states none that reads in the run's format (small models wander off the format);
    None when the reply reads, or the model or format cannot be held to a grammar."""
    speaker = call.speaker
    fmt, model = speaker.answer_format, speaker.model
    if speaker.agent.tools or getattr(model, "_llm_type", "") != "llama.cpp":
        return None
    try:
        if fmt.readable(fmt.extractor()(valid_text(reply.text))):
            return None
        grammar = fmt.answer_grammar()
    except Exception:  # noqa: BLE001 - an extractor that fails is the turn's to report
        return None
    if grammar is None:
        return None
    messages, config, options = _request(call)
    follow = [*messages, AIMessage(content=reply.text), HumanMessage(prompts.load("formats/reask"))]
    # Greedy: it states what the reply concluded, not a fresh guess; the grammar bounds it.
    return (follow, config), {**options, "grammar": grammar, "max_tokens": 96, "temperature": 0.0}


def _with_answer_line(reply: BaseMessage, line: BaseMessage | None) -> AIMessage:
    """The reply with the constrained answer line appended (None: that call failed, the reply
    stands alone): one turn, two calls counted."""
    asked = (reply, line) if line is not None else (reply,)
    usage = [getattr(message, "usage_metadata", None) or {} for message in asked]
    summed = {
        key: sum(int(part.get(key, 0)) for part in usage)
        for key in ("input_tokens", "output_tokens", "total_tokens")
    }
    metadata = dict(reply.response_metadata)
    metadata[MODEL_CALLS] = int(metadata.get(MODEL_CALLS, 1)) + 1
    return AIMessage(
        content=f"{reply.text.rstrip()}\n{line.text.strip()}" if line else reply.text,
        usage_metadata=summed,  # type: ignore[arg-type]
        response_metadata=metadata,
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


def _request(call: Call) -> tuple[list[BaseMessage], RunnableConfig, dict[str, Any]]:
    """The messages (system prompt first), the run config (tagged so streams split by agent)
    and the call's options: sampling, and the time limit for models that take one per call."""
    agent, model = call.speaker.agent, call.speaker.model
    system = [SystemMessage(content=agent.system_prompt())] if call.system_prompt else []
    messages = [*system, *_join_user(call.conversation)]
    # Tracing (LangSmith, OpenTelemetry) shows each turn under the agent's name, with these.
    config: RunnableConfig = {
        "run_name": f"{agent.name} round {call.round}",
        "tags": [f"moot:agent:{agent.name}"],
        "metadata": {"moot_agent": agent.name, "moot_role": agent.role, "moot_round": call.round},
    }
    options = agent.sampling()
    backend = getattr(model, "_llm_type", "")
    if agent.timeout is not None and backend in _TIMEOUT_AWARE:
        options["timeout"] = agent.timeout
    schema = call.speaker.answer_format.json_schema()
    if schema is not None and not agent.tools and _takes_answer_schema(model):
        options["answer_schema"] = schema  # a grammar or a response format holds the reply to it
    return messages, config, options


def _takes_answer_schema(model: Any) -> bool:
    """Whether the model holds a reply to a typed answer's schema itself: llama.cpp by a
    grammar, moot's OpenAI models by a response format (`structured_output`)."""
    return getattr(model, "_llm_type", "") == "llama.cpp" or getattr(
        model, "takes_answer_schema", False
    )


_TIMEOUT_AWARE = {"llama.cpp", "openai-chat"}
"""Models that take `timeout=` per call: llama.cpp stops generating, OpenAI's client gives up."""


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


def _recorded(call: Call) -> dict[str, Any]:
    agent = call.speaker.agent
    return {"round": call.round, "agent": agent.name, "role": agent.role, "peers": call.peers}


def _failed_turn(call: Call, error: BaseException, retries: int) -> Turn:
    message = valid_text(f"{type(error).__name__}: {error}")
    tool_calls = getattr(error, PARTIAL_TOOL_CALLS, [])
    usage = Usage(calls=1 + retries, retries=retries)
    reply = error.reply if isinstance(error, ProgramError) else None
    if isinstance(reply, BaseMessage):  # the model answered; its program failed: keep both
        usage = _costed(usage_of(reply, retries), model_prices(call.speaker.model), False)
        text = valid_text(reply.text)
        return Turn(**_recorded(call), text=text, usage=usage, error=message)
    return Turn(**_recorded(call), usage=usage, error=message, tool_calls=tool_calls)


def _turn(call: Call, reply: BaseMessage, retries: int, cached: bool = False) -> Turn:
    """The turn of a reply. Nothing a model returns may abort a run: the text is made valid,
    and a failure while reading it (an extractor, odd metadata) becomes the turn's error."""
    try:
        usage = usage_of(reply, retries)
    except Exception:  # noqa: BLE001 - usage that cannot be read is not counted
        usage = Usage(calls=1 + retries, retries=retries)
    usage = _costed(usage, model_prices(call.speaker.model), cached)
    try:
        text = valid_text(reply.text)
        confidence = logprob_confidence(reply.response_metadata.get("logprobs"))
        fusion = reply.response_metadata.get("fusion")
        tools = reply.response_metadata.get(TOOL_CALLS) or []
        answer = call.speaker.answer_format.extractor()(text)
        unreadable = call.speaker.answer_format.problem(text) if answer is None else None
        if MODEL_CALLS in reply.response_metadata and not cached:
            calls = int(reply.response_metadata[MODEL_CALLS]) + retries
            usage = usage.model_copy(update={"calls": calls})
        return Turn(
            **_recorded(call),
            text=text,
            answer=answer,
            answer_error=unreadable,
            usage=usage,
            confidence=confidence if confidence is not None else stated_confidence(text),
            fusion=FusionStats.model_validate(fusion, strict=False) if fusion else None,
            tool_calls=[ToolCall.model_validate(record) for record in tools],
        )
    except Exception as error:  # noqa: BLE001
        failed = _failed_turn(call, error, retries)
        return failed.model_copy(update={"usage": usage})


_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """`text` with lone surrogates (invalid Unicode, which cannot be encoded or saved) replaced
    by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


def usage_of(message: BaseMessage, retries: int = 0) -> Usage:
    """What a reply cost, from its usage metadata; `retries` calls came before it."""
    metadata: dict[str, Any] = getattr(message, "usage_metadata", None) or {}
    input_tokens = int(metadata.get("input_tokens", 0))
    output_tokens = int(metadata.get("output_tokens", 0))
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=int(metadata.get("total_tokens", input_tokens + output_tokens)),
        calls=1 + retries,
        retries=retries,
    )


def _costed(usage: Usage, prices: tuple[float, float] | None, cached: bool) -> Usage:
    """`usage` with its cost at `prices` (per million tokens); a cache hit made no call and
    costs nothing."""
    update: dict[str, Any] = {}
    if prices is not None:
        price_in, price_out = prices
        spent = (usage.input_tokens * price_in + usage.output_tokens * price_out) / 1e6
        update["cost"] = 0.0 if cached else spent
    if cached:
        update.update(calls=0, retries=0, cached_calls=1)
    return usage.model_copy(update=update)


# -- what the built-in protocols share ----------------------------------------------------------


def question_prompt(question: str, context: RunContext) -> str:
    """The first prompt of every protocol: the question and the answer format."""
    return prompts.render("debate/question", question=question, format=context.format_instruction())


def note_after(notes: list[dict[str, Any]], round: int) -> str:
    """The moderator's note given after `round`, as text to append to a prompt ("" if none)."""
    texts = [note["text"] for note in notes if note["round"] == round]
    return "".join("\n\n" + prompts.render("debate/moderator", note=text) for text in texts)


def show_replies(turns: list[Turn], text: Callable[[Turn], str] = lambda turn: turn.text) -> str:
    """Other agents' replies as shown in a prompt, each under its agent's name."""
    return "\n\n".join(
        prompts.render("debate/peer", peer=turn.agent, text=text(turn)) for turn in turns
    )


class SoloTask(TypedDict):
    """One agent answering the question on its own (a router's expert, a cascade tier's agent)."""

    question: str
    round: int
    agent: int


def answer_alone(task: SoloTask, context: RunContext) -> Calls:
    """Node body: agent `task["agent"]` answers the question alone."""
    conversation: list[BaseMessage] = [HumanMessage(question_prompt(task["question"], context))]
    turns = yield [Call(context.speaker(task["agent"]), conversation, task["round"])]
    return {"turns": turns}


def require_answer_format_only(aggregator: Aggregator, why: str) -> None:
    """Refuse an aggregator that a protocol would load and never use: in protocols whose
    answer is one agent's (`why`), the aggregator only sets the answer format."""
    from moot.aggregate.vote import MajorityVote

    if not isinstance(aggregator, MajorityVote) or aggregator.min_votes != 1:
        raise ValueError(
            f"{why}, so a {type(aggregator).__name__} aggregator would never be used: give "
            "MajorityVote(extract=...) (a society file: {kind: vote, extract: ...}) to set "
            "the answer format"
        )
