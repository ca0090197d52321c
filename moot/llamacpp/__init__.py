"""The one llama.cpp layer: loading, contexts, batches, samplers, prompt chunking and KV
sequences; the simple and batched engines behind one `Engine` interface. The chat models of
`moot.models` and token fusion (`moot.fusion`) both run on it.

    engine = default_cache.get(key, lambda: open_engine(path, LoadOptions(engine="batched")))
    request = Request([{"role": "user", "content": "Hi"}], Sampling(max_tokens=32))
    for chunk in Completion(engine, request, Halt(timeout=10, cancel=None)):
        ...  # llama-cpp-python's streaming chunks, then `usage_chunk`

Nothing here imports llama-cpp-python (or numpy) until a model is loaded.
"""

from moot.llamacpp.batched import BatchedEngine
from moot.llamacpp.cache import Closable, ModelCache, default_cache
from moot.llamacpp.cancel import Cancellation, Halt, default_cancellation
from moot.llamacpp.chunks import Chunk, Text, chunk, usage_chunk
from moot.llamacpp.completion import Completion
from moot.llamacpp.context import Context, KVSequence
from moot.llamacpp.decoder import Decoder
from moot.llamacpp.devices import (
    Device,
    backend_devices,
    default_gpu_layers,
    gpu_offload_supported,
    usable_cores,
)
from moot.llamacpp.engine import (
    Engine,
    EngineStats,
    LoadOptions,
    Request,
)
from moot.llamacpp.model import LoadedModel, check_gguf, require_llama_cpp
from moot.llamacpp.opening import open_engine
from moot.llamacpp.prompt import (
    ChatMessage,
    chat_formatter,
    chat_prompt,
    common_prefix,
    prompt_chunks,
)
from moot.llamacpp.sampling import (
    PENALTY_LAST_N,
    SAMPLING_FIELDS,
    Sampler,
    Sampling,
    SamplingSettings,
    repeat_penalised,
    token_logprobs,
)
from moot.llamacpp.serial import SerialEngine
from moot.llamacpp.simple import SimpleEngine

__all__ = [
    "PENALTY_LAST_N",
    "SAMPLING_FIELDS",
    "BatchedEngine",
    "Cancellation",
    "ChatMessage",
    "Chunk",
    "Closable",
    "Completion",
    "Context",
    "Decoder",
    "Device",
    "Engine",
    "EngineStats",
    "Halt",
    "KVSequence",
    "LoadOptions",
    "LoadedModel",
    "ModelCache",
    "Request",
    "Sampler",
    "Sampling",
    "SamplingSettings",
    "SerialEngine",
    "SimpleEngine",
    "Text",
    "backend_devices",
    "chat_formatter",
    "chat_prompt",
    "check_gguf",
    "chunk",
    "common_prefix",
    "default_cache",
    "default_cancellation",
    "default_gpu_layers",
    "gpu_offload_supported",
    "open_engine",
    "prompt_chunks",
    "require_llama_cpp",
    "repeat_penalised",
    "token_logprobs",
    "usable_cores",
    "usage_chunk",
]
