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


def needs_stats(plan: TensorPlan) -> bool:
    """Whether `plan.method` looks at the whole tensor before merging a chunk of it."""
    return plan.method in ("slerp", "ties")


def gather_stats(plan: TensorPlan, chunks: Chunks) -> TensorStats:
    """The whole-tensor statistics `plan.method` needs (one pass over `chunks`, rarely more)."""
    if plan.method == "slerp":
        dot = first = second = 0.0
        for base, other in chunks():
            dot += float(np.dot(base.ravel(), other.ravel()))
            first += float(np.dot(base.ravel(), base.ravel()))
            second += float(np.dot(other.ravel(), other.ravel()))
        norms = np.sqrt(first) * np.sqrt(second)
        return TensorStats(cosine=dot / norms if norms > 0 else 1.0)
    if plan.method == "ties":
        searches = [_BandSearch(density) for density in plan.densities]
        for base, *models in chunks():
            for search, model in zip(searches, models, strict=True):
                search.add(np.abs(model - base).ravel())
        thresholds = []
        for index, (search, density) in enumerate(zip(searches, plan.densities, strict=True)):
            found = search.result()
            if found is None:  # the first chunk misjudged where the k-th largest lies

                def magnitudes(index: int = index) -> Iterable[np.ndarray]:
                    for base, *models in chunks():
                        yield np.abs(models[index] - base).ravel()

                found = kept_above(magnitudes, density)
            thresholds.append(found)
        return TensorStats(thresholds=thresholds)
    return TensorStats()


class _BandSearch:
    """The k-th largest of all values (k = int(density * count)) in one pass, usually: the
    first chunk says where it lies, a band of values around that point is kept and the values
    above the band are counted. Exact when the k-th largest falls in the band; `result` is None
    when it does not (or when the band grew too large), and the caller falls back to
    `kept_above`."""

    SHARE = 0.02
    """The band: from density - SHARE to density + SHARE of the first chunk, ranked from the top."""
    SAMPLE = 1 << 16
    """Values of the first chunk that place the band."""
    MAX_KEPT = 1 << 23
    """Give up (and fall back) beyond this many values in the band: many equal changes."""

    def __init__(self, density: float) -> None:
        self.density = density
        self.count = self.above = 0
        self.band: list[np.ndarray] | None = []
        self.kept = 0
        self.low = self.high = 0.0

    def add(self, values: np.ndarray) -> None:
        if self.density >= 1 or self.band is None:
            self.count += values.size
            return
        if self.count == 0:
            sample = values[:: max(1, values.size // self.SAMPLE)]
            top, bottom = self._band_ranks(sample.size)
            edges = np.partition(sample, [bottom, top])
            self.low, self.high = float(edges[bottom]), float(edges[top])
        self.count += values.size
        self.above += int(np.count_nonzero(values > self.high))
        inside = values[(values >= self.low) & (values <= self.high)]
        self.kept += inside.size
        self.band = self.band + [inside] if self.kept <= self.MAX_KEPT else None

    def _band_ranks(self, size: int) -> tuple[int, int]:
        """Ascending positions of the band's top and bottom in a chunk of `size` values."""
        fewest = max(1, int((self.density - self.SHARE) * size))
        most = min(size, max(1, int((self.density + self.SHARE) * size)))
        return size - fewest, size - most

    def result(self) -> float | None:
        if self.density >= 1:
            return 0.0
        k = int(self.density * self.count)
        if k <= 0:
            return float("inf")
        if self.band is None:
            return None
        band = np.concatenate(self.band) if self.band else np.zeros(0, np.float32)
        rank = k - self.above  # the k-th largest is the rank-th largest in the band
        if not 0 < rank <= band.size:
            return None
        return float(np.partition(band, band.size - rank)[band.size - rank])


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
        for delta, threshold in zip(deltas, stats.thresholds, strict=True):
            np.multiply(delta, np.abs(delta) >= threshold, out=delta)  # (7x faster than [mask] = 0)
    elif plan.method in ("dare_ties", "dare_linear"):
        deltas = [
            dare_drop(delta, density, random(plan, index, chunk))
            for index, (delta, density) in enumerate(zip(deltas, plan.densities, strict=True))
        ]
    consensus = plan.method in ("ties", "dare_ties")
    merged = combine(deltas, plan.weights, plan.normalize, consensus)
    if plan.scale != 1:
        merged *= np.float32(plan.scale)
    merged += base
    return merged


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
    kept = np.multiply(delta, keep, dtype=np.float32)
    kept /= np.float32(density)
    return kept


def combine(
    deltas: list[np.ndarray], weights: list[float], normalize: bool, consensus: bool
) -> np.ndarray:
    """The weighted task vectors summed; with `consensus` (TIES's sign election) only the
    changes agreeing with the sign of their sum count, and the divisor is their weights.
    In float32, one model at a time: no stacked copies of the models."""
    weighted = [
        np.multiply(d, np.float32(w), dtype=np.float32)
        for w, d in zip(weights, deltas, strict=True)
    ]
    total = weighted[0].copy()
    for term in weighted[1:]:
        total += term
    if consensus and len(deltas) == 1:  # one model: every change agrees with itself
        return deltas[0].copy() if normalize else total
    if not consensus:
        divisor = sum(weights)
        if normalize and abs(divisor) >= 1e-8:
            total /= np.float32(divisor)
        return total
    sign = np.copysign(np.float32(1), total)  # +1 where the sum is >= 0 (at -0 nothing agrees)
    mixed = np.zeros_like(total)
    divisor_per_value = np.zeros_like(total)
    for weight, term in zip(weights, weighted, strict=True):
        agreeing = np.multiply(term, sign)
        np.maximum(agreeing, 0, out=agreeing)  # |term| where its sign agrees, else 0
        mixed += agreeing
        if normalize:  # (np.sign and masked ufuncs are ten times slower than this)
            divisor_per_value += (agreeing > 0) * np.float32(weight)
    mixed *= sign
    if not normalize:
        return mixed
    divisor_per_value[divisor_per_value == 0] = 1.0
    mixed /= divisor_per_value
    return mixed


def random(plan: TensorPlan, model: int, chunk: int) -> np.random.Generator:
    """DARE's generator for one model's chunk of one tensor: the same for the same recipe."""
    digest = hashlib.sha256(plan.name.encode()).digest()
    return np.random.default_rng([plan.seed, int.from_bytes(digest[:8], "little"), model, chunk])
