"""Cost in money from the prices a user states, and the call cache: identical seeded or greedy
calls answered from a real SQLite file, hits counted and free; on scripted models for exact
counts and on the embedded model for a real one."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest
from langchain_core.messages import AIMessage

import moot
from moot.cache import CallCache
from moot.cli import main
from moot.errors import ProgramError
from moot.testing import ScriptedChatModel
from moot.tools.program import run_program
from moot.tools.sandbox import SandboxLimits


def counting_model(**options) -> ScriptedChatModel:
    return ScriptedChatModel(
        respond=lambda messages, info: f"{info.agent} says\nAnswer: 7", **options
    )


def debate(model, *, seed: int | None = 1, temperature: float | None = 0.7, rounds: int = 2):
    agents = [
        moot.Agent(name=f"a{i}", model=model, seed=seed, temperature=temperature) for i in range(3)
    ]
    return moot.Society(agents=agents, protocol=moot.Debate(rounds=rounds))


# -- cost --------------------------------------------------------------------------------------


def test_prices_give_every_turn_and_the_run_a_cost():
    model = moot.load_model(counting_model(), price_in=2.0, price_out=10.0)
    result = debate(model).run("What is 3 + 4?")
    for turn in result.turns:
        expected = (turn.usage.input_tokens * 2.0 + turn.usage.output_tokens * 10.0) / 1e6
        assert turn.usage.cost == pytest.approx(expected)
        assert turn.usage.cost > 0
    assert result.usage.cost == pytest.approx(sum(turn.usage.cost for turn in result.turns))


def test_unpriced_models_cost_none_and_priced_ones_add_up_alone():
    priced = moot.load_model(counting_model(), price_out=1.0)  # price_in defaults to 0
    free = counting_model()
    agents = [moot.Agent(name="paid", model=priced), moot.Agent(name="free", model=free)]
    result = moot.Society(agents=agents, protocol=moot.Debate(rounds=1)).run("2 + 5?")
    paid, unpaid = result.turns
    assert unpaid.usage.cost is None
    assert paid.usage.cost == pytest.approx(paid.usage.output_tokens / 1e6)
    assert result.usage.cost == pytest.approx(paid.usage.cost)
    assert debate(counting_model()).run("1 + 6?").usage.cost is None


@pytest.mark.parametrize("price", [-1, "cheap", float("nan"), float("inf"), True])
def test_a_bad_price_is_refused_with_its_name(price):
    with pytest.raises(moot.ModelSpecError, match="price_in must be a price per million"):
        moot.load_model("test", price_in=price)


def test_a_society_file_states_prices_per_model(tmp_path):
    path = tmp_path / "society.yaml"
    path.write_text(
        "models:\n"
        "  cheap: {spec: test, price_in: 0.5, price_out: 1.5}\n"
        "agents:\n"
        "  - {name: a, model: cheap}\n"
        "  - {name: b, model: cheap}\n"
        "protocol: {kind: debate, rounds: 1}\n"
    )
    result = moot.load_society(path).run("What is 40 + 2?")
    usage = result.usage
    assert usage.cost == pytest.approx((usage.input_tokens * 0.5 + usage.output_tokens * 1.5) / 1e6)
    bad = tmp_path / "bad.yaml"
    bad.write_text(path.read_text().replace("price_out: 1.5", "price_out: -3"))
    with pytest.raises(moot.ConfigError, match=r"bad.yaml:2: models.cheap: price_out must be"):
        moot.load_society(bad)


# -- the call cache ----------------------------------------------------------------------------


def test_a_seeded_run_is_answered_from_the_cache_the_second_time(tmp_path):
    cache = tmp_path / "calls.sqlite"
    model = moot.load_model(counting_model(), price_in=1.0, price_out=1.0)
    first = debate(model).run("What is 3 + 4?", cache=cache)
    calls = len(model.calls)
    assert calls == 6 and first.usage.cached_calls == 0 and first.usage.calls == 6
    second = debate(model).run("What is 3 + 4?", cache=cache)
    assert len(model.calls) == calls  # no model ran
    assert [t.text for t in second.turns] == [t.text for t in first.turns]
    assert second.usage.cached_calls == 6 and second.usage.calls == 0
    assert second.usage.cost == 0.0  # hits cost nothing
    assert second.usage.total_tokens == first.usage.total_tokens  # the stored replies' tokens
    assert sqlite3.connect(cache).execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 6


def test_another_seed_or_question_is_a_miss_and_a_shorter_debate_a_hit(tmp_path):
    cache = CallCache(tmp_path / "calls.sqlite")
    model = counting_model()
    debate(model, seed=1).run("What is 3 + 4?", cache=cache)
    for seed, question in ((2, "What is 3 + 4?"), (1, "What is 3 + 5?")):
        before = len(model.calls)
        result = debate(model, seed=seed).run(question, cache=cache)
        assert len(model.calls) == before + 6 and result.usage.cached_calls == 0
    shorter = debate(model, seed=1, rounds=1).run("What is 3 + 4?", cache=cache)
    assert shorter.usage.cached_calls == 3  # round 1 of the same seeded debate: the same calls
    assert len(cache) == 6 + 6 + 6


def test_unseeded_calls_at_temperature_above_0_are_not_cached_unless_asked(tmp_path):
    model = counting_model()
    cache = tmp_path / "calls.sqlite"
    for _ in range(2):
        result = debate(model, seed=None, temperature=0.7).run("1 + 1?", cache=cache)
        assert result.usage.cached_calls == 0
    greedy = debate(model, seed=None, temperature=0.0)
    greedy.run("1 + 1?", cache=cache)
    assert greedy.run("1 + 1?", cache=cache).usage.cached_calls == 6
    everything = CallCache(cache, unseeded=True)
    debate(model, seed=None, temperature=0.7).run("2 + 2?", cache=everything)
    again = debate(model, seed=None, temperature=0.7).run("2 + 2?", cache=everything)
    assert again.usage.cached_calls == 6


def test_failed_turns_are_not_cached(tmp_path):
    failing = {"a1"}

    def respond(messages, info):
        if info.agent in failing:
            raise RuntimeError("the server fell over")
        return "Answer: 5"

    model = ScriptedChatModel(respond=respond)
    cache = tmp_path / "calls.sqlite"
    first = debate(model, rounds=1).run("2 + 3?", cache=cache)
    assert [turn.failed for turn in first.turns] == [False, True, False]
    failing.clear()
    second = debate(model, rounds=1).run("2 + 3?", cache=cache)
    assert second.usage.cached_calls == 2 and not any(turn.failed for turn in second.turns)


def test_a_program_that_fails_wherever_it_runs_fails_again_from_the_cache(tmp_path):
    """A reply with no program, or whose program raises or prints nothing, is kept with why it
    failed: a replay fails it the same way, its text and tokens kept, and calls no model."""
    replies = {
        "p0": "No program, I just know.\nAnswer: 3",
        "p1": "```python\nprint(1 / 0)\n```",
        "p2": "```python\nx = 2 + 1\n```",
    }
    model = ScriptedChatModel(respond=lambda messages, info: replies[info.agent])
    agents = [moot.Agent(name=name, kind="program", model=model, seed=1) for name in replies]
    society = moot.Society(agents=agents, protocol=moot.Debate(rounds=1))
    cache = tmp_path / "calls.sqlite"
    first = society.run("What is 1 + 2?", cache=cache)
    second = society.run("What is 1 + 2?", cache=cache)
    assert len(model.calls) == 3 and second.usage.cached_calls == 3 and second.usage.calls == 0
    assert all(turn.failed for turn in first.turns + second.turns)
    assert [t.error for t in second.turns] == [t.error for t in first.turns]
    assert "no program" in (first.turns[0].error or "")
    assert "ZeroDivisionError" in (first.turns[1].error or "")
    assert "printed nothing" in (first.turns[2].error or "")
    assert [t.text for t in second.turns] == [t.text for t in first.turns]
    assert second.turns[1].usage.output_tokens == first.turns[1].usage.output_tokens > 0


def test_a_program_stopped_by_a_limit_is_tried_again_not_cached():
    """Past its time limit a program may finish on a quieter machine: not a lasting failure."""
    agent = moot.Agent(name="p", kind="program", model=ScriptedChatModel(respond=lambda m: ""))
    endless = AIMessage(content="```python\nwhile True:\n    pass\n```")
    with pytest.raises(ProgramError) as stopped:
        run_program(agent, endless, SandboxLimits(cpu_seconds=1, wall_seconds=0.5))
    assert "was stopped" in str(stopped.value) and not stopped.value.lasting
    hog = AIMessage(content="```python\nprint(len('a' * 10**10))\n```")
    with pytest.raises(ProgramError) as out_of_memory:  # where memory runs out is the machine's
        run_program(agent, hog)
    assert "MemoryError" in str(out_of_memory.value) and not out_of_memory.value.lasting
    with pytest.raises(ProgramError) as raised:
        run_program(agent, AIMessage(content="```python\nraise ValueError\n```"))
    assert raised.value.lasting


def test_async_runs_use_the_cache_too(tmp_path):
    cache = tmp_path / "calls.sqlite"
    model = counting_model()
    asyncio.run(debate(model).arun("What is 3 + 4?", cache=cache))
    result = asyncio.run(debate(model).arun("What is 3 + 4?", cache=cache))
    assert result.usage.cached_calls == 6 and len(model.calls) == 6


def test_files_that_are_not_a_cache_are_refused(tmp_path):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(moot.ConfigError, match="garbage.sqlite is not a moot call cache"):
        CallCache(garbage)
    other = tmp_path / "checkpoints.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE checkpoints (id TEXT)")
    with pytest.raises(moot.ConfigError, match="holds other tables"):
        debate(counting_model()).run("1 + 2?", cache=other)
    with pytest.raises(moot.ConfigError, match="no folder"):
        CallCache(tmp_path / "missing" / "calls.sqlite")


def test_a_damaged_entry_is_a_miss_not_a_crash(tmp_path):
    cache = tmp_path / "calls.sqlite"
    model = counting_model()
    debate(model, rounds=1).run("1 + 2?", cache=cache)
    with sqlite3.connect(cache) as db:
        db.execute("UPDATE calls SET reply = '{broken'")
    result = debate(model, rounds=1).run("1 + 2?", cache=cache)
    assert result.usage.cached_calls == 0 and result.answer == "7"


def test_the_embedded_model_at_temperature_0_is_cached(embedded_model, tmp_path):
    cache = tmp_path / "calls.sqlite"
    agents = [
        moot.Agent(name=f"a{i}", model=embedded_model, temperature=0.0, max_tokens=24)
        for i in range(2)
    ]
    society = moot.Society(agents=agents, protocol=moot.Debate(rounds=1))
    first = society.run("What is 12 + 30?", cache=cache)
    second = society.run("What is 12 + 30?", cache=cache)
    assert first.usage.calls == 2 and second.usage.calls == 0
    assert second.usage.cached_calls == 2
    assert [t.text for t in second.turns] == [t.text for t in first.turns]
    assert [t.usage.output_tokens for t in second.turns] == [
        t.usage.output_tokens for t in first.turns
    ]


def test_cli_shows_cost_and_cache_hits(tmp_path, capsys):
    cache = str(tmp_path / "calls.sqlite")
    command = ["debate", "What is 2+3?", "--model", "test", "--agents", "2", "--rounds", "1"]
    command += ["--temperature", "0", "--cache", cache, "-o", "price_in=3", "-o", "price_out=15"]
    assert main([*command, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["usage"]
    assert first["cost"] > 0 and first["cached_calls"] == 0
    assert main(command) == 0
    shown = capsys.readouterr().out
    assert "cached" in shown and "cost" in shown
    assert main(["debate", "hi", "--model", "test", "--cache-unseeded"]) == 2
    assert "--cache-unseeded needs --cache" in capsys.readouterr().err


# -- Hugging Face models -----------------------------------------------------------------------


def hf_cache_holding(folder, repo: str, filename: str):
    """A Hugging Face cache folder that holds `repo`'s `filename` (the embedded SmolLM2), laid
    out as huggingface_hub lays it out: refs/main names a snapshot that holds the file."""
    from moot.models.embedded import embedded_model_path

    commit = "0123456789abcdef0123456789abcdef01234567"
    stored = folder / f"models--{repo.replace('/', '--')}"
    (stored / "refs").mkdir(parents=True)
    (stored / "refs" / "main").write_text(commit)
    snapshot = stored / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / filename).symlink_to(embedded_model_path())
    return folder


def moot_offline(cache, *args):
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    command = [sys.executable, "-m", "moot.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_an_hf_model_loads_from_the_cache_offline(tmp_path):
    cache = hf_cache_holding(tmp_path / "hub", "moot-tests/smollm2", "smollm2.gguf")
    spec = "hf:moot-tests/smollm2/smollm2.gguf"
    run = moot_offline(
        cache, "debate", "2+3?", "--model", spec, "--agents", "1", "--rounds", "1",
        "--max-tokens", "8", "--json",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["usage"]["output_tokens"] > 0
    missing = "hf:moot-tests/smollm2/other.gguf"
    run = moot_offline(cache, "debate", "2+3?", "--model", missing)
    assert run.returncode == 2
    assert "is not in the Hugging Face cache" in run.stderr and "HF_HUB_OFFLINE" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    "spec, message",
    [
        ("hf:owner/repo", "does not name a GGUF file"),
        ("hf:owner//file.gguf", "does not name a GGUF file"),
        ("hf:owner/repo/model.bin", "does not name a GGUF file"),
        ("hf:owner/repo/*Q4_K_M.gguf", "name the file exactly"),
    ],
)
def test_a_malformed_hf_spec_says_what_to_write(spec, message):
    with pytest.raises(moot.ModelSpecError, match=message):
        moot.load_model(spec)


@pytest.mark.parametrize(
    ("engine", "layouts"),
    [
        ("simple", [{"n_threads": 2}, {"n_threads": 1}]),
        ("batched", [{"n_threads": 2}, {"n_threads": 1, "contexts": 2, "sequences": 2}]),
    ],
)
def test_another_thread_layout_gives_the_same_replies_and_finds_the_cache(
    engine, layouts, tmp_path
):
    # Threads and contexts are left out of the cache key because they never change a reply:
    # checked here on the real model, then the cache is found across layouts.
    cache = tmp_path / "calls.sqlite"
    first, second = (
        moot.load_model("local", engine=engine, n_ctx=1024, max_tokens=24, **layout)
        for layout in layouts
    )
    fresh = debate(first).run("What is 12 + 30?", cache=cache)
    again = debate(second).run("What is 12 + 30?")
    assert [t.text for t in again.turns] == [t.text for t in fresh.turns]
    cached = debate(second).run("What is 12 + 30?", cache=cache)
    assert cached.usage.calls == 0 and cached.usage.cached_calls == len(fresh.turns)
    assert [t.text for t in cached.turns] == [t.text for t in fresh.turns]
