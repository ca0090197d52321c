"""A society inside LangChain: as a Runnable, a chat model, or a tool."""

from __future__ import annotations

from typing import Any, Literal, Protocol, Unpack

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompt_values import PromptValue
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel

from moot.errors import ConfigError
from moot.graphs.run import RunOptions
from moot.result import Result

SocietyInput = str | dict[str, Any] | PromptValue | list[BaseMessage]


class SocietyLike(Protocol):
    """What these surfaces need of a society: its runs (`moot.Society` has them)."""

    def run(self, question: str, **options: Unpack[RunOptions]) -> Result: ...

    async def arun(self, question: str, **options: Unpack[RunOptions]) -> Result: ...


def question_of(value: SocietyInput) -> str:
    """The question in what a chain passes on: text, {"question": ...}, a prompt, messages."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "question" not in value:
            raise ConfigError(f"a society takes {{'question': ...}}; got keys {sorted(value)}")
        return str(value["question"])
    if isinstance(value, PromptValue):
        value = value.to_messages()
    humans = [message for message in value if isinstance(message, HumanMessage)]
    if not humans:
        raise ConfigError("a society needs a user message holding the question")
    return humans[-1].text


def as_runnable(
    society: SocietyLike, output: Literal["answer", "result"] = "answer"
) -> Runnable[SocietyInput, Any]:
    """A Runnable for LCEL: the final answer ("" when none won), or the whole `Result`."""

    def shape(result: Result) -> str | Result:
        return result if output == "result" else (result.answer or "")

    def run(value: SocietyInput, config: RunnableConfig) -> str | Result:
        return shape(society.run(question_of(value), config=_inner(config)))

    async def arun(value: SocietyInput, config: RunnableConfig) -> str | Result:
        return shape(await society.arun(question_of(value), config=_inner(config)))

    return RunnableLambda(run, afunc=arun, name="moot_society")


def _inner(config: RunnableConfig) -> RunnableConfig:
    """The outer run's callbacks and tags reach the agents' model calls (for astream_events)."""
    inner: RunnableConfig = {}
    if "callbacks" in config:
        inner["callbacks"] = config["callbacks"]
    if "tags" in config:
        inner["tags"] = config["tags"]
    if "metadata" in config:
        inner["metadata"] = config["metadata"]
    return inner


class SocietyChatModel(BaseChatModel):
    """A chat model whose reply is a society's answer to the last user message.

    `usage_metadata` sums every agent's usage; `response_metadata["moot"]` holds the record
    (rounds, stop reason, turns). `temperature` and `max_tokens`, when set, apply to every
    agent. System messages are not passed on: each agent has its own.
    """

    society: Any
    """The `moot.Society` that answers."""
    model_name: str = "moot-society"
    temperature: float | None = None
    max_tokens: int | None = None

    @property
    def _llm_type(self) -> str:
        return "moot-society"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        """What a call cache tells this model apart by: its agents (each model by its own
        LangChain key), protocol and aggregator, as tuned; two societies never share a key."""
        society = self._tuned()
        agents = [
            {**agent.model_dump(exclude={"model"}), "model": _model_key(agent.model)}
            for agent in society.agents
        ]
        return {
            "model_name": self.model_name,
            "agents": agents,
            "protocol": repr(society.protocol),
            "aggregator": repr(society.aggregator),
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="moot",
            ls_model_name=kwargs.get("model", self.model_name),
            ls_model_type="chat",
        )
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop:
            params["ls_stop"] = stop
        return params

    def _tuned(self) -> Any:
        overrides = {
            key: value
            for key, value in (("temperature", self.temperature), ("max_tokens", self.max_tokens))
            if value is not None
        }
        if not overrides:
            return self.society
        agents = [agent.model_copy(update=overrides) for agent in self.society.agents]
        return self.society.model_copy(update={"agents": agents})

    def _reply(self, result: Result) -> ChatResult:
        usage = result.usage
        message = AIMessage(
            content=result.answer or "",
            usage_metadata=UsageMetadata(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
            ),
            response_metadata={
                "model_name": self.model_name,
                "moot": result.model_dump(mode="json", exclude={"question"}),
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    # Stop words and callbacks do not reach a society: each agent has its own.
    def _generate(self, messages: list[BaseMessage], *_: Any, **__: Any) -> ChatResult:
        return self._reply(self._tuned().run(question_of(messages)))

    async def _agenerate(self, messages: list[BaseMessage], *_: Any, **__: Any) -> ChatResult:
        return self._reply(await self._tuned().arun(question_of(messages)))

    def with_structured_output(  # type: ignore[override]
        self, schema: Any, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[Any, Any]:
        """The society's answer as an instance of `schema`, a pydantic model: the agents answer
        in it (`Society.answer_schema`) and the vote picks one. When no reply fits, it raises
        OutputParserException (with `include_raw`: {"raw", "parsed": None, "parsing_error"})."""
        if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            raise ConfigError(
                f"a society's with_structured_output takes a pydantic model class, got {schema!r}"
            )
        given = {name: getattr(self.society, name) for name in self.society.model_fields_set}
        # Built again, not copied: the society's checks see the schema (no program agents).
        typed = type(self.society)(**{**given, "answer_schema": schema, "vote_on": None})
        model = self.model_copy(update={"society": typed})

        def parsed(message: AIMessage) -> Any:
            found = message.response_metadata.get("moot", {}).get("answer_object")
            if found is None:
                raise OutputParserException(
                    f"no agent's reply filled {schema.__name__} and won the vote",
                    llm_output=message.text,
                )
            return schema.model_validate(found)

        if not include_raw:
            return model | RunnableLambda(parsed)

        def with_raw(message: AIMessage) -> dict[str, Any]:
            try:
                return {"raw": message, "parsed": parsed(message), "parsing_error": None}
            except OutputParserException as error:
                return {"raw": message, "parsed": None, "parsing_error": error}

        return model | RunnableLambda(with_raw)


def as_tool(society: SocietyLike, name: str, description: str) -> BaseTool:
    """A tool an agent can call with a question; it returns the society's answer."""

    def ask(question: str) -> str:
        return _tool_reply(society.run(question))

    async def aask(question: str) -> str:
        return _tool_reply(await society.arun(question))

    return StructuredTool.from_function(
        func=ask, coroutine=aask, name=name, description=description
    )


def _tool_reply(result: Result) -> str:
    if result.answer is None:
        return f"The agents reached no answer after {result.rounds} round(s)."
    return result.answer


def _model_key(model: object) -> str:
    """An agent's model as a cache key tells it apart: a chat model by its LangChain string."""
    if isinstance(model, BaseChatModel):
        return model._get_llm_string()
    return repr(model)
