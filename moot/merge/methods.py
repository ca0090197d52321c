"""The merge methods on float32 arrays, after mergekit (Goddard et al. 2024): linear, SLERP,
task arithmetic, TIES (Yadav et al. 2023) and DARE (Yu et al. 2023).

Methods that look at a whole tensor (SLERP's angle, TIES's largest changes) get it from
`TensorStats`, gathered over the tensor's row chunks before the chunks are merged, so a tensor
never has to be in memory whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

SLERP_LINEAR_ABOVE = 0.9995
"""Vectors this parallel are interpolated linearly (mergekit's DOT_THRESHOLD)."""


@dataclass
class TensorPlan:
    """How one tensor is merged."""

    method: str
    weights: list[float]
    """Per merged model (not the base), in recipe order."""
    densities: list[float]
    t: float = 0.5
    normalize: bool = True
    scale: float = 1.0
    """mergekit's lambda: the merged task vector's scale."""
    seed: int = 0
    name: str = ""


@dataclass
class TensorStats:
    """What the whole tensor says, for methods that need more than a chunk."""

    cosine: float = 1.0
    """SLERP: cosine of the angle between the base and the other model."""
    thresholds: list[float] = field(default_factory=list)
    """TIES: per model, the smallest |change| kept (the density's share of the largest)."""


Chunks = Callable[[], Iterable[list[np.ndarray]]]
"""A fresh pass over a tensor: for each row chunk, [base chunk, model chunks...]."""


def gather_stats(plan: TensorPlan, chunks: Chunks) -> TensorStats:
    """The whole-tensor statistics `plan.method` needs (one or two passes over `chunks`)."""
    if plan.method == "slerp":
        dot = first = second = 0.0
        for base, other in chunks():
            dot += float(np.dot(base.ravel(), other.ravel()))
            first += float(np.dot(base.ravel(), base.ravel()))
            second += float(np.dot(other.ravel(), other.ravel()))
        norms = np.sqrt(first) * np.sqrt(second)
        return TensorStats(cosine=dot / norms if norms > 0 else 1.0)
    if plan.method == "ties":
        thresholds = []
        for index, density in enumerate(plan.densities):

            def magnitudes(index: int = index) -> Iterable[np.ndarray]:
                for base, *models in chunks():
                    yield np.abs(models[index] - base).ravel()

            thresholds.append(kept_above(magnitudes, density))
        return TensorStats(thresholds=thresholds)
    return TensorStats()


def kept_above(magnitudes: Callable[[], Iterable[np.ndarray]], density: float) -> float:
    """The k-th largest value over all chunks, k = int(density * count): the smallest change
    TIES keeps. Exact, in two passes of radix selection on float32 bit patterns (non-negative
    floats sort as their bits do), so the tensor is never held whole."""
    if density >= 1:
        return 0.0
    high = np.zeros(1 << 16, dtype=np.int64)
    count = 0
    for values in magnitudes():
        bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
        high += np.bincount(bits >> 16, minlength=1 << 16)
        count += bits.size
    k = int(density * count)
    if k <= 0:
        return float("inf")
    top_bin, rest = _bin_holding(high, k)
    low = np.zeros(1 << 16, dtype=np.int64)
    for values in magnitudes():
        bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
        low += np.bincount(bits[(bits >> 16) == top_bin] & 0xFFFF, minlength=1 << 16)
    low_bin, _ = _bin_holding(low, rest)
    return float(np.array([(top_bin << 16) | low_bin], dtype=np.uint32).view(np.float32)[0])


def _bin_holding(histogram: np.ndarray, k: int) -> tuple[int, int]:
    """The bin holding the k-th largest value, and k counted within that bin."""
    from_top = np.cumsum(histogram[::-1])
    index = int(np.searchsorted(from_top, k))
    bin_ = len(histogram) - 1 - index
    above = int(from_top[index] - histogram[bin_])
    return bin_, k - above


def merge_chunk(
    plan: TensorPlan, stats: TensorStats, arrays: list[np.ndarray], chunk: int
) -> np.ndarray:
    """One row chunk of the merged tensor. `arrays` is [base, models...] (linear: the models)."""
    if plan.method == "linear":
        merged = sum(w * x for w, x in zip(plan.weights, arrays, strict=True))
        total = sum(plan.weights)
        return np.asarray(merged / total if plan.normalize else merged, dtype=np.float32)
    base, models = arrays[0], arrays[1:]
    if plan.method == "slerp":
        return slerp(base, models[0], plan.t, stats.cosine)
    deltas = [model - base for model in models]
    if plan.method == "ties":
        deltas = [
            np.where(np.abs(delta) >= threshold, delta, 0.0)
            for delta, threshold in zip(deltas, stats.thresholds, strict=True)
        ]
    elif plan.method in ("dare_ties", "dare_linear"):
        deltas = [
            dare_drop(delta, density, random(plan, index, chunk))
            for index, (delta, density) in enumerate(zip(deltas, plan.densities, strict=True))
        ]
    consensus = plan.method in ("ties", "dare_ties")
    return (base + combine(deltas, plan.weights, plan.normalize, consensus) * plan.scale).astype(
        np.float32
    )


def slerp(first: np.ndarray, second: np.ndarray, t: float, cosine: float) -> np.ndarray:
    """Spherical interpolation from `first` (t=0) to `second` (t=1); `cosine` is the angle's
    over the whole tensor. Nearly parallel tensors are interpolated linearly."""
    if abs(cosine) > SLERP_LINEAR_ABOVE:
        return ((1 - t) * first + t * second).astype(np.float32)
    theta = np.arccos(np.clip(cosine, -1.0, 1.0))
    sin_theta = np.sin(theta)
    s0 = np.sin(theta - t * theta) / sin_theta
    s1 = np.sin(t * theta) / sin_theta
    return (s0 * first + s1 * second).astype(np.float32)


def dare_drop(delta: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    """DARE: keep each change with probability `density`, rescaled by 1 / density."""
    if density >= 1:
        return delta
    keep = rng.random(delta.shape, dtype=np.float32) < density
    return np.where(keep, delta / density, 0.0).astype(np.float32)


def combine(
    deltas: list[np.ndarray], weights: list[float], normalize: bool, consensus: bool
) -> np.ndarray:
    """The weighted task vectors summed; with `consensus` (TIES's sign election) only the
    changes agreeing with the sign of their sum count, and the divisor is their weights."""
    weighted = np.stack([w * d for w, d in zip(weights, deltas, strict=True)])
    weight_column = np.array(weights, dtype=np.float32).reshape(-1, *([1] * deltas[0].ndim))
    if consensus:
        sign = np.where(weighted.sum(axis=0) >= 0, 1.0, -1.0)
        agree = np.sign(weighted) == sign
        mixed = (weighted * agree).sum(axis=0)
        divisor = (weight_column * agree).sum(axis=0)
        divisor[divisor == 0] = 1.0
    else:
        mixed = weighted.sum(axis=0)
        divisor = weight_column.sum(axis=0) * np.ones_like(mixed)
        divisor[np.abs(divisor) < 1e-8] = 1.0
    return (mixed / divisor if normalize else mixed).astype(np.float32)


def random(plan: TensorPlan, model: int, chunk: int) -> np.random.Generator:
    """DARE's generator for one model's chunk of one tensor: the same for the same recipe."""
    digest = hashlib.sha256(plan.name.encode()).digest()
    return np.random.default_rng([plan.seed, int.from_bytes(digest[:8], "little"), model, chunk])
