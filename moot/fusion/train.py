"""Training a Co-LLM gate from question/answer pairs (Shen et al. 2024).

For each pair, the base and the assistant read the question (in the base's chat template) and
the reference answer (`score_pairs`). Co-LLM's gate is then trained in two stages (`fit_gate`):
1. weak supervision: a position is labelled "defer" where the assistant gives the reference
   token a higher probability than the base, and a logistic regression on the base's last
   hidden state learns the label (scikit-learn would fit it in one call; it is not a dependency
   of moot, and a regularised Newton fit is a dozen lines of numpy);
2. marginal likelihood: from there, the gate's weights maximise the probability of the
   reference when each token comes from the base with probability 1 - g and from the assistant
   with g. Shen et al. train the base model with the gate; moot keeps both models frozen and
   trains the gate alone.
Stage 2 weighs each position by how much deferring there gains: the weak labels mark most
positions "defer" (a bigger model is a little surer almost everywhere), so a gate fitted to them
alone ranks positions poorly for a small deferral budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

import numpy as np

from moot.errors import ConfigError
from moot.fusion.gates import GateTraining, LearnedGate
from moot.fusion.model import check_tokenizers, gguf_path, shared_decoder
from moot.llamacpp import chat_formatter, chat_prompt, default_gpu_layers

Objective = Literal["marginal", "weak"]
""""weak": stage 1 alone (the weak labels); "marginal": stage 1, then the marginal likelihood."""

BUDGETS = (10, 20, 30, 50)
"""Deferral shares (%) whose thresholds a trained gate records."""


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


@dataclass
class ScoredPositions:
    """Every reference-answer token of the training pairs, one row each."""

    base: str
    """File name of the base model."""
    assistant: str
    examples: int
    question_template: str
    hidden: np.ndarray
    """The base's last hidden state at the position that predicts the token (rows x hidden)."""
    base_logprob: np.ndarray
    """Log probability of the reference token under the base."""
    assistant_logprob: np.ndarray
    base_top: np.ndarray
    """The base's highest next-token probability there (what a threshold gate reads)."""
    example: np.ndarray
    """Which pair (0-based) each row comes from, for splitting by pair."""

    def subset(self, rows: np.ndarray) -> ScoredPositions:
        """The rows selected by a boolean mask."""
        return ScoredPositions(
            self.base,
            self.assistant,
            len(np.unique(self.example[rows])),
            self.question_template,
            self.hidden[rows],
            self.base_logprob[rows],
            self.assistant_logprob[rows],
            self.base_top[rows],
            self.example[rows],
        )


def score_pairs(
    base: str,
    assistant: str,
    pairs: list[tuple[str, str]],
    *,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    question_template: str = "{question}",
    progress: Callable[[int], None] | None = None,
) -> ScoredPositions:
    """Both models read every pair (specs as in FusedChatModel.models).

    `question_template` wraps each question as the gate's users will ask it (Du et al.'s
    "Can you solve the following math problem? {question} ..."): the hidden states it learns
    from depend on the prompt before the answer."""
    if "{question}" not in question_template:
        raise ConfigError("question_template must contain {question}, where the question goes")

    paths = [gguf_path(base), gguf_path(assistant)]
    check_tokenizers(paths)
    options: dict[str, Any] = {
        "n_ctx": n_ctx,
        "n_batch": 64,  # a row of logits per answer token: 64 x vocabulary floats at most
        "n_threads": n_threads,
        "n_gpu_layers": default_gpu_layers() if n_gpu_layers is None else n_gpu_layers,
    }
    base_model = shared_decoder(paths[0], hidden=True, **options)
    assistant_model = shared_decoder(paths[1], hidden=False, **options)
    formatter = chat_formatter(base_model.model, None)
    columns: dict[str, list[np.ndarray]] = {
        name: [] for name in ("hidden", "base", "assistant", "top", "example")
    }
    for number, (question, answer) in enumerate(pairs, 1):
        prompt, cuts, _ = chat_prompt(
            formatter,
            base_model.tokenize,
            [{"role": "user", "content": question_template.replace("{question}", question)}],
            [],
        )
        reference = base_model.tokenize(answer, False, False)
        tokens = (prompt + reference)[: n_ctx - 1]
        if len(tokens) <= len(prompt):
            raise ConfigError(f"pair {number}: the question fills the context of {n_ctx} tokens")
        first = len(prompt) - 1  # the position whose output predicts the first answer token
        targets = np.asarray(tokens[len(prompt) :])
        for decoder, name in ((base_model, "base"), (assistant_model, "assistant")):
            with decoder.lock:
                logits, hidden = decoder.reach(tokens, [*cuts, first], outputs_from=first)
            logprobs = _log_softmax_rows(np.stack(logits[: len(targets)]))
            columns[name].append(logprobs[np.arange(len(targets)), targets])
            if name == "base":
                columns["hidden"].append(np.stack(hidden[: len(targets)]))
                columns["top"].append(np.exp(logprobs.max(axis=1)))
        columns["example"].append(np.full(len(targets), number - 1))
        if progress is not None:
            progress(number)
    return ScoredPositions(
        base=paths[0].name,
        assistant=paths[1].name,
        examples=len(pairs),
        question_template=question_template,
        hidden=np.concatenate(columns["hidden"]).astype(np.float64),
        base_logprob=np.concatenate(columns["base"]),
        assistant_logprob=np.concatenate(columns["assistant"]),
        base_top=np.concatenate(columns["top"]),
        example=np.concatenate(columns["example"]),
    )


