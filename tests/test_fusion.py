"""Token-level fusion on real llama.cpp: the embedded SmolLM2 paired with a Q8_0 copy of itself
(one tokenizer, two sets of weights), so every code path runs with exact expectations."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

gguf = pytest.importorskip("gguf", reason="fusion needs the 'fusion' extra")  # in moot[dev]

import moot  # noqa: E402
import moot.merge  # noqa: E402
from moot.cli import main  # noqa: E402
from moot.errors import ConfigError  # noqa: E402
from moot.fusion import FusedChatModel, LearnedGate  # noqa: E402
from moot.fusion.train import (  # noqa: E402
    ScoredPositions,
    _logistic_regression,
    deferred_log_likelihood,
    fit_gate,
    train_gate,
)

pytestmark = pytest.mark.integration

QUESTION = [HumanMessage("Name three colours.")]
GREEDY = {"temperature": 0, "max_tokens": 30}


@pytest.fixture(scope="session")
def q8_copy(tmp_path_factory) -> Path:
    """The embedded model's weights written as Q8_0 (moot merge of one model)."""
    config = {"merge_method": "linear", "models": [{"model": "local"}], "dtype": "q8_0"}
    return moot.merge.run(config, tmp_path_factory.mktemp("fusion") / "q8.gguf", progress=False)


def alone(path: str, **kwargs: object) -> str:
    """A model's own greedy reply on the batched engine (the same kernels as fusion)."""
    model = moot.load_model(f"llama:{path}" if path != "local" else "local", engine="batched")
    return model.invoke(QUESTION, **{**GREEDY, **kwargs}).text


def fused(q8: Path, **fields: object) -> FusedChatModel:
    """Not repacked, so each model computes what it does alone on the batched engine."""
    return FusedChatModel(models=["local", str(q8)], **{**GREEDY, "repack": False, **fields})


@pytest.mark.parametrize("strategy", ["prob", "logit"])
def test_all_weight_on_one_model_gives_its_own_greedy_tokens(q8_copy, strategy):
    first, second = alone("local"), alone(str(q8_copy))
    assert first != second  # the two weights differ enough to tell apart
    reply = fused(q8_copy, strategy=strategy, weights=[1, 0]).invoke(QUESTION)
    assert reply.text == first
    assert reply.response_metadata["fusion"]["evaluated_by_model"][1] == 0  # weight 0: never run
    reply = fused(q8_copy, strategy=strategy, weights=[0, 3]).invoke(QUESTION)
    assert reply.text == second


def test_a_model_fused_with_itself_runs_on_two_contexts_and_gives_its_own_tokens():
    model = FusedChatModel(models=["local", "local"], strategy="prob", repack=False, **GREEDY)
    assert model.decoders[0] is not model.decoders[1]
    assert model.invoke(QUESTION).text == alone("local")


def test_colm_threshold_0_is_the_base_and_1_the_assistant(q8_copy):
    base = fused(q8_copy, strategy="colm", threshold=0).invoke(QUESTION)
    assert base.text == alone("local")
    info = base.response_metadata["fusion"]
    assert info["deferral_rate"] == 0 and set(info["sources"]) == {0}
    assert info["evaluated_by_model"][1] == 0  # never consulted, never fed
    both = fused(q8_copy, strategy="prob").invoke(QUESTION).usage_metadata["input_tokens"]
    assert base.usage_metadata["input_tokens"] * 2 == both  # the prompt read once, not twice
    assistant = fused(q8_copy, strategy="colm", threshold=1).invoke(QUESTION)
    assert assistant.text == alone(str(q8_copy))
    assert assistant.response_metadata["fusion"]["deferral_rate"] == 1


def test_defer_first_hands_the_first_tokens_to_the_assistant(q8_copy):
    spec = f"fuse:local+{q8_copy}?strategy=colm&threshold=0&defer_first=3"
    reply = moot.load_model(spec, **GREEDY).invoke(QUESTION)
    info = reply.response_metadata["fusion"]
    assert info["sources"][:4] == [1, 1, 1, 0] and set(info["sources"][3:]) == {0}
    assert info["deferral_rate"] == 3 / len(info["sources"])
    base = fused(q8_copy, strategy="colm", threshold=0).invoke(QUESTION)
    assert base.response_metadata["fusion"]["deferral_rate"] == 0


