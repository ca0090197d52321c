"""Local models put every layer on the GPU where llama.cpp can offload, none on a CPU build, and
an explicit n_gpu_layers always wins (issue 43). The probe of the build is monkeypatched, so
these run on any machine; the CPU path is tested on real models by the other tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import llama_cpp
import pytest
from langchain_core.messages import HumanMessage

import moot
import moot.fusion.model as fusion_model
import moot.llamacpp.devices as devices
from moot.cache import CallCache
from moot.cli import main
from moot.fusion import FusedChatModel
from moot.llamacpp import (
    BatchedEngine,
    LoadedModel,
    LoadOptions,
    ModelCache,
    default_gpu_layers,
    gpu_offload_supported,
)
from moot.models.embedded import embedded_model_path
from moot.models.embeddings import LlamaEmbeddings
from moot.models.llama import ChatLlama

ROOT = Path(__file__).resolve().parent.parent
GPU, CPU = True, False
BUILDS = pytest.mark.parametrize(("gpu", "layers"), [(GPU, -1), (CPU, 0)], ids=["gpu", "cpu"])


class Loaded(Exception):
    """Raised where a model would load, carrying the n_gpu_layers it was given."""

    def __init__(self, n_gpu_layers: int) -> None:
        self.n_gpu_layers = n_gpu_layers


@pytest.fixture
def build(monkeypatch):
    """`build(gpu)`: llama.cpp reports that it can offload (a GPU build) or cannot."""

    def set_build(gpu: bool) -> None:
        monkeypatch.setattr(devices, "gpu_offload_supported", lambda: gpu)

    return set_build


@BUILDS
def test_the_default_is_every_layer_on_a_gpu_build_and_none_on_a_cpu_build(build, gpu, layers):
    build(gpu)
    assert default_gpu_layers() == layers


@BUILDS
@pytest.mark.parametrize("engine", ["simple", "batched"])
def test_chat_model_load_options_follow_the_build(build, gpu, layers, engine):
    build(gpu)
    assert LoadOptions(engine=engine).n_gpu_layers == layers


@pytest.mark.parametrize(("gpu", "explicit"), [(GPU, 0), (GPU, 12), (CPU, -1), (CPU, 12)])
def test_an_explicit_n_gpu_layers_wins_over_the_build(build, gpu, explicit):
    build(gpu)
    assert LoadOptions(n_gpu_layers=explicit).n_gpu_layers == explicit


@BUILDS
def test_a_chat_model_loads_with_the_builds_default(build, monkeypatch, gpu, layers):
    build(gpu)
    given: list[LoadOptions] = []

    class Recording(ModelCache):
        """Records what would be loaded, and loads nothing."""

        def get(self, key: Any, load: Any) -> Any:
            given.append(key[-1])

    monkeypatch.setattr(ChatLlama, "loaded_models", Recording())
    ChatLlama.from_path(embedded_model_path())
    ChatLlama.from_path(embedded_model_path(), engine="batched", n_gpu_layers=7)
    assert [options.n_gpu_layers for options in given] == [layers, 7]


@BUILDS
def test_the_batched_engine_loads_its_model_with_the_builds_default(
    build, monkeypatch, gpu, layers
):
    build(gpu)

    def load(path: Path, n_gpu_layers: int, repack: bool = False) -> Any:
        raise Loaded(n_gpu_layers)

    monkeypatch.setattr(LoadedModel, "load", load)
    with pytest.raises(Loaded) as loaded:
        BatchedEngine(Path(embedded_model_path()), LoadOptions(engine="batched"))
    assert loaded.value.n_gpu_layers == layers


@BUILDS
def test_fusion_offloads_with_the_builds_default_unless_told(build, monkeypatch, gpu, layers):
    build(gpu)

    def shared_decoder(path: Path, copy: int = 0, **options: Any) -> Any:
        raise Loaded(options["n_gpu_layers"])

    monkeypatch.setattr(fusion_model, "shared_decoder", shared_decoder)
    with pytest.raises(Loaded) as loaded:
        FusedChatModel(models=["local", "local"])
    assert loaded.value.n_gpu_layers == layers
    with pytest.raises(Loaded) as loaded:
        FusedChatModel(models=["local", "local"], n_gpu_layers=3)
    assert loaded.value.n_gpu_layers == 3


@BUILDS
def test_embeddings_offload_with_the_builds_default_unless_told(build, monkeypatch, gpu, layers):
    build(gpu)

    class FakeLlama:
        def __init__(self, **options: Any) -> None:
            raise Loaded(options["n_gpu_layers"])

    monkeypatch.setattr(llama_cpp, "Llama", FakeLlama)
    with pytest.raises(Loaded) as loaded:
        LlamaEmbeddings()
    assert loaded.value.n_gpu_layers == layers
    with pytest.raises(Loaded) as loaded:
        LlamaEmbeddings(n_gpu_layers=5)
    assert loaded.value.n_gpu_layers == 5


def test_a_call_cached_on_a_cpu_build_is_not_replayed_on_a_gpu_build(build):
    """GPU kernels change logits in the last bits: n_gpu_layers stays in the call cache key."""
    build(CPU)
    on_cpu = LoadOptions().reply_options()
    build(GPU)
    on_gpu = LoadOptions().reply_options()
    assert on_cpu != on_gpu and on_cpu["n_gpu_layers"] == 0


@pytest.mark.parametrize(
    ("gpu", "says"),
    [
        (GPU, "GPU offload: on; local models offload every layer unless told (n_gpu_layers=-1"),
        (CPU, "GPU offload: off (llama.cpp has no GPU backend, or it found no device)"),
    ],
    ids=["gpu", "cpu"],
)
def test_moot_models_names_the_build_the_offload_and_the_threads(build, capsys, gpu, says):
    build(gpu)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "llama.cpp (llama-cpp-python " in out and "backends " in out and "devices: " in out
    assert says in out
    assert "threads: " in out and "usable cores" in out


def test_the_gpu_check_says_in_one_line_that_there_is_no_gpu_and_exits_0():
    if gpu_offload_supported():
        pytest.skip("llama.cpp can offload here: the check would measure, not refuse")
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("gpu_check: no GPU offload here (llama.cpp backends: ")
    assert len(run.stdout.splitlines()) == 1


def test_an_option_added_later_keeps_old_cache_keys_at_its_old_behaviour():
    """`draft` came after caches were written: draft=0 (replies as before it existed) keeps the
    key those caches hold; drafting changes tokens, so draft=3 is in the key."""
    assert "draft" not in LoadOptions().reply_options()
    assert LoadOptions(draft=3).reply_options()["draft"] == 3
    assert "n_gpu_layers" in LoadOptions().reply_options()  # not left out when at its default


def test_calls_cached_while_draft_was_in_the_key_are_found_too(
    embedded_model, monkeypatch, tmp_path
):
    """Between the option's arrival and `AS_BEFORE`, keys held draft=0: a call stored then
    answers now (read after the current key), and the current key is where replies go."""
    cache = CallCache(tmp_path / "calls.sqlite")
    messages, options = [HumanMessage(content="Say hi.")], {"seed": 1}
    keys = cache.keys(embedded_model, messages, options)
    agent = moot.Agent(name="a", model=embedded_model, seed=1, max_tokens=8)
    society = moot.Society(agents=[agent], protocol=moot.Debate(rounds=1))
    with monkeypatch.context() as then:  # moot as it was in that time
        then.setattr(LoadOptions, "AS_BEFORE", {})
        assert cache.keys(embedded_model, messages, options) == [keys[1]] != keys[:1]
        first = society.run("Say hi.", cache=cache)
    assert first.usage.calls >= 1 and first.usage.cached_calls == 0 and len(cache) == 1
    again = society.run("Say hi.", cache=cache)
    assert again.usage.cached_calls == 1 and again.usage.calls == 0
    assert again.turns[0].text == first.turns[0].text
