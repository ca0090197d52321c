"""llama.cpp as a LangChain chat model.

One `Llama` per GGUF file and load settings, shared by every agent that names it and guarded by
one lock (a `Llama` must not be called from two threads). Each agent's conversation prefix stays
in a RAM cache of llama.cpp states, so agents taking turns on one instance do not evict each
other's prefix and only the new part of each prompt is evaluated.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from moot.config import describe
from moot.errors import (
    CallTimeoutError,
    ConfigError,
    ContextLengthError,
    MissingExtraError,
    ModelSpecError,
    MootError,
)

if TYPE_CHECKING:
    from llama_cpp import Llama

_GGUF_MAGIC = b"GGUF"
_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}
_SAMPLING = ("temperature", "max_tokens", "top_p", "top_k", "min_p", "repeat_penalty", "seed")


class LoadOptions(BaseModel):
    """Settings fixed when a GGUF is loaded; one instance is kept per distinct set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_ctx: int = Field(default=4096, ge=0)
    """Context window in tokens (0: the model's own)."""
    n_gpu_layers: int = Field(default=0, ge=-1)
    """Layers to offload to the GPU (-1: all); needs a GPU build of llama-cpp-python."""
    n_threads: int | None = Field(default=None, ge=1)
    """CPU threads, for generation and prompt evaluation alike (None: llama.cpp's default)."""
    n_batch: int = Field(default=512, ge=1)
    chat_format: str | None = None
    """A llama-cpp-python chat format name; None uses the template stored in the GGUF."""
    logprobs: bool = False
    """Keep logits for every token (llama.cpp's logits_all), needed to return logprobs."""
    prefix_cache: bool = True
    """Keep each conversation's state in RAM so a continued conversation skips its prefix."""
    cache_bytes: int = Field(default=1 << 30, ge=0)


class LlamaStats(BaseModel):
    """Counters over every call on one loaded model (all agents sharing it)."""

    calls: int = 0
    prompt_tokens: int = 0
    """Prompt tokens sent."""
    prompt_tokens_evaluated: int = 0
    """Prompt tokens llama.cpp actually evaluated (the rest came from the KV cache)."""
    output_tokens: int = 0


class _SharedLlama:
    """A loaded model, its lock and its counters."""

    def __init__(self, path: Path, options: LoadOptions) -> None:
        llama_class = _counting_llama_class()
        try:
            self.llama: Llama = llama_class(
                model_path=str(path),
                n_ctx=options.n_ctx,
                n_gpu_layers=options.n_gpu_layers,
                n_threads=options.n_threads,
                # The batch default is every core, which oversubscribes a busy machine.
                n_threads_batch=options.n_threads,
                n_batch=options.n_batch,
                chat_format=options.chat_format,
                logits_all=options.logprobs,
                verbose=False,
            )
        except (ValueError, RuntimeError) as error:
            raise ModelSpecError(
                f"llama.cpp could not load {path}: {error} (check the load options: "
                f"n_ctx={options.n_ctx}, n_batch={options.n_batch}, "
                f"n_gpu_layers={options.n_gpu_layers}; a large n_ctx needs much memory)"
            ) from error
        if options.prefix_cache:
            self.llama.set_cache(_compact_ram_cache(options.cache_bytes, options.logprobs))
        self.lock = threading.Lock()
        self.stats = LlamaStats()


_loaded: dict[tuple[Path, LoadOptions], _SharedLlama] = {}
_loaded_lock = threading.Lock()


def _shared_llama(path: Path, options: LoadOptions) -> _SharedLlama:
    key = (path, options)
    with _loaded_lock:
        if key not in _loaded:
            _loaded[key] = _SharedLlama(path, options)
        return _loaded[key]


@atexit.register
def _close_all() -> None:
    """Free loaded models before interpreter teardown, where Llama.__del__ prints errors."""
    with _loaded_lock:
        for shared in _loaded.values():
            shared.llama.close()
        _loaded.clear()