def test_an_even_mix_differs_from_both_and_credits_both(q8_copy):
    reply = fused(q8_copy, strategy="prob", max_tokens=40).invoke(QUESTION)
    info = reply.response_metadata["fusion"]
    assert (
        len(info["sources"])
        == reply.usage_metadata["output_tokens"]
        == sum(info["tokens_by_model"])
    )
    assert reply.usage_metadata["input_tokens"] % 2 == 0  # the prompt, read by both models


def test_a_seeded_fused_run_repeats_and_temperature_varies_it(q8_copy):
    model = fused(q8_copy, strategy="prob", temperature=0.9, max_tokens=30)
    first = model.invoke(QUESTION, seed=7).text
    other = model.invoke(QUESTION, seed=8).text
    assert model.invoke(QUESTION, seed=7).text == first
    assert fused(q8_copy, strategy="logit", temperature=0.9).invoke(QUESTION, seed=7).text
    assert other != first


def test_streamed_text_and_metadata_equal_the_whole_reply(q8_copy):
    model = fused(q8_copy, strategy="colm", threshold=0.6)
    whole = model.invoke(QUESTION)
    chunks = list(model.stream(QUESTION))
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    assert total.text == whole.text
    streamed, replied = total.response_metadata["fusion"], whole.response_metadata["fusion"]
    streamed.pop("evaluated_by_model"), replied.pop("evaluated_by_model")  # caches differ
    assert streamed == replied
    assert total.usage_metadata == whole.usage_metadata
    assert asyncio.run(model.ainvoke(QUESTION)).text == whole.text


def test_logprobs_come_from_the_fused_distribution(q8_copy):
    reply = fused(q8_copy, strategy="prob").invoke(QUESTION, logprobs=True, top_logprobs=2)
    content = reply.response_metadata["logprobs"]["content"]
    assert len(content) == reply.usage_metadata["output_tokens"]
    assert all(entry["logprob"] <= 0 and len(entry["top_logprobs"]) == 2 for entry in content)
    assert content[0]["logprob"] == content[0]["top_logprobs"][0]["logprob"]  # greedy: the top


def test_a_timeout_ends_the_call_and_frees_the_models(q8_copy):
    model = fused(q8_copy, strategy="prob", max_tokens=400)
    with pytest.raises(moot.MootError, match="did not finish within"):
        model.invoke([HumanMessage("Write a long story about a lighthouse.")], timeout=0.3)
    assert model.invoke(QUESTION).text  # the locks were released


def test_a_cancelled_async_call_frees_the_models(q8_copy):
    model = fused(q8_copy, strategy="prob", max_tokens=400)

    async def cancel_one() -> str:
        task = asyncio.create_task(model.ainvoke([HumanMessage("Write a long story.")]))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(40):  # the generation stops at its next token, not after 400
            if not any(decoder.lock.locked() for decoder in model.decoders):
                break
            await asyncio.sleep(0.05)
        assert not any(decoder.lock.locked() for decoder in model.decoders)
        return (await asyncio.wait_for(model.ainvoke(QUESTION, max_tokens=8), 30)).text

    assert asyncio.run(cancel_one())


