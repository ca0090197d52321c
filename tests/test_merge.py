"""`moot merge`: every method against a plain numpy reference on tiny GGUF models written here,
chunked merging equal to whole-tensor merging, clear errors, and real merges of the embedded
SmolLM2 that llama.cpp loads and runs."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="merging needs the 'merge' extra")  # in moot[dev]

import moot  # noqa: E402
import moot.merge  # noqa: E402
import moot.merge.writer as merge_run  # noqa: E402
from moot.cli import main  # noqa: E402
from moot.gguf import GGUFFile  # noqa: E402
from moot.merge.methods import TensorPlan, _BandSearch, gather_stats, random  # noqa: E402

T = gguf.GGMLQuantizationType
TENSORS = {  # name: (rows, columns, type); 1-D when rows is 0
    "token_embd.weight": (8, 64, T.Q8_0),
    "blk.0.attn_q.weight": (16, 32, T.F16),
    "blk.1.attn_q.weight": (16, 32, T.F16),
    "blk.1.ffn_down.weight": (4, 64, T.F32),
    "output_norm.weight": (0, 64, T.F32),
}


def write_model(path: Path, seed: int, tokens: list[str] | None = None, **shapes) -> Path:
    """A tiny llama-architecture GGUF with random tensors of several types."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_block_count(2)
    writer.add_name(f"tiny-{seed}")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens or ["<s>", "</s>", "a", "b"])
    writer.add_bos_token_id(0)
    for name, (rows, columns, kind) in {**TENSORS, **shapes}.items():
        values = rng.standard_normal((rows, columns) if rows else (columns,)).astype(np.float32)
        writer.add_tensor(name, gguf.quants.quantize(values, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def models(tmp_path) -> list[Path]:
    return [write_model(tmp_path / f"m{i}.gguf", seed=i) for i in range(3)]


def merged_tensors(path: Path) -> dict[str, np.ndarray]:
    model = GGUFFile(path)
    return {name: model.read(name, 0, None) for name in model.tensors}


def stored(values: np.ndarray, kind) -> np.ndarray:
    """What writing `values` as `kind` and reading them back gives."""
    return gguf.quants.dequantize(gguf.quants.quantize(values.astype(np.float32), kind), kind)


def assert_stored_close(actual: np.ndarray, expected: np.ndarray, kind, name: str) -> None:
    """`actual` is `expected` written as `kind`, but for values that float rounding put on the
    other side of a rounding boundary (float32 here, float64 in the reference): at most 5% of
    them, each at most one step of the stored type away."""
    off = np.abs(actual - stored(expected, kind)) > 1e-5
    assert off.mean() <= 0.05, name
    if kind == T.F32:
        step = 1e-5
    elif kind == T.F16:
        step = np.abs(expected) * 2**-10 + 1e-5  # one unit in the last place
    else:
        step = np.abs(expected).max() / 127 + 1e-5  # one Q8_0 step of the largest block
    assert np.all(np.abs(actual - expected) <= step * 1.01), name


# -- the reference: whole tensors, plain numpy ---------------------------------------------------


def reference(method: str, base, others, weights, densities, t, name, seed=0):
    if method == "linear":
        return sum(w * x for w, x in zip(weights, others, strict=True)) / sum(weights)
    if method == "slerp":
        a, b = base.ravel().astype(np.float64), others[0].ravel().astype(np.float64)
        cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        if abs(cosine) > 0.9995:
            return (1 - t) * base + t * others[0]
        theta = np.arccos(cosine)
        return (np.sin((1 - t) * theta) * base + np.sin(t * theta) * others[0]) / np.sin(theta)
    deltas = [x - base for x in others]
    if method == "ties":
        kept = []
        for delta, density in zip(deltas, densities, strict=True):
            magnitude = np.abs(delta).ravel()
            k = int(density * magnitude.size)
            threshold = np.partition(magnitude, magnitude.size - k)[magnitude.size - k]
            kept.append(np.where(np.abs(delta) >= threshold, delta, 0))
        deltas = kept
    if method.startswith("dare"):
        plan = TensorPlan(method=method, weights=weights, densities=densities, seed=seed, name=name)
        deltas = [
            np.where(random(plan, i, 0).random(d.shape, dtype=np.float32) < p, d / p, 0)
            for i, (d, p) in enumerate(zip(deltas, densities, strict=True))
        ]
    weighted = np.stack([w * d for w, d in zip(weights, deltas, strict=True)])
    w = np.array(weights).reshape(-1, *([1] * base.ndim))
    if method in ("ties", "dare_ties"):
        sign = np.where(weighted.sum(0) >= 0, 1, -1)
        agree = np.sign(weighted) == sign
        divisor = (w * agree).sum(0)
        divisor[divisor == 0] = 1
        return base + (weighted * agree).sum(0) / divisor
    return base + weighted.sum(0) / sum(weights)


METHODS = ["linear", "slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear"]


def recipe(method: str, paths: list[Path]) -> dict:
    base, *others = paths
    if method == "linear":
        return {
            "merge_method": "linear",
            "models": [{"model": str(p), "parameters": {"weight": w}}
                       for p, w in zip(paths, (0.5, 0.3, 0.2), strict=True)],
        }  # fmt: skip
    if method == "slerp":
        return {
            "merge_method": "slerp",
            "base_model": str(base),
            "models": [{"model": str(base)}, {"model": str(others[0])}],
            "parameters": {"t": 0.3},
        }
    return {
        "merge_method": method,
        "base_model": str(base),
        "models": [
            {"model": str(others[0]), "parameters": {"weight": 0.7, "density": 0.5}},
            {"model": str(others[1]), "parameters": {"weight": 0.4, "density": 0.3}},
        ],
        "seed": 3,
    }


@pytest.mark.parametrize("method", METHODS)
def test_each_method_matches_the_numpy_reference(method, models, tmp_path):
    out = moot.merge.run(recipe(method, models), tmp_path / "out.gguf", progress=False)
    inputs = [merged_tensors(path) for path in models]
    result = merged_tensors(out)
    written = GGUFFile(out)
    for name, (_, _, kind) in TENSORS.items():
        base, others = inputs[0][name], [inputs[i][name] for i in (1, 2)]
        if method == "linear":
            expected = reference("linear", None, [base, *others], [0.5, 0.3, 0.2], None, 0, name)
        elif method == "slerp":
            expected = reference("slerp", base, others[:1], None, None, 0.3, name)
        else:
            expected = reference(method, base, others, [0.7, 0.4], [0.5, 0.3], 0, name, seed=3)
        out_kind = written.tensors[name].kind
        assert out_kind == (T.F32 if name == "output_norm.weight" else kind)  # input type kept
        assert_stored_close(result[name], expected, out_kind, name)


@pytest.mark.parametrize("method", ["slerp", "ties", "dare_linear"])
def test_merging_in_small_chunks_gives_the_same_file(method, models, tmp_path, monkeypatch):
    whole = moot.merge.run(recipe(method, models), tmp_path / "whole.gguf", progress=False)
    monkeypatch.setattr(merge_run, "CHUNK_ELEMENTS", 64)  # a row or two per chunk
    chunked = moot.merge.run(recipe(method, models), tmp_path / "chunked.gguf", progress=False)
    differing = list(merge_run.differing_tensors(whole, chunked))
    if method == "dare_linear":  # drops are drawn per chunk: other chunks, other draws
        assert differing and set(differing) <= set(TENSORS)
    elif method == "slerp":  # the angle is summed in another order: float32 tensors may move
        assert set(differing) <= {"blk.1.ffn_down.weight", "output_norm.weight"}
        a, b = merged_tensors(whole), merged_tensors(chunked)
        for name in differing:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)
    else:  # TIES's threshold is exact whatever the chunks
        assert differing == []


def ties_threshold(magnitude: np.ndarray, density: float) -> float:
    k = int(density * magnitude.size)
    return float(np.partition(magnitude, magnitude.size - k)[magnitude.size - k])


@pytest.mark.parametrize(
    "case",
    ["even chunks", "many equal changes", "a misleading first chunk", "tiny chunks", "a full band"],
)
def test_ties_thresholds_are_exact_and_usually_take_one_pass(case, monkeypatch):
    """TIES's threshold (the k-th largest change over the whole tensor) is found in one pass
    when the first chunk shows where it lies, and exactly in every case."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal((400, 64)).astype(np.float32)
    changes = [rng.standard_normal(base.shape).astype(np.float32) * 0.1 for _ in range(2)]
    rows = 50
    if case == "a misleading first chunk":
        changes[0][:rows] *= 100  # the first chunk's changes are all far above the rest
    elif case == "many equal changes":
        changes[1][:, :48] = 0.25
    elif case == "tiny chunks":
        rows = 1
    elif case == "a full band":
        monkeypatch.setattr(_BandSearch, "MAX_KEPT", 100)
    models = [base + change for change in changes]
    passes = 0

    def chunks():
        nonlocal passes
        passes += 1
        for start in range(0, len(base), rows):
            stop = start + rows
            yield [base[start:stop], *(model[start:stop] for model in models)]

    plan = TensorPlan(method="ties", weights=[1.0, 1.0], densities=[0.3, 0.6])
    stats = gather_stats(plan, chunks)
    for model, density, found in zip(models, plan.densities, stats.thresholds, strict=True):
        assert found == ties_threshold(np.abs(model - base).ravel(), density)
    fallbacks = {"a misleading first chunk": 1, "tiny chunks": 1, "a full band": 2}.get(case, 0)
    assert passes == 1 + 2 * fallbacks  # a fallback: two more passes for one model


def test_a_list_value_is_interpolated_across_layers(models, tmp_path):
    config = {
        "merge_method": "linear",
        "models": [
            {"model": str(models[0]), "parameters": {"weight": [1.0, 0.0]}},
            {"model": str(models[1]), "parameters": {"weight": [0.0, 1.0]}},
        ],
    }
    result = merged_tensors(moot.merge.run(config, tmp_path / "grad.gguf", progress=False))
    first, second = merged_tensors(models[0]), merged_tensors(models[1])
    # Layer 0 is all the first model, layer 1 (the last) all the second; outside the layers
    # a tensor takes the first value (the input side).
    np.testing.assert_allclose(result["blk.0.attn_q.weight"], first["blk.0.attn_q.weight"])
    np.testing.assert_allclose(result["blk.1.attn_q.weight"], second["blk.1.attn_q.weight"])
    np.testing.assert_allclose(result["token_embd.weight"], first["token_embd.weight"])


def test_metadata_is_copied_with_a_name_a_file_type_and_the_recipe(models, tmp_path):
    out = moot.merge.run(recipe("ties", models) | {"dtype": "q8_0"}, tmp_path / "o.gguf",
                         progress=False)  # fmt: skip
    merged, base = GGUFFile(out), GGUFFile(models[0])
    assert merged.value("tokenizer.ggml.tokens") == base.value("tokenizer.ggml.tokens")
    assert merged.value("llama.block_count") == 2
    assert merged.value("general.name") == "ties merge of m0, m1, m2"
    assert merged.value("general.file_type") == gguf.LlamaFileType.MOSTLY_Q8_0
    assert '"merge_method":"ties"' in merged.value("moot.merge.recipe")
    assert {t.kind for t in merged.tensors.values()} == {T.Q8_0, T.F32}


def test_a_failed_merge_leaves_no_file(models, tmp_path, monkeypatch):
    calls = []

    def fail_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    original = merge_run.merge_chunk
    monkeypatch.setattr(merge_run, "merge_chunk", fail_on_third)
    with pytest.raises(KeyboardInterrupt):
        moot.merge.run(recipe("linear", models), tmp_path / "out.gguf", progress=False)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["m0.gguf", "m1.gguf", "m2.gguf"]


# -- bad input -----------------------------------------------------------------------------------


def test_models_that_do_not_fit_together_are_refused(models, tmp_path):
    other_tokens = write_model(tmp_path / "tok.gguf", 5, tokens=["<s>", "</s>", "a", "c"])
    other_shape = write_model(tmp_path / "shape.gguf", 6, **{"blk.0.attn_q.weight": (8, 32, T.F16)})
    cases = [
        (other_tokens, "different tokenizers (tokenizer.ggml.tokens: entry 3 is 'b' vs 'c')"),
        (other_shape, "tensor blk.0.attn_q.weight has shape (16, 32) in"),
    ]
    for other, message in cases:
        config = recipe("linear", [models[0], other, models[1]])
        with pytest.raises(moot.ConfigError) as caught:
            moot.merge.run(config, tmp_path / "x.gguf", progress=False)
        assert message in str(caught.value) and str(other) in str(caught.value)
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("merge_method: average\nmodels: [{model: m0.gguf}]\n", ":1: merge_method: Input should"),
        ("merge_method: ties\nbase_model: m0.gguf\nmodels:\n  - model: m1.gguf\n"
         "    parameters: {density: 1.5}\n", ":5: models.0.parameters.density: "
         "density must be in (0, 1], got 1.5"),
        ("merge_method: ties\nmodels: [{model: m1.gguf}]\n", "ties needs a base_model"),
        ("merge_method: linear\nmodels:\n  - {model: m0.gguf, parameters: {weight: 1}}\n"
         "  - {model: m1.gguf, parameters: {weight: -1}}\n", "the weights sum to 0"),
        ("merge_method: linear\nmodels: [{model: nowhere.gguf}]\n", "GGUF file not found"),
        ("merge_method: linear\nmodels: [{model: m0.gguf}]\nparameters: {colour: red}\n",
         ":3: parameters: unknown parameter(s) colour"),
    ],
)  # fmt: skip
def test_recipe_mistakes_are_one_error_line(models, tmp_path, capsys, text, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    assert main(["merge", str(path), "-o", str(tmp_path / "out.gguf")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_not_gguf_and_missing_folders_are_refused(models, tmp_path, capsys):
    fake = tmp_path / "fake.gguf"
    fake.write_text("hello")
    path = tmp_path / "recipe.yaml"
    path.write_text("merge_method: linear\nmodels: [{model: m0.gguf}, {model: fake.gguf}]\n")
    assert main(["merge", str(path), "-o", str(tmp_path / "out.gguf")]) == 2
    assert "fake.gguf is not a GGUF file" in capsys.readouterr().err
    path.write_text("merge_method: linear\nmodels: [{model: m0.gguf}, {model: m1.gguf}]\n")
    assert main(["merge", str(path), "-o", str(tmp_path / "no" / "out.gguf")]) == 2
    assert "the folder" in capsys.readouterr().err


def merge_in_one_line(capsys, recipe_path: Path, out: Path) -> str:
    """Run `moot merge` expecting one `error:` line (after the progress bar, if the merge had
    begun) and status 2; return that line."""
    assert main(["merge", str(recipe_path), "-o", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and not any("Traceback" in line for line in lines)
    assert sum(line.startswith("error:") for line in lines) == 1, lines
    return lines[-1]


@pytest.fixture
def two_model_recipe(models, tmp_path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text("merge_method: linear\nmodels: [{model: m0.gguf}, {model: m1.gguf}]\n")
    return path


SIGTERM_ON_THIRD_CHUNK = """
import os, signal, sys
import moot.merge.writer as writer
from moot.cli import main
original, calls = writer.merge_chunk, []
def terminate_on_third(*args):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
    return original(*args)
writer.merge_chunk = terminate_on_third
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_mid_merge_leaves_no_part_file(two_model_recipe, tmp_path):

    out = tmp_path / "out.gguf"
    command = [sys.executable, "-c", SIGTERM_ON_THIRD_CHUNK, "merge", str(two_model_recipe)]
    done = subprocess.run([*command, "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 128 + 15, done.stderr  # as a shell reports SIGTERM, unwound
    assert "Traceback" not in done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "m0.gguf", "m1.gguf", "m2.gguf", "recipe.yaml"
    ]  # fmt: skip


def test_a_merge_leaves_the_sigterm_handler_as_it_found_it(models, tmp_path):
    def mine(signum, frame):
        pass

    # Another test of the session (a server, Ray) may have left its own handler: start clean.
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        moot.merge.run(recipe("linear", models), tmp_path / "out.gguf", progress=False)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        signal.signal(signal.SIGTERM, mine)
        moot.merge.run(recipe("linear", models), tmp_path / "out.gguf", progress=False)
        assert signal.getsignal(signal.SIGTERM) is mine  # a program's own handler is kept
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("keep", [0.5, 0.05], ids=["tensor data cut", "header cut"])
def test_a_truncated_gguf_is_one_error_line_naming_it(models, two_model_recipe, tmp_path, capsys,
                                                      keep):  # fmt: skip
    data = models[1].read_bytes()
    models[1].write_bytes(data[: int(len(data) * keep)])
    err = merge_in_one_line(capsys, two_model_recipe, tmp_path / "out.gguf")
    assert f"{models[1]} is truncated or corrupt" in err
    assert not (tmp_path / "out.gguf").exists() and not (tmp_path / "out.gguf.part").exists()


def test_an_impossible_tensor_table_is_reported_as_corrupt(models, two_model_recipe, tmp_path,
                                                          capsys):  # fmt: skip
    data = bytearray(models[1].read_bytes())
    at = data.index(b"output_norm.weight") + len(b"output_norm.weight")
    at += 4 + 8  # past the dimension count and the one dimension: the type
    data[at : at + 4] = (999).to_bytes(4, "little")
    models[1].write_bytes(bytes(data))
    err = merge_in_one_line(capsys, two_model_recipe, tmp_path / "out.gguf")
    assert f"{models[1]} is truncated or corrupt" in err and "999" in err


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("folder", "cannot write {tmp}/folder: it is a folder; name a file in it, e.g. "
         "{tmp}/folder/merged.gguf"),
        ("/dev/null", "cannot write /dev/null: it exists and is not a regular file"),
        ("m0.gguf/out.gguf", "cannot write {tmp}/m0.gguf/out.gguf: the folder {tmp}/m0.gguf is "
         "not a folder"),
    ],
    ids=["an existing folder", "a device", "a path inside a file"],
)  # fmt: skip
def test_unusable_outputs_are_refused_before_any_work(two_model_recipe, tmp_path, capsys,
                                                      monkeypatch, out, message):  # fmt: skip
    def no_reading(path):
        raise AssertionError("the inputs were read before the output was checked")

    monkeypatch.setattr(merge_run, "GGUFFile", no_reading)
    (tmp_path / "folder").mkdir()
    err = merge_in_one_line(capsys, two_model_recipe, tmp_path / out)
    assert message.format(tmp=tmp_path) in err


