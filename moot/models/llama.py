"""llama.cpp as a LangChain chat model.

Each GGUF file is loaded once per set of load options and shared by every agent that names it.
Two engines run it:
- `batched` (`moot/models/_engine.py`): a pool of contexts with several sequences each;
  calls that arrive together decode together, and each conversation keeps its KV cache in its own
  sequence, so a continued conversation evaluates only its new tokens, seeded or not.
- `simple` (the default until `batched` wins every benchmark of BENCHMARKS.md's issue-12
  section; it loses `moot serve` throughput on the embedded 135M model): one llama-cpp-python
  `Llama` behind one lock, calls one after another, each agent's prefix kept in a RAM cache of
  llama.cpp states (skipped by seeded calls).
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import functools
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from moot.config import describe
from moot.errors import (
    CallCancelledError,
    CallTimeoutError,
    ConfigError,
    ContextLengthError,
    MissingExtraError,
    ModelSpecError,
)

if TYPE_CHECKING:
    from llama_cpp import Llama

    from moot.models._engine import Engine, Request

_GGUF_MAGIC = b"GGUF"
_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}
_SAMPLING = ("temperature", "max_tokens", "top_p", "top_k", "min_p", "repeat_penalty", "seed")
_SPEED_ONLY = {"n_threads", "contexts", "sequences", "cache_bytes"}
"""Load options that change how fast a reply comes, never its tokens (threads split rows, the
batched engine decodes a sequence alike in any company): left out of the cache key, so a run
resumed with another thread layout still finds its calls. Not `n_gpu_layers`: GPU kernels sum
in another order than CPU ones, so offloading changes logits in the last bits and, now and then,
a token; a call cached on one device is not replayed on the other."""


@functools.cache
def gpu_offload_supported() -> bool:
    """Whether the installed llama.cpp can offload layers here: a GPU build (CUDA, Metal,
    Vulkan, ROCm...) that found a device. False without llama-cpp-python."""
    try:
        import llama_cpp
    except ImportError:
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())


def default_gpu_layers() -> int:
    """`n_gpu_layers` when none is given: every layer (-1) where llama.cpp can offload, none (0)
    on a CPU build. llama.cpp's own default, 0, would leave a GPU build's GPU idle."""
    return -1 if gpu_offload_supported() else 0


class LoadOptions(BaseModel):
    """Settings fixed when a GGUF is loaded; one instance is kept per distinct set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    engine: Literal["batched", "simple"] = "simple"
    """`batched`: calls decode together on a pool of contexts and each conversation keeps its
    own KV cache; `simple`: one call at a time on one llama-cpp-python `Llama`."""
    n_ctx: int = Field(default=4096, ge=0)
    """Context window in tokens of one conversation (0: the model's own)."""
    sequences: int = Field(default=4, ge=1, le=256)
    """Batched engine: conversations each context holds at once (llama.cpp's n_seq_max); more
    wait their turn. Each takes n_ctx tokens of KV cache."""
    contexts: int = Field(default=1, ge=1, le=64)
    """Batched engine: contexts decoding in parallel on the one loaded model (each with
    n_threads threads)."""
    n_gpu_layers: int = Field(default_factory=default_gpu_layers, ge=-1)
    """Layers to offload to the GPU (-1: all; default: all on a GPU build of llama-cpp-python,
    0 on a CPU build)."""
    n_threads: int | None = Field(default=None, ge=1)
    """CPU threads, for generation and prompt evaluation alike (None: simple engine, half the
    cores for generation as llama-cpp-python does; batched engine, the cores shared among the
    contexts)."""
    n_batch: int = Field(default=512, ge=1)
    chat_format: str | None = None
    """A llama-cpp-python chat format name; None uses the template stored in the GGUF."""
    logprobs: bool = False
    """Simple engine: keep logits for every token (llama.cpp's logits_all), needed to return
    logprobs. The batched engine returns logprobs without it."""
    prefix_cache: bool = True
    """Simple engine: keep each conversation's state in RAM so a continued conversation skips
    its prefix. (The batched engine always keeps conversations in their sequences.)"""
    cache_bytes: int = Field(default=1 << 30, ge=0)
    """Simple engine: size of that RAM cache."""


