"""llama.cpp as a LangChain chat model.

Each GGUF file is loaded once per set of load options and shared by every agent that names it;
the engine that runs it (simple or batched, `moot.llamacpp`) takes requests from any thread.
This module only turns LangChain messages into requests and completion chunks into LangChain
replies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import Field, PrivateAttr, ValidationError

from moot.config import describe
from moot.errors import ConfigError, ModelSpecError
from moot.llamacpp import (
    SAMPLING_FIELDS,
    ChatMessage,
    Chunk,
    Completion,
    Engine,
    EngineStats,
    Halt,
    LoadOptions,
    ModelCache,
    Request,
    Sampling,
    SamplingSettings,
    check_gguf,
    default_cache,
    default_cancellation,
    default_gpu_layers,
    gpu_offload_supported,
    open_engine,
)

__all__ = [
    "ChatLlama",
    "LoadOptions",
    "LocalChatModel",
    "cancel_all",
    "default_gpu_layers",
    "gpu_offload_supported",
    "llama_messages",
]

Messages = list[BaseMessage]
Stop = list[str] | None
SyncRun = CallbackManagerForLLMRun | None
AsyncRun = AsyncCallbackManagerForLLMRun | None

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


def cancel_all() -> None:
    """Stop every llama.cpp generation in this process at its next token (for Ctrl-C)."""
    default_cancellation.cancel_all()


def llama_messages(messages: Sequence[BaseMessage]) -> list[ChatMessage]:
    """Messages as llama-cpp-python's chat handlers take them."""
    converted = []
    for message in messages:
        role = _ROLES.get(message.type)
        if role is None:
            raise ConfigError(
                "llama.cpp chat models take system, user and assistant messages, not "
                f"{message.type!r}"
            )
        converted.append({"role": role, "content": message.text})
    return converted