def fit_gate(
    scored: ScoredPositions,
    *,
    objective: Objective = "marginal",
    threshold: float = 0.5,
    l2: float = 1.0,
) -> LearnedGate:
    """Co-LLM's gate on the base's hidden state, fitted to `scored` (see the module's docstring)."""
    _check_objective(objective)
    x = scored.hidden
    labels = (scored.assistant_logprob > scored.base_logprob).astype(np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    standard = (x - mean) / scale
    weights, bias = _logistic_regression(standard, labels, l2)
    if objective == "marginal":
        weights, bias = _marginal_likelihood(
            standard, scored.base_logprob, scored.assistant_logprob, l2, weights, bias
        )
    predicted = _sigmoid(standard @ weights + bias)
    return LearnedGate(
        base=scored.base,
        assistant=scored.assistant,
        hidden_size=x.shape[1],
        mean=mean.tolist(),
        scale=scale.tolist(),
        weights=weights.tolist(),
        bias=float(bias),
        threshold=threshold,
        training=GateTraining(
            examples=scored.examples,
            question_template=scored.question_template,
            objective="marginal likelihood" if objective == "marginal" else "weak labels",
            positions=len(labels),
            defer_share=float(labels.mean()),
            accuracy=float(((predicted >= 0.5) == (labels == 1)).mean()),
            predicted_defer_share=float((predicted >= threshold).mean()),
            thresholds={
                f"{share}%": float(np.quantile(predicted, 1 - share / 100)) for share in BUDGETS
            },
            log_likelihood=reference_log_likelihood(scored, predicted),
        ),
    )


def reference_log_likelihood(scored: ScoredPositions, predicted: np.ndarray) -> dict[str, float]:
    """Mean log probability of a reference token: each model alone, and with 30% of the
    positions deferred (a hard choice), ranked by the gate's P(defer) (`predicted`) and by the
    base's top probability."""
    share = 0.3
    return {
        "base alone": float(scored.base_logprob.mean()),
        "assistant alone": float(scored.assistant_logprob.mean()),
        "gate, 30% deferred": deferred_log_likelihood(scored, predicted, share),
        "base top probability, 30% deferred": deferred_log_likelihood(
            scored, -scored.base_top, share
        ),
    }


def deferred_log_likelihood(scored: ScoredPositions, score: np.ndarray, share: float) -> float:
    """Mean log probability of the reference when the `share` of positions with the highest
    `score` take the assistant's token and the rest the base's."""
    deferred = np.zeros(len(score), dtype=bool)
    deferred[np.argsort(-score, kind="stable")[: round(share * len(score))]] = True
    chosen = np.where(deferred, scored.assistant_logprob, scored.base_logprob)
    return float(chosen.mean())


class ScoringOptions(TypedDict, total=False):
    """`score_pairs`'s options, which `train_gate` passes on."""

    n_ctx: int
    n_threads: int | None
    n_gpu_layers: int | None
    question_template: str
    progress: Callable[[int], None] | None


def train_gate(
    base: str,
    assistant: str,
    pairs: list[tuple[str, str]],
    *,
    objective: Objective = "marginal",
    threshold: float = 0.5,
    l2: float = 1.0,
    **scoring: Unpack[ScoringOptions],
) -> LearnedGate:
    """A gate for `base` deferring to `assistant`: `score_pairs`, then `fit_gate`."""
    _check_objective(objective)
    scored = score_pairs(base, assistant, pairs, **scoring)
    return fit_gate(scored, objective=objective, threshold=threshold, l2=l2)


def _check_objective(objective: str) -> None:
    if objective not in ("marginal", "weak"):
        raise ConfigError(f"objective must be 'marginal' or 'weak', got {objective!r}")


def _log_softmax_rows(rows: np.ndarray) -> np.ndarray:
    shifted = rows.astype(np.float64) - rows.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(z, -30, 30)))


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
        p = _sigmoid(design @ theta)
        gradient = design.T @ (p - y) + penalty * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-6:
            break
    return theta[:-1], float(theta[-1])


def _marginal_likelihood(
    x: np.ndarray,
    base_logprob: np.ndarray,
    assistant_logprob: np.ndarray,
    l2: float,
    weights: np.ndarray,
    bias: float,
    steps: int = 400,
    rate: float = 0.02,
) -> tuple[np.ndarray, float]:
    """From (weights, bias), maximise sum log((1 - g) p_base + g p_assistant) - l2/2 |weights|^2
    with g = sigmoid(x . weights + bias), by full-batch Adam (the objective is not concave)."""
    design = np.hstack([x, np.ones((len(x), 1))])
    theta = np.append(weights, bias)
    penalty = np.full(len(theta), l2)
    penalty[-1] = 0.0
    moment, square = np.zeros_like(theta), np.zeros_like(theta)
    for step in range(1, steps + 1):
        z = design @ theta
        log_g, log_not_g = -np.logaddexp(0, -z), -np.logaddexp(0, z)
        log_mix = np.logaddexp(log_not_g + base_logprob, log_g + assistant_logprob)
        # d log mix / dz = g (1 - g) (p_assistant - p_base) / mix, each term at most 1
        spread = log_g + log_not_g - log_mix
        slope = np.exp(spread + assistant_logprob) - np.exp(spread + base_logprob)
        gradient = -(design.T @ slope) + penalty * theta  # of the loss, per the whole set
        gradient /= len(x)
        moment = 0.9 * moment + 0.1 * gradient
        square = 0.999 * square + 0.001 * gradient**2
        theta -= rate * (moment / (1 - 0.9**step)) / (np.sqrt(square / (1 - 0.999**step)) + 1e-8)
    return theta[:-1], float(theta[-1])