class LlamaStats(BaseModel):
    """Counters over every call on one loaded model (all agents sharing it)."""

    calls: int = 0
    prompt_tokens: int = 0
    """Prompt tokens sent."""
    prompt_tokens_evaluated: int = 0
    """Prompt tokens llama.cpp actually evaluated (the rest came from the KV cache)."""
    output_tokens: int = 0


class _SharedLlama:
    """The simple engine: a loaded model, its lock and its counters."""

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

    @property
    def context_window(self) -> int:
        return self.llama.n_ctx()

    def tokenize(self, text: str) -> list[int]:
        return self.llama.tokenize(text.encode("utf-8"), add_bos=False)

    def model_facts(self) -> tuple[dict[str, str], int]:
        """The GGUF's metadata and its number of parameters."""
        return dict(self.llama.metadata), int(self.llama._model.n_params())

    def close(self) -> None:
        self.llama.close()


class _SharedEngine:
    """The batched engine: a loaded model, the chat template that makes its prompts, counters."""

    def __init__(self, path: Path, options: LoadOptions) -> None:
        try:
            from moot.models._engine import Engine
        except ImportError as error:
            raise MissingExtraError("llama-cpp-python", "local", "the llama.cpp backend") from error
        self.engine: Engine = Engine(
            path,
            n_ctx=options.n_ctx,
            sequences=options.sequences,
            contexts=options.contexts,
            n_threads=options.n_threads,
            n_batch=options.n_batch,
            n_gpu_layers=options.n_gpu_layers,
        )
        self.formatter = chat_formatter(self.engine.model, options.chat_format)
        self.lock = threading.Lock()
        self.stats = LlamaStats()

    @property
    def context_window(self) -> int:
        return self.engine.n_ctx

    def tokenize(self, text: str) -> list[int]:
        return self.engine.tokenize(text, add_bos=False, special=False)

    def model_facts(self) -> tuple[dict[str, str], int]:
        """The GGUF's metadata and its number of parameters."""
        return dict(self.engine.model.metadata()), int(self.engine.model.n_params())

    def prompt(
        self, messages: list[BaseMessage], stop: list[str]
    ) -> tuple[list[int], list[int], list[str]]:
        return chat_prompt(self.formatter, self.engine.tokenize, messages, stop)

    def count(self, usage: dict[str, int]) -> UsageMetadata:
        with self.lock:
            self.stats.calls += 1
            self.stats.prompt_tokens += usage["prompt_tokens"]
            self.stats.prompt_tokens_evaluated += usage["prompt_tokens_evaluated"]
            self.stats.output_tokens += usage["completion_tokens"]
        return UsageMetadata(
            input_tokens=usage["prompt_tokens"],
            output_tokens=usage["completion_tokens"],
            total_tokens=usage["prompt_tokens"] + usage["completion_tokens"],
        )

    def close(self) -> bool:
        return self.engine.close()


def chat_prompt(
    formatter: Any,
    tokenize: Callable[[str, bool, bool], list[int]],
    messages: list[BaseMessage],
    stop: list[str],
) -> tuple[list[int], list[int], list[str]]:
    """The prompt's tokens, as llama-cpp-python's chat handlers make them; where its messages
    end (the engine cuts chunks there, so conversations sharing their first messages can share
    their KV cache); and the stop strings with the template's own. `tokenize(text, add_bos,
    special)`."""
    from moot.models._engine import common_prefix

    chat = [_to_llama_message(message) for message in messages]
    result = formatter(messages=chat)
    add_bos = not result.added_special
    tokens = tokenize(result.prompt, add_bos, True)
    cuts = set()
    for end in range(1, len(chat)):
        shorter = formatter(messages=chat[:end]).prompt  # ends in an assistant header
        cuts.add(common_prefix(tokenize(shorter, add_bos, True), tokens))
    template_stop = result.stop if isinstance(result.stop, list) else [result.stop]
    return tokens, sorted(cuts), [*stop, *(s for s in template_stop if s)]


