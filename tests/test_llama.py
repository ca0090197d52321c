"""The llama.cpp backend on the real embedded GGUF (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import BaseModel

import moot
from moot.models.embedded import embedded_model_path
from moot.models.llama import ChatLlama
from tests.conftest import loop_ticks_while

pytestmark = pytest.mark.integration


def test_local_spec_loads_the_embedded_gguf(embedded_model):
    assert isinstance(embedded_model, ChatLlama)
    assert Path(embedded_model.model_path) == embedded_model_path()
    assert embedded_model_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_reply_reports_usage(embedded_model):
    reply = embedded_model.invoke("What is 2+2?", max_tokens=16)
    assert isinstance(reply, AIMessage) and reply.text
    usage = reply.usage_metadata
    assert usage["input_tokens"] > 5
    assert 0 < usage["output_tokens"] <= 16
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert reply.response_metadata["finish_reason"] in {"stop", "length"}


def test_same_file_is_loaded_once_and_shared(embedded_model):
    again = moot.load_model("local")
    direct = moot.load_model(f"llama:{embedded_model_path()}")
    assert again.engine is embedded_model.engine
    assert direct.engine is embedded_model.engine
    other_settings = moot.load_model("local", n_ctx=512)
    assert other_settings.engine is not embedded_model.engine


def test_seed_makes_sampling_reproducible(embedded_model):
    prompt = "Name a colour."
    first = embedded_model.invoke(prompt, temperature=1.0, seed=11, max_tokens=12).text
    embedded_model.invoke("Something else.", max_tokens=4)  # leaves other state in the KV cache
    second = embedded_model.invoke(prompt, temperature=1.0, seed=11, max_tokens=12).text
    assert first == second
    others = {
        embedded_model.invoke(prompt, temperature=1.0, seed=s, max_tokens=12).text for s in range(4)
    }
    assert len(others) > 1


def test_threads_sharing_the_model_all_get_replies(embedded_model):
    replies: list[str] = []
    errors: list[BaseException] = []

    def ask(number: int) -> None:
        try:
            replies.append(embedded_model.invoke(f"What is {number}+1?", max_tokens=8).text)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(replies) == 4


def test_stream_yields_text_then_usage(embedded_model):
    chunks = list(embedded_model.stream("Say hello.", max_tokens=8))
    assert len(chunks) > 2
    whole = sum(chunks[1:], chunks[0])
    assert whole.text
    assert 0 < whole.usage_metadata["output_tokens"] <= 8


async def test_async_call_does_not_block_the_event_loop(embedded_model):
    call = embedded_model.ainvoke("Write a short sentence about cats.", max_tokens=48)
    reply, ticks = await loop_ticks_while(call)
    assert reply.text
    assert ticks >= 3


@pytest.mark.parametrize(
    "options", [{"engine": "simple", "logprobs": True}, {"engine": "batched"}], ids=str
)
def test_logprobs(options):
    model = moot.load_model("local", n_ctx=512, **options)
    reply = model.invoke(
        "Is the sky blue? Answer yes or no.", logprobs=True, top_logprobs=3, max_tokens=4
    )
    content = reply.response_metadata["logprobs"]["content"]
    assert len(content) >= 1
    first = content[0]
    assert first["logprob"] <= 0.0
    assert len(first["top_logprobs"]) == 3


def test_logprobs_on_the_simple_engine_need_loading_for_them():
    model = moot.load_model("local", engine="simple", n_ctx=512)
    with pytest.raises(moot.ConfigError, match="load it with logprobs=True"):
        model.invoke("hi", logprobs=True)


@pytest.mark.parametrize(
    "options", [{"engine": "simple"}, {"engine": "batched", "sequences": 2}], ids=str
)
def test_prefix_cache_skips_an_agents_own_earlier_conversation(options):
    # A model of its own (n_ctx 1000, not the 1024 other tests load): sequences that earlier
    # tests left busy or filled would change what this test's calls may evict.
    model = moot.load_model("local", n_ctx=1000, **options)
    other = [SystemMessage("You are b."), HumanMessage("Tell me about rivers.")]
    mine = [SystemMessage("You are a."), HumanMessage("Tell me about mountains.")]
    first = model.invoke(mine, max_tokens=24)
    model.invoke(other, max_tokens=24)  # another agent evicts the live KV cache
    before = model.stats.model_copy()
    model.invoke([*mine, first, HumanMessage("And lakes?")], max_tokens=8)
    sent = model.stats.prompt_tokens - before.prompt_tokens
    evaluated = model.stats.prompt_tokens_evaluated - before.prompt_tokens_evaluated
    assert evaluated < sent / 2


@pytest.mark.parametrize("engine", ["simple", "batched"])
def test_a_prompt_longer_than_the_context_is_a_clear_error(engine):
    model = moot.load_model("local", n_ctx=256, prefix_cache=False, engine=engine)
    with pytest.raises(moot.ContextLengthError, match="does not fit the context window of 256"):
        model.invoke("word " * 600)


def test_unknown_option_and_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(moot.ModelSpecError, match="unknown llama option"):
        moot.load_model("local", n_kontext=5)
    with pytest.raises(moot.ModelSpecError, match="GGUF file not found"):
        moot.load_model(f"llama:{tmp_path / 'missing.gguf'}")
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("hello")
    with pytest.raises(moot.ModelSpecError, match="is not a GGUF file"):
        moot.load_model(f"llama:{not_gguf}")


def test_debate_on_the_embedded_model(embedded_model):
    agents = [moot.Agent(name=f"a{i}", model="local", max_tokens=48, seed=i) for i in range(3)]
    society = moot.Society(agents=agents, protocol=moot.Debate(rounds=2))
    result = society.run("What is 12+30?")
    assert result.rounds == 2 and len(result.turns) == 6
    assert result.usage.calls == 6
    assert all(turn.usage.input_tokens > 0 for turn in result.turns if not turn.failed)
    assert result.usage.total_tokens == sum(t.usage.total_tokens for t in result.turns)
    # Round-2 prompts carry the round-1 replies, so they are longer.
    assert min(t.usage.input_tokens for t in result.round_turns(2)) > max(
        t.usage.input_tokens for t in result.round_turns(1)
    )


# -- time limits and cancelling stop the generation itself ------------------------------------

LONG = "Write a very long story about a lighthouse keeper, at least 3000 words."


def test_a_timeout_stops_the_generation_and_frees_the_model(embedded_model):
    import time

    before = embedded_model.stats.output_tokens
    started = time.monotonic()
    with pytest.raises(moot.MootError, match="did not finish within 0.5 s"):
        embedded_model.invoke(LONG, max_tokens=3000, temperature=0, timeout=0.5)
    cut_off = time.monotonic() - started
    assert cut_off < 5  # not the minutes 3000 tokens would take
    generated = embedded_model.stats.output_tokens - before
    assert generated < 3000  # it stopped part-way (on a busy machine, maybe before a token)
    reply = embedded_model.invoke("Say hi.", max_tokens=8)  # the model is free again
    assert 0 < reply.usage_metadata["output_tokens"] <= 8


async def test_a_cancelled_async_call_stops_generating(embedded_model):
    import asyncio

    task = asyncio.create_task(embedded_model.ainvoke(LONG, max_tokens=3000, temperature=0))
    await asyncio.sleep(0.5)
    before = embedded_model.stats.output_tokens
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    reply = await asyncio.wait_for(embedded_model.ainvoke("Say hi.", max_tokens=8), timeout=20)
    assert reply.text
    # The abandoned call generated at most a few more tokens before it saw the cancel.
    assert embedded_model.stats.output_tokens - before < 100


def test_an_agents_timeout_reaches_llama(embedded_model):
    # Greedy, so the reply is long every time (sampled, it sometimes ended within 0.5 s).
    slow = moot.Agent(
        name="slow", model=embedded_model, timeout=0.5, max_tokens=3000, temperature=0
    )
    quick = moot.Agent(name="quick", model=embedded_model, max_tokens=16)
    result = moot.Society(agents=[slow, quick], protocol=moot.Debate(rounds=1)).run(LONG)
    slow_turn, quick_turn = result.turns
    assert slow_turn.failed and "within 0.5 s" in slow_turn.error
    assert quick_turn.text and not quick_turn.failed


class Sum(BaseModel):
    value: int


@pytest.mark.parametrize("engine", ["simple", "batched"])
def test_typed_answers_end_with_a_json_object_of_the_schema(engine):
    # SmolLM2 writes no JSON of its own accord; a grammar holds the end of each reply to the
    # schema, while the reasoning before it stays free.
    model = moot.load_model("local", engine=engine, n_ctx=1024)
    society = moot.Society(
        agents=[
            moot.Agent(name=f"a{i}", model=model, temperature=0.7, seed=i, max_tokens=200)
            for i in range(3)
        ],
        protocol=moot.Debate(rounds=1),
        answer_schema=Sum,
        vote_on="value",
    )
    result = society.run("What is 12+30?")
    for turn in result.turns:
        assert turn.answer is not None and turn.answer_error is None, turn.text
        assert Sum.model_validate_json(turn.text[turn.text.rindex("{") :])
    assert isinstance(result.answer_object, Sum)


_TIMED_OUT_AT_EXIT = """
import json, moot
model = moot.load_model("local", engine="{engine}")
# 0.2 s: the 135M ends a sampled reply in 0.65 s at the least on 2 cores (1 s was flaky)
agents = [moot.Agent(name=f"a{{i}}", model=model, timeout=0.2, max_tokens=3000) for i in range(2)]
society = moot.Society(agents=agents, protocol=moot.Debate(rounds=1))
result = society.run("Write a very long story about a dragon, 3000 words.")
print(json.dumps([turn.error is not None for turn in result.turns]))
"""


@pytest.mark.integration
@pytest.mark.parametrize("engine", ["simple", "batched"])
def test_the_process_exits_cleanly_while_a_timed_out_call_still_decodes(engine):
    # The call left behind by the timeout is still in llama_decode when the interpreter exits;
    # freeing its context under it was a segfault (status 139) on every run.
    done = subprocess.run(
        [sys.executable, "-c", _TIMED_OUT_AT_EXIT.format(engine=engine)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [True, True]