def _counting_llama_class() -> type[Llama]:
    """A `Llama` that counts prompt tokens evaluated and tokens generated per call."""
    try:
        import llama_cpp
        from llama_cpp import Llama
    except ImportError as error:
        raise MissingExtraError("llama-cpp-python", "local", "the llama.cpp backend") from error

    class CountingLlama(Llama):
        prompt_tokens = 0
        prompt_tokens_evaluated = 0
        generated_tokens = 0
        _prompt_pending = False
        stop_check: Callable[[], bool] | None = None
        """Checked before each token; True ends the generation (a deadline, a cancel)."""

        def generate(self, tokens: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[int]:  # type: ignore[override]
            self.prompt_tokens = len(tokens)
            self.prompt_tokens_evaluated = 0
            self.generated_tokens = 0
            self._prompt_pending = True
            for token in super().generate(tokens, *args, **kwargs):
                if self.stop_check is not None and self.stop_check():
                    return
                # End-of-generation tokens are not part of the reply (llama.cpp's usage agrees).
                if not llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
                    self.generated_tokens += 1
                yield token

        def eval(self, tokens: Sequence[int]) -> None:
            if self._prompt_pending:  # the first eval of a call is the uncached part of the prompt
                self._prompt_pending = False
                self.prompt_tokens_evaluated = len(tokens)
            super().eval(tokens)

    return CountingLlama


def _compact_ram_cache(capacity_bytes: int, keep_all_logits: bool) -> Any:
    """llama-cpp-python's LlamaRAMCache, storing one row of logits per state.

    A saved state copies n_batch x n_vocab logits (about 100 MB for a 49k vocabulary) that are
    never read again unless the model keeps all logits: after a restore, llama.cpp re-evaluates
    at least one token before sampling.
    """
    from llama_cpp import LlamaRAMCache

    class CompactRAMCache(LlamaRAMCache):
        def __setitem__(self, key: Sequence[int], value: Any) -> None:
            if not keep_all_logits:
                value.scores = value.scores[-1:].copy()
            super().__setitem__(key, value)

    return CompactRAMCache(capacity_bytes=capacity_bytes)


def _check_gguf(path: Path) -> Path:
    if not path.is_file():
        raise ModelSpecError(f"GGUF file not found: {path}: check the path after 'llama:'")
    with path.open("rb") as handle:
        if handle.read(4) != _GGUF_MAGIC:
            raise ModelSpecError(f"{path} is not a GGUF file: llama.cpp loads .gguf models only")
    return path.resolve()


class ChatLlama(BaseChatModel):
    """A GGUF model run in-process by llama.cpp.

    Sampling fields are defaults; any of them can be passed per call. Per call, `logprobs=True`
    and `top_logprobs=k` return token logprobs in `response_metadata["logprobs"]` (OpenAI's
    shape) when the model was loaded with `logprobs=True`.

    A call with a `seed` is reproducible: it evaluates its whole prompt instead of reusing a
    cached prefix, because llama.cpp's logits differ in the last bits between the two.
    """

    model_path: str
    load: LoadOptions = LoadOptions()
    temperature: float = Field(default=0.7, ge=0)
    max_tokens: int = Field(default=512, ge=1)
    """Most tokens per reply; at least 1 (there is no "unlimited")."""
    top_p: float = Field(default=0.95, gt=0, le=1)
    top_k: int = Field(default=40, ge=0)
    min_p: float = Field(default=0.05, ge=0, le=1)
    repeat_penalty: float = Field(default=1.1, gt=0)
    seed: int | None = None

    _shared: _SharedLlama = PrivateAttr()

    @classmethod
    def from_path(cls, path: str | Path, **options: Any) -> ChatLlama:
        """Load (or reuse) the GGUF at `path`; options are LoadOptions or sampling fields."""
        load_fields = set(LoadOptions.model_fields)
        unknown = set(options) - load_fields - set(_SAMPLING)
        if unknown:
            known = ", ".join([*LoadOptions.model_fields, *_SAMPLING])
            raise ModelSpecError(
                f"unknown llama option(s) {', '.join(sorted(unknown))}: known options are {known}"
            )
        sampling = {key: value for key, value in options.items() if key in _SAMPLING}
        try:
            load = LoadOptions(
                **{key: value for key, value in options.items() if key in load_fields}
            )
            return cls(model_path=str(Path(path).expanduser()), load=load, **sampling)
        except ValidationError as error:
            raise ModelSpecError(f"llama option {describe(error)}") from error

    def model_post_init(self, context: Any, /) -> None:
        self._shared = _shared_llama(_check_gguf(Path(self.model_path)), self.load)

    @property
    def _llm_type(self) -> str:
        return "llama.cpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_path": self.model_path, **self.load.model_dump()}

    @property
    def context_window(self) -> int:
        """Tokens the loaded context holds (llama.cpp may round n_ctx up)."""
        return self._shared.llama.n_ctx()

    @property
    def stats(self) -> LlamaStats:
        """Counters shared by every ChatLlama on the same loaded model."""
        return self._shared.stats

    def get_num_tokens(self, text: str) -> int:
        return len(self._shared.llama.tokenize(text.encode("utf-8"), add_bos=False))

    def _params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {name: getattr(self, name) for name in _SAMPLING}
        params.update({key: value for key, value in kwargs.items() if key in _SAMPLING})
        if stop:
            params["stop"] = stop
        if kwargs.get("logprobs"):
            if not self.load.logprobs:
                raise ConfigError(
                    "logprobs were asked for but the model was loaded without them: "
                    "load it with logprobs=True"
                )
            params["logprobs"] = True
            params["top_logprobs"] = kwargs.get("top_logprobs", 1)
        return params

    def _completion(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """Stream completion chunks under the model's lock, then count what the call used.

        `timeout` (seconds, per call) and `cancel` (a threading.Event) end the call early, also
        while it waits for the lock: generation stops at the next token and the call raises.
        """
        shared = self._shared
        llama = shared.llama
        params = self._params(stop, kwargs)
        top_logprobs = params.get("top_logprobs")
        reproducible = params.get("seed") is not None
        halt = _Halt(kwargs.get("timeout"), kwargs.get("cancel"))
        while not shared.lock.acquire(timeout=0.05):
            halt.raise_if_due()
        try:
            cache = llama.cache
            if reproducible:
                llama.reset()
                llama.cache = None
            llama.stop_check = halt.due  # type: ignore[attr-defined]
            try:
                stream = llama.create_chat_completion(
                    messages=[_to_llama_message(message) for message in messages],  # type: ignore[misc]
                    stream=True,
                    **params,
                )
                for raw in stream:
                    chunk = cast(dict[str, Any], raw)
                    if top_logprobs is not None:
                        _trim_top_logprobs(chunk, top_logprobs)
                    yield chunk
            except ValueError as error:
                if "exceed context window" in str(error):
                    raise ContextLengthError(
                        f"the prompt does not fit the context window of {llama.n_ctx()} tokens: "
                        "shorten it or load the model with a larger n_ctx"
                    ) from error
                raise
            finally:
                llama.cache = cache
                llama.stop_check = None  # type: ignore[attr-defined]
            stats = shared.stats
            stats.calls += 1
            stats.prompt_tokens += llama.prompt_tokens  # type: ignore[attr-defined]
            stats.prompt_tokens_evaluated += llama.prompt_tokens_evaluated  # type: ignore[attr-defined]
            stats.output_tokens += llama.generated_tokens  # type: ignore[attr-defined]
            halt.raise_if_due()  # the generation was cut short
            yield {"usage": _usage(llama)}
        finally:
            shared.lock.release()

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._completion(messages, stop, kwargs):
            if "usage" in chunk:
                yield ChatGenerationChunk(
                    message=AIMessageChunk(content="", usage_metadata=chunk["usage"])
                )
                continue
            choice = chunk["choices"][0]
            text = choice["delta"].get("content") or ""
            info: dict[str, Any] = {}
            if choice.get("finish_reason"):
                info["finish_reason"] = choice["finish_reason"]
            if choice.get("logprobs"):
                info["logprobs"] = choice["logprobs"]
            if text and run_manager:
                run_manager.on_llm_new_token(text)
            if text or info:
                yield ChatGenerationChunk(
                    message=AIMessageChunk(content=text, response_metadata=info),
                    generation_info=info or None,
                )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text: list[str] = []
        logprobs: list[dict[str, Any]] = []
        metadata: dict[str, Any] = {"model_name": Path(self.model_path).name}
        usage: UsageMetadata | None = None
        for chunk in self._completion(messages, stop, kwargs):
            if "usage" in chunk:
                usage = chunk["usage"]
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

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """`_stream` in a worker thread; a cancelled task stops the generation at once (the
        thread is told through an event), so an abandoned call frees the model."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        finished = object()

        def work() -> None:
            try:
                for chunk in self._stream(messages, stop, None, cancel=cancel, **kwargs):
                    loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            except BaseException as error:  # noqa: BLE001 - raised in the task below
                loop.call_soon_threadsafe(chunks.put_nowait, error)
            finally:
                loop.call_soon_threadsafe(chunks.put_nowait, finished)

        loop.run_in_executor(None, work)
        try:
            while (item := await chunks.get()) is not finished:
                if isinstance(item, BaseException):
                    raise item
                if run_manager and item.text:
                    await run_manager.on_llm_new_token(item.text, chunk=item)
                yield item
        finally:
            cancel.set()  # no-op once the generation ended

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        cancel = threading.Event()
        call = functools.partial(self._generate, messages, stop, None, cancel=cancel, **kwargs)
        try:
            return await asyncio.get_running_loop().run_in_executor(None, call)
        except asyncio.CancelledError:
            cancel.set()  # the worker thread stops at its next token
            raise


class _Halt:
    """When a call must stop early: past its deadline, or cancelled (by its caller, or by
    `cancel_all` on Ctrl-C)."""

    def __init__(self, timeout: float | None, cancel: threading.Event | None) -> None:
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.cancel = cancel

    def due(self) -> bool:
        return self.reason() is not None

    def reason(self) -> str | None:
        if _cancel_all.is_set() or (self.cancel is not None and self.cancel.is_set()):
            return "cancelled"
        if self.deadline is not None and time.monotonic() > self.deadline:
            return "timeout"
        return None

    def raise_if_due(self) -> None:
        reason = self.reason()
        if reason == "cancelled":
            raise CallCancelledError("the llama.cpp call was cancelled")
        if reason == "timeout":
            raise CallTimeoutError(f"llama.cpp did not finish within {self.timeout:g} s")


_cancel_all = threading.Event()


def cancel_all() -> None:
    """Stop every llama.cpp generation in this process at its next token (for Ctrl-C)."""
    _cancel_all.set()


class CallCancelledError(MootError):
    """A llama.cpp call stopped because it was cancelled."""


def _trim_top_logprobs(chunk: dict[str, Any], k: int) -> None:
    """Keep the k most likely alternatives, as OpenAI does (llama.cpp adds the sampled token)."""
    logprobs = chunk["choices"][0].get("logprobs") or {}
    for entry in logprobs.get("content") or []:
        ranked = sorted(entry.get("top_logprobs") or [], key=lambda alt: -alt["logprob"])
        entry["top_logprobs"] = ranked[:k]


def _usage(llama: Any) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=llama.prompt_tokens,
        output_tokens=llama.generated_tokens,
        total_tokens=llama.prompt_tokens + llama.generated_tokens,
    )


def _to_llama_message(message: BaseMessage) -> dict[str, str]:
    role = _ROLES.get(message.type)
    if role is None:
        raise ConfigError(
            f"llama.cpp chat models take system, user and assistant messages, not {message.type!r}"
        )
    return {"role": role, "content": message.text}