def test_an_output_folder_that_is_not_writable_is_refused_first(two_model_recipe, tmp_path,
                                                               capsys, monkeypatch):  # fmt: skip

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # root may write anywhere
    err = merge_in_one_line(capsys, two_model_recipe, tmp_path / "out.gguf")
    assert f"the folder {tmp_path} is not writable" in err


def test_a_write_error_mid_merge_is_one_error_line_and_leaves_no_part(
    two_model_recipe, tmp_path, capsys, monkeypatch
):

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", disk_full)
    err = merge_in_one_line(capsys, two_model_recipe, tmp_path / "out.gguf")
    assert f"cannot write {tmp_path / 'out.gguf'}: No space left on device" in err
    assert not (tmp_path / "out.gguf.part").exists()


def test_a_folder_as_input_is_called_a_folder(models, tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.gguf").write_bytes(models[0].read_bytes())
    path = tmp_path / "recipe.yaml"
    path.write_text("merge_method: linear\nmodels: [{model: m0.gguf}, {model: sub}]\n")
    err = merge_in_one_line(capsys, path, tmp_path / "out.gguf")
    assert "sub is a folder, not a GGUF file: name one of the .gguf files in it (inner.gguf)" in err


def test_an_unreadable_input_is_one_error_line(two_model_recipe, models, tmp_path, capsys,
                                               monkeypatch):  # fmt: skip
    opened = Path.open

    def refuse(self, *args, **kwargs):
        if self == models[1]:
            raise PermissionError(13, "Permission denied", str(self))
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)  # chmod 000 does not stop root
    err = merge_in_one_line(capsys, two_model_recipe, tmp_path / "out.gguf")
    assert f"cannot read {models[1]}: Permission denied" in err