def chat_formatter(model: Any, chat_format: str | None) -> Any:
    """The formatter llama-cpp-python's `Llama` would pick for `model` (a `LlamaModel`):
    `chat_format` by name, else a format recognised from the GGUF's template, else that
    template itself."""
    from llama_cpp import llama_chat_format as formats

    metadata = model.metadata()
    if chat_format is None:
        chat_format = formats.guess_chat_format_from_gguf_metadata(metadata)
        template = metadata.get("tokenizer.chat_template")
        if chat_format is None and template is not None:
            eos, bos = model.token_eos(), model.token_bos()
            return formats.Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos],
            )
        chat_format = chat_format or "llama-2"
    try:
        handler = formats.LlamaChatCompletionHandlerRegistry().get_chat_completion_handler_by_name(
            chat_format
        )
    except ValueError as error:
        raise ModelSpecError(f"unknown chat_format {chat_format!r}: {error}") from error
    # llama-cpp-python registers a formatter wrapped in a handler; the formatter is its closure.
    for cell in getattr(handler, "__closure__", None) or ():
        if callable(cell.cell_contents) and cell.cell_contents is not handler:
            return cell.cell_contents
    raise ModelSpecError(
        f"chat_format {chat_format!r} is a handler, not a prompt format: load the model with "
        "engine=simple to use it"
    )


class LoadedOnce:
    """Loaded models kept for the whole process, one per key, freed at exit (before interpreter
    teardown, where llama-cpp-python's destructors print errors).

    An item has a `lock`, held while a call uses it, and `close()` (False: it could not free
    itself yet). A call that timed out may
    still run in a thread left behind: freeing its context under it crashes the process, so
    `close_all` stops every generation and waits for each item's lock first."""

    grace = 30.0
    """Seconds `close_all` waits, in all, for calls still running (one llama.cpp decode step)."""

    def __init__(self) -> None:
        self._items: dict[Any, Any] = {}
        self._lock = threading.Lock()
        atexit.register(self.close_all)

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._items:
                self._items[key] = load()
            return self._items[key]

    def close_all(self) -> None:
        _cancel_all.set()  # running generations stop at their next token
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
        deadline = time.monotonic() + self.grace
        for item in items:
            idle = item.lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
            if not idle or item.close() is False:
                # Still inside llama.cpp: never freed (the OS takes the memory at exit).
                ctypes.pythonapi.Py_IncRef(ctypes.py_object(item))


_loaded = LoadedOnce()


def _shared_model(path: Path, options: LoadOptions) -> _SharedLlama | _SharedEngine:
    shared_class = _SharedEngine if options.engine == "batched" else _SharedLlama
    shared: _SharedLlama | _SharedEngine = _loaded.get(
        (path, options), lambda: shared_class(path, options)
    )
    return shared


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
    if path.is_dir():
        found = ", ".join(sorted(p.name for p in path.glob("*.gguf"))[:3]) or "none there"
        raise ModelSpecError(f"{path} is a folder, not a GGUF file: name a .gguf in it ({found})")
    if not path.is_file():
        raise ModelSpecError(f"GGUF file not found: {path}: check the path after 'llama:'")
    with path.open("rb") as handle:
        if handle.read(4) != _GGUF_MAGIC:
            raise ModelSpecError(f"{path} is not a GGUF file: llama.cpp loads .gguf models only")
    return path.resolve()