class LocalChatModel(BaseChatModel, SamplingSettings):
    """What the in-process llama.cpp chat models share: a call is a `Request` to the model's
    `engine`, its completion chunks read back as a stream, a whole reply, or asynchronously
    without a thread. A call's `timeout` (seconds) and `cancel` (a threading.Event), a
    cancelled task and `cancel_all` end it at the next token, also while it waits its turn.
    Sampling fields are defaults; any of them can be passed per call."""

    loaded_models: ClassVar[ModelCache] = default_cache
    """Where loaded models are kept, one per file and load options."""

    _engine: Engine = PrivateAttr()

    @property
    def engine(self) -> Engine:
        """The engine that runs this model's calls (shared with other models of its file)."""
        return self._engine

    @property
    def reply_model_name(self) -> str:
        """`response_metadata["model_name"]` of its replies."""
        raise NotImplementedError

    def _sampling(self, kwargs: dict[str, Any]) -> Sampling:
        grammar = kwargs.get("grammar")  # a forced tool call (llama_tools)
        if not grammar and kwargs.get("answer_schema"):  # a typed answer after free reasoning
            from moot.models.llama_tools import answer_grammar

            grammar = answer_grammar(kwargs["answer_schema"])
        top_logprobs = kwargs.get("top_logprobs", 1) if kwargs.get("logprobs") else None
        return Sampling.of(self, kwargs, top_logprobs=top_logprobs, grammar=grammar or None)

    def _completion(self, messages: Messages, stop: Stop, kwargs: dict[str, Any]) -> Completion:
        halt = Halt(kwargs.get("timeout"), kwargs.get("cancel"), self.loaded_models.cancellation)
        request = Request(llama_messages(messages), self._sampling(kwargs), list(stop or []))
        return Completion(self.engine, request, halt)

    def _stream(
        self, messages: Messages, stop: Stop = None, run_manager: SyncRun = None, **kwargs: Any
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._completion(messages, stop, kwargs):
            generation = _generation_chunk(chunk)
            if generation is None:
                continue
            if generation.text and run_manager:
                run_manager.on_llm_new_token(generation.text)
            yield generation

    def _generate(
        self, messages: Messages, stop: Stop = None, run_manager: SyncRun = None, **kwargs: Any
    ) -> ChatResult:
        return _chat_result(self.reply_model_name, self._completion(messages, stop, kwargs))

    async def _astream(
        self, messages: Messages, stop: Stop = None, run_manager: AsyncRun = None, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for chunk in self._completion(messages, stop, kwargs):
            generation = _generation_chunk(chunk)
            if generation is None:
                continue
            if run_manager and generation.text:
                await run_manager.on_llm_new_token(generation.text, chunk=generation)
            yield generation

    async def _agenerate(
        self, messages: Messages, stop: Stop = None, run_manager: AsyncRun = None, **kwargs: Any
    ) -> ChatResult:
        chunks = await self._completion(messages, stop, kwargs).whole()
        return _chat_result(self.reply_model_name, chunks)


EARLIER_KEYS: tuple[dict[str, Any], ...] = ({"draft": 0},)
"""Load options that call cache keys held written out at these values in a past window, now
left out (`LoadOptions.AS_BEFORE`): draft=0 from 2026-12-05 20:37 to 2026-12-06 03:25. A new
entry of `AS_BEFORE` adds its window here, so each window's keys are rebuilt as written."""


class ChatLlama(LocalChatModel):
    """A GGUF model run in-process by llama.cpp.

    Per call, `logprobs=True` and `top_logprobs=k` return token logprobs in
    `response_metadata["logprobs"]` (OpenAI's shape); the simple engine needs the model loaded
    with `logprobs=True` for them.

    A call with a `seed` is reproducible. On the batched engine a seeded call still reuses its
    conversation's cached prefix and decodes batched with other calls: its logits are the same
    bits as when decoded alone (see `moot/llamacpp/batched.py`). On the simple engine it
    evaluates its whole prompt, because there a cached prefix changes logits in the last bits.
    """

    model_path: str
    load: LoadOptions = Field(default_factory=LoadOptions)  # no llama.cpp probe at import

    @classmethod
    def from_path(cls, path: str | Path, **options: Any) -> ChatLlama:
        """Load (or reuse) the GGUF at `path`; options are LoadOptions or sampling fields."""
        load_fields = set(LoadOptions.model_fields)
        unknown = set(options) - load_fields - set(SAMPLING_FIELDS)
        if unknown:
            known = ", ".join([*LoadOptions.model_fields, *SAMPLING_FIELDS])
            raise ModelSpecError(
                f"unknown llama option(s) {', '.join(sorted(unknown))}: known options are {known}"
            )
        sampling = {key: value for key, value in options.items() if key in SAMPLING_FIELDS}
        try:
            load = LoadOptions(
                **{key: value for key, value in options.items() if key in load_fields}
            )
            return cls(model_path=str(Path(path).expanduser()), load=load, **sampling)
        except ValidationError as error:
            raise ModelSpecError(f"llama option {describe(error)}") from error

    def model_post_init(self, context: Any, /) -> None:
        path, load = check_gguf(Path(self.model_path)), self.load
        key = ("engine", path, load)
        self._engine = self.loaded_models.get(key, lambda: open_engine(path, load))

    @property
    def _llm_type(self) -> str:
        return "llama.cpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        # Sampling defaults too: LangChain's cache key (and moot's call cache) is built from these.
        sampling = {name: getattr(self, name) for name in SAMPLING_FIELDS}
        return {"model_path": self.model_path, **self.load.reply_options(), **sampling}

    def earlier_llm_strings(self, stop: list[str] | None = None, **options: Any) -> list[str]:
        """The call's LangChain keys as earlier moot versions wrote them (`EARLIER_KEYS`), for
        a load whose options match; a call cache reads them after the current key."""
        load = self.load.model_dump()
        params = self._get_invocation_params(stop=stop, **options)
        return [
            str(sorted({**params, **written, **options}.items()))
            for written in EARLIER_KEYS
            if all(load.get(name) == value for name, value in written.items())
        ]

    @property
    def context_window(self) -> int:
        """Tokens the loaded context holds (llama.cpp may round n_ctx up)."""
        return self.engine.context_window

    @property
    def parameters(self) -> int:
        """The model's number of parameters (protocols word prompts for tiny models apart)."""
        return self.engine.model.parameters()

    @property
    def stats(self) -> EngineStats:
        """Counters shared by every ChatLlama on the same loaded model."""
        return self.engine.stats

    @property
    def reply_model_name(self) -> str:
        return Path(self.model_path).name

    def get_num_tokens(self, text: str) -> int:
        return len(self.engine.model.tokenize(text, False, False))

    def _sampling(self, kwargs: dict[str, Any]) -> Sampling:
        if kwargs.get("logprobs") and self.load.engine == "simple" and not self.load.logprobs:
            raise ConfigError(
                "logprobs were asked for but the model was loaded without them: "
                "load it with logprobs=True"
            )
        return super()._sampling(kwargs)

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """This model with `tools`: it is prompted in its template's tool format and its calls
        are read back (`moot/models/llama_tools.py`). Models whose chat template knows nothing
        of tools are refused."""
        from langchain_core.utils.function_calling import convert_to_openai_tool

        from moot.models.llama_tools import SMALL_MODEL, LlamaTools, template_knows_tools

        model = self.engine.model
        if not template_knows_tools(model.metadata().get("tokenizer.chat_template")):
            raise ConfigError(
                f"{Path(self.model_path).name} cannot call tools: its chat template has no tool "
                "format (small models such as SmolLM2 were not trained to call tools); use a "
                "model that can, e.g. Qwen2.5-Instruct GGUFs"
            )
        specs = [convert_to_openai_tool(tool) for tool in tools]
        worked = (getattr(tools[0], "metadata", None) or {}).get("moot_example") if tools else None
        small = model.parameters() < SMALL_MODEL
        names = [spec["function"]["name"] for spec in specs]
        if tool_choice is not None and tool_choice not in ("auto", "none", "required", "any"):
            if tool_choice not in names:
                raise ConfigError(f"tool_choice names no bound tool: '{tool_choice}'")
            forced: bool | str = tool_choice
        else:
            forced = tool_choice in ("required", "any")
        return LlamaTools(self, specs, example=(worked or True) if small else False, forced=forced)


def _usage(usage: dict[str, int]) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=usage["prompt_tokens"],
        output_tokens=usage["completion_tokens"],
        total_tokens=usage["prompt_tokens"] + usage["completion_tokens"],
    )


def _chat_result(model_name: str, chunks: Iterable[Chunk]) -> ChatResult:
    """The whole reply from completion chunks (text, logprobs, finish reason, usage)."""
    text: list[str] = []
    logprobs: list[dict[str, Any]] = []
    metadata: dict[str, Any] = {"model_name": model_name}
    usage: UsageMetadata | None = None
    for chunk in chunks:
        if "usage" in chunk:
            usage = _usage(chunk["usage"])
            metadata.update(chunk.get("response_metadata") or {})
            continue
        choice = chunk["choices"][0]
        text.append(choice["delta"].get("content") or "")
        if choice.get("logprobs"):
            logprobs.extend(choice["logprobs"].get("content") or [])
        if choice.get("finish_reason"):
            metadata["finish_reason"] = choice["finish_reason"]
    if logprobs:
        metadata["logprobs"] = {"content": logprobs}
    message = AIMessage(content="".join(text), usage_metadata=usage, response_metadata=metadata)
    return ChatResult(generations=[ChatGeneration(message=message)])


def _generation_chunk(chunk: Chunk) -> ChatGenerationChunk | None:
    """A completion chunk as LangChain's chunk (None for one that carries nothing)."""
    if "usage" in chunk:
        message = AIMessageChunk(
            content="",
            usage_metadata=_usage(chunk["usage"]),
            response_metadata=chunk.get("response_metadata") or {},
        )
        return ChatGenerationChunk(message=message)
    choice = chunk["choices"][0]
    text = choice["delta"].get("content") or ""
    info: dict[str, Any] = {}
    if choice.get("finish_reason"):
        info["finish_reason"] = choice["finish_reason"]
    if choice.get("logprobs"):
        info["logprobs"] = choice["logprobs"]
    if not text and not info:
        return None
    return ChatGenerationChunk(
        message=AIMessageChunk(content=text, response_metadata=info), generation_info=info or None
    )