@pytest.mark.parametrize("method", ["ties", "task_arithmetic", "slerp"])
def test_a_recipe_with_only_the_base_model_is_refused(models, tmp_path, capsys, method):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"merge_method: {method}\nbase_model: m0.gguf\nmodels: [{{model: ./m0.gguf}}]\n"
    )
    err = merge_in_one_line(capsys, path, tmp_path / "out.gguf")
    assert "but models lists no other" in err or "slerp merges exactly two models" in err


def test_linear_with_a_base_model_averages_the_listed_models(models, tmp_path):
    config = recipe("linear", models) | {"base_model": str(models[0])}
    out = moot.merge.run(config, tmp_path / "with_base.gguf", progress=False)
    plain = moot.merge.run(recipe("linear", models), tmp_path / "plain.gguf", progress=False)
    assert list(merge_run.differing_tensors(out, plain)) == []


def test_fusion_refuses_a_folder_as_its_output_before_training(models, tmp_path, capsys):
    (tmp_path / "gates").mkdir()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"question": "1+1?", "answer": "2"}\n')
    args = ["fusion", "train-gate", "--base", str(models[0]), "--assistant", str(models[1])]
    assert main([*args, "--data", str(pairs), "-o", str(tmp_path / "gates")]) == 2
    assert "it is a folder; name a file in it, e.g." in capsys.readouterr().err