def test_calls_from_two_threads_take_turns(q8_copy):
    model = fused(q8_copy, strategy="logit")
    expected = model.invoke(QUESTION).text
    replies: list[str] = []
    threads = [
        threading.Thread(target=lambda: replies.append(model.invoke(QUESTION).text))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert replies == [expected, expected]


def test_a_prompt_longer_than_the_context_is_a_clear_error(q8_copy):
    model = fused(q8_copy, n_ctx=64)
    with pytest.raises(moot.ContextLengthError, match="does not fit the context window of 64"):
        model.invoke([HumanMessage("word " * 200)])


# -- specs, society, CLI ----------------------------------------------------------------------


def test_the_spec_makes_the_model_and_bad_specs_say_what_is_wrong(q8_copy, tmp_path):
    model = moot.load_model(f"fuse:local+{q8_copy}?strategy=logit&weights=2,1", temperature=0)
    assert isinstance(model, FusedChatModel)
    assert (model.strategy, model.weights, model.temperature) == ("logit", [2.0, 1.0], 0)
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_text("hello")
    for spec, message in [
        ("fuse:local", "names 1 model"),
        (f"fuse:local+{q8_copy}?strategy=vote", "strategy"),
        (f"fuse:local+{q8_copy}?weights=1,2,3", "3 weights for 2 models"),
        (f"fuse:local+{q8_copy}?weights=1,-1", "at least 0"),
        (f"fuse:local+{q8_copy}?weights=nan,1", "finite number"),
        (f"fuse:local+{q8_copy}?strategy", "key=value pairs"),
        (f"fuse:local+{q8_copy}?strategy=colm&threshold=nan", "threshold"),
        (f"fuse:local+{q8_copy}?colour=red", "unknown fuse option"),
        (f"fuse:local+{q8_copy}?threshold=0.5", "gate, threshold and defer_first are for colm"),
        (f"fuse:local+{q8_copy}?defer_first=2", "defer_first are for colm, not prob"),
        (f"fuse:local+{q8_copy}?strategy=colm&defer_first=-1", "defer_first"),
        (f"fuse:local+{q8_copy}+local?strategy=colm", "colm takes two models"),
        (f"fuse:local+{q8_copy}?strategy=colm&threshold=2", "threshold"),
        ("fuse:local+openai:gpt-4o", "local llama.cpp models only"),
        (f"fuse:local+{tmp_path}/missing.gguf", "GGUF file not found"),
        (f"fuse:local+{not_gguf}", "not a GGUF file"),
        (f"fuse:local+{q8_copy}?strategy=colm&gate={tmp_path}/none.json", "gate file not found"),
    ]:
        with pytest.raises(moot.MootError, match=message):
            moot.load_model(spec)


def test_models_with_different_tokenizers_are_refused(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "other.gguf"), arch="llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(["<s>", "</s>", "a", "b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(moot.ConfigError, match="different tokenizers") as caught:
        moot.load_model(f"fuse:local+{tmp_path / 'other.gguf'}")
    assert "tokenizer.ggml.pre: 'smollm' vs 'qwen2'" in str(caught.value)
    assert "not supported" in str(caught.value)


def test_a_society_of_fused_agents_records_deferral_per_turn(q8_copy, capsys):
    model = fused(q8_copy, strategy="colm", threshold=0.7, max_tokens=32)
    society = moot.Society(
        agents=[moot.Agent(name=f"a{i}", model=model) for i in range(2)],
        protocol=moot.Debate(rounds=2),
    )
    result = society.run("What is 6*7?")
    assert len(result.turns) == 4 and not any(turn.failed for turn in result.turns)
    for turn in result.turns:
        assert turn.fusion is not None and turn.fusion.strategy == "colm"
        assert turn.fusion.deferral_rate is not None
        assert sum(turn.fusion.tokens_by_model) == turn.usage.output_tokens
    spec = f"fuse:local+{q8_copy}?strategy=colm&threshold=0.7"
    args = ["debate", "What is 6*7?", "--agents", "2", "--rounds", "1", "--model", spec]
    assert main([*args, "-o", "max_tokens=24"]) == 0
    assert "deferred" in capsys.readouterr().out


def test_train_gate_learns_and_the_gate_drives_colm(q8_copy, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    pairs = [
        {"question": f"What is {a} plus {b}?", "answer": f"{a} plus {b} is {a + b}."}
        for a, b in [(3, 4), (12, 30), (7, 8), (25, 17)]
    ]
    data.write_text("\n".join(json.dumps(pair) for pair in pairs), encoding="utf-8")
    out = tmp_path / "gate.json"
    args = ["fusion", "train-gate", "--base", "local", "--assistant", str(q8_copy)]
    assert main([*args, "--data", str(data), "-o", str(out)]) == 0
    assert "answer tokens" in capsys.readouterr().out
    gate = LearnedGate.load(out)
    assert gate.hidden_size == 576 and gate.training is not None
    assert gate.training.examples == 4 and gate.training.positions > 20
    assert 0 < gate.training.defer_share < 1
    assert 0 <= gate.training.thresholds["30%"] <= gate.training.thresholds["10%"] <= 1
    assert gate.training.objective == "marginal likelihood"
    likelihood = gate.training.log_likelihood
    assert likelihood["base alone"] != likelihood["assistant alone"]
    assert min(likelihood.values()) < 0 and set(likelihood) == {
        "base alone",
        "assistant alone",
        "gate, 30% deferred",
        "base top probability, 30% deferred",
    }
    model = fused(q8_copy, strategy="colm", gate=str(out))
    info = model.invoke(QUESTION).response_metadata["fusion"]
    assert info["deferral_rate"] is not None
    never = fused(q8_copy, strategy="colm", gate=str(out), threshold=1.0).invoke(QUESTION)
    assert never.text == alone("local")  # P(defer) >= 1 never holds

    # Asked in Du et al.'s words, the models read other hidden states: another gate.
    du_out = tmp_path / "gate-du.json"
    du_args = ["--data", str(data), "-o", str(du_out), "--prompts", "du-gsm8k"]
    assert main([*args, *du_args, "--objective", "weak"]) == 0
    assert "Can you solve the following math problem? {question}" in capsys.readouterr().out
    du_gate = LearnedGate.load(du_out)
    assert du_gate.training is not None and gate.training.question_template == "{question}"
    assert du_gate.training.objective == "weak labels"
    assert du_gate.training.accuracy >= max(
        du_gate.training.defer_share, 1 - du_gate.training.defer_share
    )
    assert du_gate.training.question_template.endswith(
        "in the form \\boxed{answer}, at the end of your response. "
    )
    assert du_gate.training.positions == gate.training.positions  # the same answer tokens
    assert du_gate.weights != gate.weights
    with pytest.raises(ConfigError, match="must contain {question}"):
        train_gate("local", str(q8_copy), [("x", "y")], question_template="Solve: ")

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x", "answer": "y"}\nnot json\n', encoding="utf-8")
    assert main([*args, "--data", str(bad), "-o", str(out)]) == 2
    assert f"{bad}:2: not valid JSON" in capsys.readouterr().err
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"question": "x"}\n', encoding="utf-8")
    assert main([*args, "--data", str(missing), "-o", str(out)]) == 2
    assert "no 'answer' to learn from" in capsys.readouterr().err


def test_a_gate_for_another_base_model_is_refused(q8_copy, tmp_path):
    path = tmp_path / "gate.json"
    size = 8
    LearnedGate(
        base="other.gguf",
        assistant="x.gguf",
        hidden_size=size,
        mean=[0.0] * size,
        scale=[1.0] * size,
        weights=[0.0] * size,
        bias=0.0,
    ).save(path)
    with pytest.raises(moot.ConfigError, match="hidden size 8.*train a gate for this base"):
        fused(q8_copy, strategy="colm", gate=str(path))
    path.write_text('{"kind": "moot-colm-gate"}')
    with pytest.raises(moot.ConfigError, match="not a usable gate"):
        LearnedGate.load(path)


def test_the_logistic_regression_separates_what_is_separable():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 3))
    y = (x[:, 0] - 2 * x[:, 2] > 0.3).astype(float)
    weights, bias = _logistic_regression(x, y, l2=0.01)
    predicted = (x @ weights + bias) > 0
    assert (predicted == (y == 1)).mean() > 0.97
    assert weights[0] > 0 > weights[2] and abs(weights[1]) < abs(weights[0]) / 3


