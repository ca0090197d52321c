"""Training a Co-LLM gate from question/answer pairs (Shen et al. 2024, weak supervision).

For each pair, the base and the assistant read the question (in the base's chat template) and
the reference answer; at every answer position the label is "defer" where the assistant gives
the reference token a higher probability than the base. A logistic regression on the base's
last hidden state then learns to predict that label. (scikit-learn would fit it in one call;
it is not a dependency of moot, and a regularised Newton fit is a dozen lines of numpy.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.messages import HumanMessage

from moot.errors import ConfigError
from moot.fusion.gates import GateTraining, LearnedGate
from moot.fusion.model import _gguf_path, check_tokenizers, shared_decoder


def read_pairs(path: Path, target_field: str = "answer") -> list[tuple[str, str]]:
    """(question, reference answer) from a JSONL file with `question` and `target_field`."""
    from moot.bench.tasks import read_records

    pairs = []
    for number, record in read_records(path):
        question, answer = record.get("question"), record.get(target_field)
        if not isinstance(question, str) or not question.strip():
            raise ConfigError(f"{path}:{number}: no 'question' text")
        if not isinstance(answer, (str, int, float)) or not str(answer).strip():
            raise ConfigError(f"{path}:{number}: no '{target_field}' to learn from")
        pairs.append((question, str(answer)))
    return pairs


def train_gate(
    base: str,
    assistant: str,
    pairs: list[tuple[str, str]],
    *,
    threshold: float = 0.5,
    l2: float = 1.0,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    n_gpu_layers: int = 0,
    question_template: str = "{question}",
    progress: Callable[[int], None] | None = None,
) -> LearnedGate:
    """A gate for `base` deferring to `assistant` (specs as in FusedChatModel.models).

    `question_template` wraps each question as the gate's users will ask it (Du et al.'s
    "Can you solve the following math problem? {question} ..."): the hidden states it learns
    from depend on the prompt before the answer."""
    from moot.models.llama import chat_formatter, chat_prompt

    if "{question}" not in question_template:
        raise ConfigError("question_template must contain {question}, where the question goes")

    paths = [_gguf_path(base), _gguf_path(assistant)]
    check_tokenizers(paths)
    options: dict[str, Any] = {
        "n_ctx": n_ctx,
        "n_batch": 64,  # a row of logits per answer token: 64 x vocabulary floats at most
        "n_threads": n_threads,
        "n_gpu_layers": n_gpu_layers,
    }
    base_model = shared_decoder(paths[0], hidden=True, **options)
    assistant_model = shared_decoder(paths[1], hidden=False, **options)
    formatter = chat_formatter(base_model.model, None)
    features: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for number, (question, answer) in enumerate(pairs, 1):
        prompt, cuts, _ = chat_prompt(
            formatter,
            base_model.tokenize,
            [HumanMessage(content=question_template.replace("{question}", question))],
            [],
        )
        reference = base_model.tokenize(answer, False, False)
        tokens = (prompt + reference)[: n_ctx - 1]
        if len(tokens) <= len(prompt):
            raise ConfigError(f"pair {number}: the question fills the context of {n_ctx} tokens")
        first = len(prompt) - 1  # the position whose output predicts the first answer token
        targets = np.asarray(tokens[len(prompt) :])
        scored = []
        for decoder in (base_model, assistant_model):
            with decoder.lock:
                logits, hidden = decoder.reach(tokens, [*cuts, first], outputs_from=first)
            rows = np.stack(logits[: len(targets)])
            scored.append((_log_softmax_rows(rows)[np.arange(len(targets)), targets], hidden))
        (base_lp, base_hidden), (assistant_lp, _) = scored
        features.append(np.stack(base_hidden[: len(targets)]))
        labels.append((assistant_lp > base_lp).astype(np.float64))
        if progress is not None:
            progress(number)
    x, y = np.concatenate(features).astype(np.float64), np.concatenate(labels)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    weights, bias = _logistic_regression((x - mean) / scale, y, l2)
    predicted = 1 / (1 + np.exp(-(((x - mean) / scale) @ weights + bias)))
    return LearnedGate(
        base=paths[0].name,
        assistant=paths[1].name,
        hidden_size=x.shape[1],
        mean=mean.tolist(),
        scale=scale.tolist(),
        weights=weights.tolist(),
        bias=float(bias),
        threshold=threshold,
        training=GateTraining(
            examples=len(pairs),
            question_template=question_template,
            positions=len(y),
            defer_share=float(y.mean()),
            accuracy=float(((predicted >= 0.5) == (y == 1)).mean()),
            predicted_defer_share=float((predicted >= threshold).mean()),
            thresholds={
                f"{share}%": float(np.quantile(predicted, 1 - share / 100))
                for share in (10, 20, 30, 50)
            },
        ),
    )


def _log_softmax_rows(rows: np.ndarray) -> np.ndarray:
    shifted = rows.astype(np.float64) - rows.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _logistic_regression(
    x: np.ndarray, y: np.ndarray, l2: float, steps: int = 25
) -> tuple[np.ndarray, float]:
    """Weights and bias minimising the log loss plus l2/2 |weights|^2 (Newton's method)."""
    rows, columns = x.shape
    design = np.hstack([x, np.ones((rows, 1))])
    theta = np.zeros(columns + 1)
    penalty = np.full(columns + 1, l2)
    penalty[-1] = 0.0  # the bias is not shrunk
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(design @ theta, -30, 30)))
        gradient = design.T @ (p - y) + penalty * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-6:
            break
    return theta[:-1], float(theta[-1])