# -- the embedded model, for real ------------------------------------------------------------------


@pytest.mark.integration
def test_a_self_merge_of_smollm2_reproduces_it_and_llama_runs_it(tmp_path):
    from moot.models.embedded import embedded_model_path

    config = {
        "merge_method": "linear",
        "models": [{"model": "local", "parameters": {"weight": 0.5}}] * 2,
    }
    out = moot.merge.run(config, tmp_path / "self.gguf", progress=False)
    assert list(merge_run.differing_tensors(embedded_model_path(), out)) == []  # Q4_1 and Q8_0
    reply = moot.load_model(f"llama:{out}").invoke("Say hi.", max_tokens=8)
    assert reply.text and reply.usage_metadata["output_tokens"] > 0


@pytest.mark.integration
def test_cli_merges_quantizes_once_and_scores_a_probe(tmp_path, capsys):
    import shutil

    from moot.models.embedded import embedded_model_path

    shutil.copy(embedded_model_path(), tmp_path / "copy.gguf")
    probe = tmp_path / "probe.txt"
    probe.write_text("The capital of France is Paris. Two plus two is four.")
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "merge_method: slerp\nbase_model: local\nmodels: [{model: local}, {model: copy.gguf}]\n"
        "parameters: {t: 0.5}\n"
    )
    out = tmp_path / "merged.gguf"
    args = ["merge", str(path), "-o", str(out), "--quantize", "Q8_0", "--eval", str(probe)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"merged into {out}" in printed and "loss per token" in printed
    rows = [line.split("│") for line in printed.splitlines() if line.count("│") == 3]
    losses = [float(row[2]) for row in rows if ".gguf" in row[1]]
    assert len(losses) == 3 and abs(losses[0] - losses[2]) < 0.5  # Q8_0 barely moves it
    assert {t.kind for t in GGUFFile(out).tensors.values()} <= {T.Q8_0, T.F32}
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["copy.gguf", "merged.gguf", "probe.txt", "recipe.yaml"]  # no parts left