def test_the_marginal_likelihood_ranks_big_gains_before_many_small_ones():
    """Co-LLM's second stage: the weak labels mark every position where the assistant is
    surer, a large gain or a tiny one alike; the marginal likelihood weighs them by the gain,
    so for a 30% budget it defers the positions where the base is badly wrong."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = 3000
    x = rng.standard_normal((rows, 4))
    big = x[:, 0] > 0.84  # 20%: the base gives the reference 0.05, the assistant 0.9
    slight = (x[:, 1] > 0) & ~big  # 40%: 0.8 against 0.82
    base = np.where(big, np.log(0.05), np.log(0.8))
    assistant = np.where(big, np.log(0.9), np.where(slight, np.log(0.82), np.log(0.78)))
    top = rng.uniform(0.3, 1.0, rows)  # no help here
    scored = ScoredPositions(
        "b.gguf", "a.gguf", 30, "{question}", x, base, assistant, top, np.arange(rows) // 100
    )
    weak, marginal = (fit_gate(scored, objective=name) for name in ("weak", "marginal"))
    assert weak.training is not None and marginal.training is not None
    best = deferred_log_likelihood(scored, big + 0.5 * slight, 0.3)
    at_30 = "gate, 30% deferred"
    assert weak.training.log_likelihood[at_30] < best - 0.2  # it defers many slight gains
    assert marginal.training.log_likelihood[at_30] > best - 0.08
    assert marginal.weights[0] > marginal.weights[1] and weak.weights[1] > weak.weights[0]
    assert marginal.training.log_likelihood["base alone"] == float(base.mean())
    with pytest.raises(ConfigError, match="objective must be 'marginal' or 'weak'"):
        fit_gate(scored, objective="best")  # type: ignore[arg-type]


def test_repacked_and_exact_fusions_are_cached_apart(q8_copy):
    # repacking changes logits in the last bits: a cached reply of one is not the other's
    exact, repacked = fused(q8_copy), fused(q8_copy, repack=True)
    assert exact.decoders[0] is not repacked.decoders[0]  # each loaded its own way
    assert exact._identifying_params != repacked._identifying_params
    assert repacked.invoke(QUESTION).text  # the default, repacked, answers too
