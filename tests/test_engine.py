"""The batched llama.cpp engine on the real embedded GGUF: requests decoded together."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

import moot
from moot.llamacpp import (
    BatchedEngine,
    Cancellation,
    Completion,
    Halt,
    LoadOptions,
    ModelCache,
    Request,
    Sampling,
    open_engine,
)
from moot.models.embedded import embedded_model_path
from moot.models.llama import ChatLlama

pytestmark = pytest.mark.integration

SYSTEM = SystemMessage(
    "You are a patient teacher of arithmetic. Explain each step of your working in short "
    "sentences, and finish with a line of the form 'Answer: N'."
)
QUESTIONS = ["What is 12+30?", "What is 7*8?", "What is 100-37?", "What is 9*9?", "What is 5+5?"]
LONG = "Write a very long story about a lighthouse keeper, at least 3000 words."
"""Asked greedily, the embedded model writes all 3000 tokens: sampled, it may stop early."""


def engine_model(**options: object) -> ChatLlama:
    model = moot.load_model("local", **{"n_ctx": 1024, "engine": "batched", **options})
    assert isinstance(model, ChatLlama)
    return model


def ask_all(model: ChatLlama, prompts: list[list], **kwargs: object) -> list[AIMessage]:
    """The prompts sent at once, from one thread each."""
    with ThreadPoolExecutor(len(prompts)) as pool:
        return list(pool.map(lambda messages: model.invoke(messages, **kwargs), prompts))


def prompts(n: int) -> list[list]:
    return [[SYSTEM, HumanMessage(QUESTIONS[i % len(QUESTIONS)])] for i in range(n)]


@pytest.mark.parametrize("draft", [0, 6])
@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 0.9, "seed": 7}])
def test_concurrent_requests_give_the_tokens_of_sequential_ones(sampling, draft):
    model = engine_model(sequences=4, draft=draft)
    alone = [model.invoke(messages, max_tokens=40, **sampling).text for messages in prompts(4)]
    model_b = engine_model(sequences=4, n_batch=64, draft=draft)  # another load: a cold cache
    together = [r.text for r in ask_all(model_b, prompts(4), max_tokens=40, **sampling)]
    assert together == alone


WORKED = (
    "Alice has 3 apples. Bob gives her 5 more apples. Then she eats 2 apples. "
    "So Alice has 3 + 5 - 2 = 6 apples. Answer: 6"
)
REPEAT = [
    HumanMessage("Alice has 3 apples, Bob gives her 5, she eats 2. How many? Explain."),
    AIMessage(WORKED),
    HumanMessage(f"Another agent answered:\n\n{WORKED}\n\nGive your reasoning again."),
]
"""A conversation whose reply copies much of its prompt: drafts are found and kept."""


def repeating(worked: str) -> list:
    return [
        HumanMessage("Solve it and explain."),
        AIMessage(worked),
        HumanMessage(f"Another agent answered:\n\n{worked}\n\nGive your reasoning again."),
    ]


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 0.8, "seed": 3}])
def test_drafted_sequences_decoded_together_give_the_tokens_they_give_alone(sampling):
    conversations = [
        REPEAT,
        repeating("Tom reads 12 pages a day for 5 days, so he reads 12 * 5 = 60 pages. Answer: 60"),
        repeating("A box holds 6 eggs. 4 boxes hold 6 * 4 = 24 eggs. Answer: 24"),
    ]
    alone_model = engine_model(sequences=4, draft=8)
    alone = [alone_model.invoke(c, max_tokens=60, **sampling).text for c in conversations]
    together_model = engine_model(sequences=4, draft=8, n_batch=64)  # a cold cache
    together = [r.text for r in ask_all(together_model, conversations, max_tokens=60, **sampling)]
    assert together == alone
    assert together_model.stats.draft_kept > 0


def test_drafts_from_the_prompt_are_kept_and_counted():
    model = engine_model(draft=8)
    before = model.stats.model_copy()
    reply = model.invoke(REPEAT, max_tokens=80, temperature=0)
    stats = model.stats
    out = stats.output_tokens - before.output_tokens
    steps = stats.decode_steps - before.decode_steps
    drafted, kept = stats.drafted - before.drafted, stats.draft_kept - before.draft_kept
    assert reply.usage_metadata["output_tokens"] == out
    assert 0 < kept <= drafted and steps < out  # more than one token a step
    assert model.invoke(REPEAT, max_tokens=80, temperature=0).text == reply.text


def test_more_drafts_than_a_batch_holds_are_decoded_in_turn():
    # Two drafts of 3 (4 tokens each) and a batch of 4: they cannot share one decode.
    model = engine_model(sequences=2, n_batch=4, draft=3)
    alone = engine_model(sequences=2, n_batch=4, draft=3, n_threads=1)  # another engine
    conversations = [REPEAT, repeating("A box holds 6 eggs, so 4 boxes hold 24 eggs. Answer: 24")]
    expected = [alone.invoke(c, max_tokens=30, temperature=0).text for c in conversations]
    together = [r.text for r in ask_all(model, conversations, max_tokens=30, temperature=0)]
    assert together == expected
    assert model.stats.draft_kept > 0
    assert model.invoke("Say hi.", max_tokens=8).text  # the context is sound afterwards


def test_a_reply_that_ends_inside_a_draft_counts_only_what_it_kept():
    said = [
        HumanMessage("Say exactly: The answer is 42."),
        AIMessage("The answer is 42."),
        HumanMessage("Say exactly: The answer is 42."),
        AIMessage("The answer is 42."),
        HumanMessage("Say exactly: The answer is 42."),
    ]
    model = engine_model(sequences=1, draft=8)
    reply = model.invoke(said, max_tokens=200, temperature=0)
    assert reply.response_metadata["finish_reason"] == "stop"
    assert model.stats.draft_kept <= model.stats.output_tokens
    (slot,) = model.engine.workers[0].slots  # nothing past the reply's end in the cache
    usage = reply.usage_metadata
    assert len(slot.kv.tokens) <= usage["input_tokens"] + usage["output_tokens"]


def test_drafts_do_not_end_a_reply_early_at_a_full_context():
    plain = engine_model(n_ctx=1024, draft=0).invoke(REPEAT, max_tokens=60, temperature=0)
    needed = plain.usage_metadata["input_tokens"] + 12  # room for a dozen tokens
    lengths = {
        draft: engine_model(n_ctx=needed, draft=draft)
        .invoke(REPEAT, max_tokens=60, temperature=0)
        .usage_metadata["output_tokens"]
        for draft in (0, 8)
    }
    assert lengths[8] == lengths[0]


@pytest.mark.parametrize("max_tokens", [1, 2, 5, 13])
def test_a_draft_never_runs_past_max_tokens(max_tokens):
    model = engine_model(draft=8)
    longer = model.invoke(REPEAT, max_tokens=40, temperature=0)
    reply = model.invoke(REPEAT, max_tokens=max_tokens, temperature=0)
    assert reply.usage_metadata["output_tokens"] == max_tokens
    assert reply.response_metadata["finish_reason"] == "length"
    assert longer.text.startswith(reply.text)


def test_a_stop_string_inside_a_kept_draft_ends_the_reply_there():
    model = engine_model(draft=8)
    full = model.invoke(REPEAT, max_tokens=60, temperature=0)
    word = next(w for w in ("apples", "Bob", "eats", "has") if w in full.text)
    cut = model.invoke(REPEAT, max_tokens=60, temperature=0, stop=[word])
    assert cut.text == full.text[: full.text.index(word)]
    assert cut.response_metadata["finish_reason"] == "stop"
    # The sequence is free and sound: the whole reply again.
    assert model.invoke(REPEAT, max_tokens=60, temperature=0).text == full.text


@pytest.mark.parametrize("draft", [0, 8])
def test_a_seeded_debate_repeats_exactly_and_reuses_each_agents_history(draft):
    model = engine_model(sequences=4, draft=draft)

    def debate():  # noqa: ANN202
        agents = [moot.Agent(name=f"a{i}", model=model, max_tokens=32, seed=i) for i in range(3)]
        return moot.Society(agents=agents, protocol=moot.Debate(rounds=3)).run("What is 12+30?")

    before = model.stats.model_copy()
    first = debate()
    sent = model.stats.prompt_tokens - before.prompt_tokens
    evaluated = model.stats.prompt_tokens_evaluated - before.prompt_tokens_evaluated
    second = debate()
    assert [t.text for t in first.turns] == [t.text for t in second.turns]
    assert evaluated / sent < 0.6  # own history in each sequence, the shared prefix copied once


def test_a_shared_prefix_is_evaluated_once():
    model = engine_model(sequences=4)
    shared = SystemMessage("Background: " + "the river flows north past the mill. " * 20)
    messages = [[shared, HumanMessage(q)] for q in QUESTIONS[:3]]
    alone = engine_model(sequences=1, n_batch=256)
    expected = [alone.invoke(m, max_tokens=12, temperature=0).text for m in messages]
    before = model.stats.model_copy()
    replies = ask_all(model, messages, max_tokens=12, temperature=0)
    sent = model.stats.prompt_tokens - before.prompt_tokens
    evaluated = model.stats.prompt_tokens_evaluated - before.prompt_tokens_evaluated
    assert [r.text for r in replies] == expected
    assert evaluated < sent / 2  # the ~200-token background once, not three times


def test_more_requests_than_sequences_all_complete_in_order():
    model = engine_model(sequences=2)
    replies = ask_all(model, prompts(7), max_tokens=8, temperature=0)
    assert len(replies) == 7 and all(r.text for r in replies)
    assert all(0 < r.usage_metadata["output_tokens"] <= 8 for r in replies)


def test_a_cancelled_sequence_frees_its_slot_and_the_others_go_on():
    model = engine_model(sequences=2)
    cancel = threading.Event()
    outcome: dict[str, object] = {}

    def long_call() -> None:
        try:
            model.invoke(LONG, max_tokens=3000, temperature=0, cancel=cancel)
        except moot.MootError as error:
            outcome["error"] = error

    worker = threading.Thread(target=long_call)
    worker.start()
    with ThreadPoolExecutor(1) as pool:
        neighbour = pool.submit(model.invoke, "Count from one to ten.", max_tokens=48)
        time.sleep(1.0)
        cancel.set()
        worker.join(timeout=10)
        assert not worker.is_alive()
        assert "cancelled" in str(outcome["error"])
        assert neighbour.result(timeout=60).text  # the batch went on without it
    # Both sequences are free again: two calls run at once.
    assert all(r.text for r in ask_all(model, prompts(2), max_tokens=8))


def test_a_timeout_ends_one_request_not_the_batch():
    model = engine_model(sequences=3)
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(model.invoke, LONG, max_tokens=3000, temperature=0, timeout=1.0)
        quick = pool.submit(model.invoke, "Name three colours.", max_tokens=24)
        with pytest.raises(moot.MootError, match="did not finish within 1 s"):
            slow.result(timeout=30)
        assert quick.result(timeout=60).text


def test_a_stream_closed_early_frees_its_sequence():
    model = engine_model(sequences=1)
    stream = model.stream(LONG, max_tokens=3000, temperature=0)
    next(stream)
    stream.close()
    reply = model.invoke("Say hi.", max_tokens=8)  # would wait forever on a held sequence
    assert reply.text


def test_usage_counts_equal_the_simple_engines():
    batched = engine_model()
    simple = moot.load_model("local", n_ctx=1024, engine="simple", prefix_cache=False)
    for messages in prompts(3):
        mine = batched.invoke(messages, max_tokens=24, temperature=0)
        theirs = simple.invoke(messages, max_tokens=24, temperature=0)
        assert mine.usage_metadata["input_tokens"] == theirs.usage_metadata["input_tokens"]
        if mine.text == theirs.text:
            assert mine.usage_metadata == theirs.usage_metadata


def test_stop_strings_cut_the_reply_and_are_not_shown():
    model = engine_model()
    full = model.invoke("Count from 1 to 20, separated by commas.", max_tokens=60, temperature=0)
    assert "7" in full.text
    cut = model.invoke(
        "Count from 1 to 20, separated by commas.", max_tokens=60, temperature=0, stop=["7"]
    )
    assert cut.text == full.text[: full.text.index("7")]
    assert cut.response_metadata["finish_reason"] == "stop"


def test_streamed_text_equals_the_whole_reply():
    model = engine_model()
    whole = model.invoke("Describe a cat in one sentence.", max_tokens=32, seed=5)
    chunks = list(model.stream("Describe a cat in one sentence.", max_tokens=32, seed=5))
    assert "".join(c.text for c in chunks) == whole.text
    assert sum(chunks[1:], chunks[0]).usage_metadata == whole.usage_metadata


async def test_async_calls_decode_together():
    model = engine_model(sequences=4)
    expected = [model.invoke(m, max_tokens=24, temperature=0).text for m in prompts(4)]
    replies = await asyncio.gather(
        *(model.ainvoke(m, max_tokens=24, temperature=0) for m in prompts(4))
    )
    assert [r.text for r in replies] == expected


async def test_a_cancelled_async_call_frees_its_sequence():
    model = engine_model(sequences=1)
    task = asyncio.create_task(model.ainvoke(LONG, max_tokens=3000, temperature=0))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    reply = await asyncio.wait_for(model.ainvoke("Say hi.", max_tokens=8), timeout=30)
    assert reply.text


def test_absurd_engine_options_are_clear_errors():
    with pytest.raises(moot.ModelSpecError, match="sequences"):
        moot.load_model("local", sequences=0)
    with pytest.raises(moot.ModelSpecError, match="engine"):
        moot.load_model("local", engine="turbo")
    with pytest.raises(moot.ModelSpecError, match="contexts"):
        moot.load_model("local", contexts=1000)
    with pytest.raises(moot.ModelSpecError, match="draft.*not the simple one"):
        moot.load_model("local", engine="simple", draft=3)
    for engine in ("batched", "simple"):
        with pytest.raises(moot.ModelSpecError, match="unknown chat_format 'nonsense'"):
            moot.load_model("local", engine=engine, chat_format="nonsense").invoke("hi")
    with pytest.raises(moot.ModelSpecError, match="draft"):
        moot.load_model("local", engine="batched", draft=99)


def test_the_batched_engine_is_the_default_and_a_handler_format_gets_the_simple_one():
    assert moot.load_model("local").load.engine == "batched"
    assert moot.load_model("local", chat_format="chatml").load.engine == "batched"
    # A handler runs only in llama-cpp-python's own Llama: the simple engine, unasked.
    handler = moot.load_model("local", chat_format="chatml-function-calling", max_tokens=8)
    assert handler.load.engine == "simple"
    assert handler.invoke("Say hi.").usage_metadata["output_tokens"] > 0
    with pytest.raises(moot.ModelSpecError, match="handler, not a prompt format"):
        moot.load_model("local", chat_format="chatml-function-calling", engine="batched").invoke(
            "hi"
        )


def test_two_contexts_share_one_model_and_agree():
    pooled = engine_model(sequences=2, contexts=2, n_threads=1)
    expected = [pooled.invoke(m, max_tokens=24, temperature=0).text for m in prompts(4)]
    assert [r.text for r in ask_all(pooled, prompts(4), max_tokens=24, temperature=0)] == expected


def test_a_failed_decode_fails_its_calls_and_the_engine_goes_on(monkeypatch):
    import llama_cpp

    model = engine_model(sequences=2)
    model.invoke("Warm up.", max_tokens=2)
    real_decode = llama_cpp.llama_decode
    failed: list[bool] = []

    def fail_once(ctx: object, batch: object) -> int:
        if not failed:
            failed.append(True)
            return -3  # what llama.cpp returns when a compute fails
        return real_decode(ctx, batch)

    monkeypatch.setattr(llama_cpp, "llama_decode", fail_once)
    with pytest.raises(RuntimeError, match="llama_decode failed with status -3"):
        model.invoke("Say hi.", max_tokens=8)
    assert model.invoke("Say hi.", max_tokens=8).text  # the worker lives


def test_cancelled_timed_out_and_closed_calls_leave_no_sequence_held():
    # The engine frees an abandoned call's sequence at its next step (after the decode in
    # flight), with no lending count left behind, so a conversation that goes on afterwards
    # still finds its own sequence and evaluates only its new tokens.
    model = engine_model(sequences=2)
    engine = model.engine
    assert isinstance(engine, BatchedEngine)
    question = [SYSTEM, HumanMessage("What is 12+30?")]

    def settled() -> bool:
        return engine.busy() == 0

    first = model.invoke(question, max_tokens=16, temperature=0)
    cancel = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        cancelled = pool.submit(model.invoke, LONG, max_tokens=3000, temperature=0, cancel=cancel)
        time.sleep(0.5)
        cancel.set()
        with pytest.raises(moot.MootError, match="cancelled"):
            cancelled.result(timeout=30)
    with pytest.raises(moot.MootError, match="did not finish"):
        model.invoke(LONG, max_tokens=3000, temperature=0, timeout=0.5)
    stream = model.stream(LONG, max_tokens=3000, temperature=0)
    next(stream)
    stream.close()
    deadline = time.monotonic() + 30
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert settled()

    before = model.stats.prompt_tokens_evaluated
    follow_up = [*question, AIMessage(first.text), HumanMessage("And 12+31?")]
    reply = model.invoke(follow_up, max_tokens=8, temperature=0)
    evaluated = model.stats.prompt_tokens_evaluated - before
    assert evaluated < reply.usage_metadata["input_tokens"] / 2


# -- the engine interface, a model cache and a cancellation made by the test -----------------


@pytest.mark.parametrize("engine", ["simple", "batched"])
def test_closing_a_cache_stops_its_generations_and_frees_its_engines(engine):
    cancellation = Cancellation()
    cache = ModelCache(cancellation)
    options = LoadOptions(engine=engine, n_ctx=1024)
    path = embedded_model_path()
    loaded = cache.get(("engine", path), lambda: open_engine(path, options))
    assert cache.get(("engine", path), lambda: pytest.fail("loaded twice")) is loaded
    messages = [{"role": "user", "content": LONG}]
    request = Request(messages, Sampling(temperature=0, max_tokens=3000))
    chunks = iter(Completion(loaded, request, Halt(None, None, cancellation)))
    next(chunks)  # generating
    cache.close_all()
    with pytest.raises(moot.MootError, match="cancelled"):
        list(chunks)
    assert len(cache) == 0
    with pytest.raises(moot.ModelSpecError, match="closed"):
        loaded.submit(Request(messages, Sampling()))


def test_a_cache_keeps_an_item_that_cannot_close_yet():
    class Busy:
        def __init__(self) -> None:
            self.closed_with: list[float] = []

        def close(self, grace: float) -> bool:
            self.closed_with.append(grace)
            return False  # still inside llama.cpp: never freed

    cache = ModelCache()
    cache.grace = 0.5
    busy = cache.get("busy", Busy)
    cache.close_all()
    assert cache.cancellation.is_set()
    assert busy.closed_with and busy.closed_with[0] <= 0.5
    assert len(cache) == 0


def test_a_halt_says_why_a_call_must_stop():
    cancellation = Cancellation()
    halt = Halt(None, None, cancellation)
    assert not halt.due()
    cancellation.cancel_all()
    with pytest.raises(moot.MootError, match="cancelled"):
        halt.raise_if_due()
    with pytest.raises(moot.MootError, match="did not finish within 0 s"):
        Halt(0, None, Cancellation()).raise_if_due()


@pytest.mark.parametrize("engine", ["simple", "batched"])
def test_unseeded_calls_draw_new_samples_in_each_load(engine):
    """llama-cpp-python seeds an unseeded call from its load-time seed, the same in every
    process: the simple engine once gave every run of a CLI debate the same answers."""
    ask = [{"role": "user", "content": "Invent a name for a new colour and describe it."}]
    replies = set()
    for n_batch in (64, 128, 256):  # three loads, as three runs of a command would have
        path = embedded_model_path()
        loaded = open_engine(path, LoadOptions(engine=engine, n_ctx=512, n_batch=n_batch))
        try:
            request = Request(ask, Sampling(temperature=1.0, max_tokens=24))
            chunks = Completion(loaded, request, Halt(None, None))
            replies.add(
                "".join(
                    str(c["choices"][0].get("delta", {}).get("content") or "")
                    for c in chunks
                    if c.get("choices")
                )
            )
        finally:
            loaded.close()
    assert len(replies) > 1