class LocalChatModel(BaseChatModel):
    """What the in-process llama.cpp chat models share: a subclass yields completion chunks
    from `_completion` (llama-cpp-python's streaming shape, then `{"usage": ...}` with optional
    `response_metadata`); streaming, whole replies and async calls are built on it. Async calls
    run in a worker thread and stop at the next token when their task is cancelled."""

    def _completion(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    @property
    def reply_model_name(self) -> str:
        """`response_metadata["model_name"]` of its replies."""
        raise NotImplementedError

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._completion(messages, stop, kwargs):
            generation = _generation_chunk(chunk)
            if generation is None:
                continue
            if generation.text and run_manager:
                run_manager.on_llm_new_token(generation.text)
            yield generation

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return chat_result(self.reply_model_name, self._completion(messages, stop, kwargs))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for item in stream_in_thread(self._stream, messages, stop, kwargs, run_manager):
            yield item

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await generate_in_thread(self._generate, messages, stop, kwargs)


class ChatLlama(LocalChatModel):
    """A GGUF model run in-process by llama.cpp.

    Sampling fields are defaults; any of them can be passed per call. Per call, `logprobs=True`
    and `top_logprobs=k` return token logprobs in `response_metadata["logprobs"]` (OpenAI's
    shape) when the model was loaded with `logprobs=True`.

    A call with a `seed` is reproducible. On the batched engine a seeded call still reuses its
    conversation's cached prefix and decodes batched with other calls: its logits are the same
    bits as when decoded alone (see `moot/models/_engine.py`). On the simple engine it evaluates
    its whole prompt, because there a cached prefix changes logits in the last bits.
    """

    model_path: str
    load: LoadOptions = Field(default_factory=LoadOptions)  # no llama.cpp probe at import
    temperature: float = Field(default=0.7, ge=0)
    max_tokens: int = Field(default=512, ge=1)
    """Most tokens per reply; at least 1 (there is no "unlimited")."""
    top_p: float = Field(default=0.95, gt=0, le=1)
    top_k: int = Field(default=40, ge=0)
    min_p: float = Field(default=0.05, ge=0, le=1)
    repeat_penalty: float = Field(default=1.1, gt=0)
    seed: int | None = None

    _shared: _SharedLlama | _SharedEngine = PrivateAttr()

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
        self._shared = _shared_model(_check_gguf(Path(self.model_path)), self.load)

    @property
    def _llm_type(self) -> str:
        return "llama.cpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        # Sampling defaults too: LangChain's cache key (and moot's call cache) is built from these.
        sampling = {name: getattr(self, name) for name in _SAMPLING}
        load = self.load.model_dump(exclude=_SPEED_ONLY)
        return {"model_path": self.model_path, **load, **sampling}

    @property
    def context_window(self) -> int:
        """Tokens the loaded context holds (llama.cpp may round n_ctx up)."""
        return self._shared.context_window

    @property
    def parameters(self) -> int:
        """The model's number of parameters (protocols word prompts for tiny models apart)."""
        return self._shared.model_facts()[1]

    @property
    def stats(self) -> LlamaStats:
        """Counters shared by every ChatLlama on the same loaded model."""
        return self._shared.stats

    def get_num_tokens(self, text: str) -> int:
        return len(self._shared.tokenize(text))

    def _params(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {name: getattr(self, name) for name in _SAMPLING}
        params.update({key: value for key, value in kwargs.items() if key in _SAMPLING})
        if stop:
            params["stop"] = stop
        if kwargs.get("grammar"):  # a forced tool call (llama_tools)
            params["grammar"] = kwargs["grammar"]
        elif kwargs.get("answer_schema"):  # a typed answer after free reasoning
            from moot.models.llama_tools import answer_grammar

            params["grammar"] = answer_grammar(kwargs["answer_schema"])
        if kwargs.get("logprobs"):
            if not self.load.logprobs and self.load.engine == "simple":
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
        params = self._params(stop, kwargs)
        halt = Halt(kwargs.get("timeout"), kwargs.get("cancel"))
        if isinstance(shared, _SharedEngine):
            yield from self._engine_completion(shared, messages, params, halt)
            return
        llama = shared.llama
        top_logprobs = params.get("top_logprobs")
        reproducible = params.get("seed") is not None
        while not shared.lock.acquire(timeout=0.05):
            halt.raise_if_due()
        try:
            halt.raise_if_due()  # cancelled while it waited: evaluate no prompt
            cache = llama.cache
            if reproducible:
                llama.reset()
                llama.cache = None
            llama.stop_check = halt.due  # type: ignore[attr-defined]
            if "grammar" in params:
                from llama_cpp import LlamaGrammar

                params["grammar"] = LlamaGrammar.from_string(params["grammar"], verbose=False)
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

    def _engine_request(
        self,
        shared: _SharedEngine,
        messages: list[BaseMessage],
        params: dict[str, Any],
        halt: Halt,
        emit: Callable[[Any], None],
    ) -> Request:
        from moot.models._engine import Request, Sampling

        tokens, cuts, stop = shared.prompt(messages, params.get("stop") or [])
        sampling = Sampling(
            temperature=params["temperature"],
            top_p=params["top_p"],
            top_k=params["top_k"],
            min_p=params["min_p"],
            repeat_penalty=params["repeat_penalty"],
            seed=params["seed"],
            max_tokens=params["max_tokens"],
            top_logprobs=params.get("top_logprobs"),
            grammar=params.get("grammar"),
        )
        return Request(
            prompt=tokens, cuts=cuts, sampling=sampling, stop=stop, emit=emit, halted=halt.due
        )

    def _engine_completion(
        self,
        shared: _SharedEngine,
        messages: list[BaseMessage],
        params: dict[str, Any],
        halt: Halt,
    ) -> Iterator[dict[str, Any]]:
        """Chunks of one request on the batched engine; a halt ends this request alone."""
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        request = self._engine_request(shared, messages, params, halt, items.put)
        shared.engine.submit(request)
        try:
            while True:
                try:
                    item = items.get(timeout=0.05)
                except queue.Empty:
                    halt.raise_if_due()  # also while the request waits for a free sequence
                    continue
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield {"usage": shared.count(item["usage"])} if "usage" in item else item
            halt.raise_if_due()  # the generation was cut short
        finally:  # a caller that stopped early (halted, closed) frees its sequence first
            shared.engine.abandon(request, wait=True)

    async def _aengine_completion(
        self,
        shared: _SharedEngine,
        messages: list[BaseMessage],
        params: dict[str, Any],
        halt: Halt,
    ) -> AsyncIterator[dict[str, Any]]:
        """`_engine_completion` without a thread: the worker hands chunks to the event loop."""
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(items.put_nowait, item)

        request = self._engine_request(shared, messages, params, halt, emit)
        shared.engine.submit(request)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(items.get(), timeout=0.05)
                except TimeoutError:
                    halt.raise_if_due()
                    continue
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield {"usage": shared.count(item["usage"])} if "usage" in item else item
            halt.raise_if_due()
        finally:  # a cancelled task frees its sequence now, or after the step in flight
            shared.engine.abandon(request)

    async def _aengine_whole(
        self,
        shared: _SharedEngine,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        halt: Halt,
    ) -> list[dict[str, Any]]:
        """All chunks of one request, the event loop woken once at the end rather than per
        token (with many concurrent calls, per-token wake-ups crowd a server's loop)."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[BaseException | None] = loop.create_future()
        chunks: list[dict[str, Any]] = []

        def settle(item: BaseException | None) -> None:
            if not ended.done():
                ended.set_result(item)

        def emit(item: Any) -> None:
            if item is None or isinstance(item, BaseException):
                loop.call_soon_threadsafe(settle, item)
            else:
                chunks.append(item)

        request = self._engine_request(shared, messages, self._params(stop, kwargs), halt, emit)
        shared.engine.submit(request)
        try:
            while not ended.done():
                await asyncio.wait({ended}, timeout=0.05)
                if not ended.done():
                    halt.raise_if_due()
        finally:  # a cancelled task frees its sequence now, or after the step in flight
            shared.engine.abandon(request)
        if (error := ended.result()) is not None:
            raise error
        halt.raise_if_due()
        return [{"usage": shared.count(c["usage"])} if "usage" in c else c for c in chunks]

    @property
    def reply_model_name(self) -> str:
        return Path(self.model_path).name

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """This model with `tools`: it is prompted in its template's tool format and its calls
        are read back (`moot/models/llama_tools.py`). Models whose chat template knows nothing
        of tools are refused."""
        from langchain_core.utils.function_calling import convert_to_openai_tool

        from moot.models.llama_tools import SMALL_MODEL, LlamaTools, template_knows_tools

        metadata, parameters = self._shared.model_facts()
        if not template_knows_tools(metadata.get("tokenizer.chat_template")):
            raise ConfigError(
                f"{Path(self.model_path).name} cannot call tools: its chat template has no tool "
                "format (small models such as SmolLM2 were not trained to call tools); use a "
                "model that can, e.g. Qwen2.5-Instruct GGUFs"
            )
        specs = [convert_to_openai_tool(tool) for tool in tools]
        worked = (getattr(tools[0], "metadata", None) or {}).get("moot_example") if tools else None
        small = parameters < SMALL_MODEL
        names = [spec["function"]["name"] for spec in specs]
        if tool_choice is not None and tool_choice not in ("auto", "none", "required", "any"):
            if tool_choice not in names:
                raise ConfigError(f"tool_choice names no bound tool: '{tool_choice}'")
            forced: bool | str = tool_choice
        else:
            forced = tool_choice in ("required", "any")
        return LlamaTools(self, specs, example=(worked or True) if small else False, forced=forced)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """On the batched engine, chunks come straight from its worker; on the simple one,
        `_stream` runs in a worker thread. Either way a cancelled task stops its generation at
        the next token, so an abandoned call frees the model."""
        shared = self._shared
        if isinstance(shared, _SharedEngine):
            halt = Halt(kwargs.get("timeout"), kwargs.get("cancel"))
            params = self._params(stop, kwargs)
            async for chunk in self._aengine_completion(shared, messages, params, halt):
                generation = _generation_chunk(chunk)
                if generation is None:
                    continue
                if run_manager and generation.text:
                    await run_manager.on_llm_new_token(generation.text, chunk=generation)
                yield generation
            return
        async for item in super()._astream(messages, stop, run_manager, **kwargs):
            yield item

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        shared = self._shared
        if isinstance(shared, _SharedEngine):
            halt = Halt(kwargs.get("timeout"), kwargs.get("cancel"))
            chunks = await self._aengine_whole(shared, messages, stop, kwargs, halt)
            return chat_result(self.reply_model_name, chunks)
        return await super()._agenerate(messages, stop, run_manager, **kwargs)


def chat_result(model_name: str, chunks: Iterable[dict[str, Any]]) -> ChatResult:
    """The whole reply from completion chunks (text, logprobs, finish reason, usage)."""
    text: list[str] = []
    logprobs: list[dict[str, Any]] = []
    metadata: dict[str, Any] = {"model_name": model_name}
    usage: UsageMetadata | None = None
    for chunk in chunks:
        if "usage" in chunk:
            usage = chunk["usage"]
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


async def stream_in_thread(
    stream: Callable[..., Iterator[ChatGenerationChunk]],
    messages: list[BaseMessage],
    stop: list[str] | None,
    kwargs: dict[str, Any],
    run_manager: AsyncCallbackManagerForLLMRun | None,
) -> AsyncIterator[ChatGenerationChunk]:
    """A model's `_stream` run in a worker thread; a cancelled task sets the call's `cancel`
    event, so the generation stops at its next token and frees the model."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()
    finished = object()

    def work() -> None:
        try:
            for chunk in stream(messages, stop, None, cancel=cancel, **kwargs):
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


async def generate_in_thread(
    generate: Callable[..., ChatResult],
    messages: list[BaseMessage],
    stop: list[str] | None,
    kwargs: dict[str, Any],
) -> ChatResult:
    """A model's `_generate` run in a worker thread, stopped at its next token if cancelled."""
    cancel = threading.Event()
    call = functools.partial(generate, messages, stop, None, cancel=cancel, **kwargs)
    try:
        return await asyncio.get_running_loop().run_in_executor(None, call)
    except asyncio.CancelledError:
        cancel.set()  # the worker thread stops at its next token
        raise


class Halt:
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


def _generation_chunk(chunk: dict[str, Any]) -> ChatGenerationChunk | None:
    """A completion chunk as LangChain's chunk (None for one that carries nothing)."""
    if "usage" in chunk:
        message = AIMessageChunk(
            content="",
            usage_metadata=chunk["usage"],
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
