"""Bootstrap confidence intervals and paired significance tests on per-question scores.

A RAG evaluation gives one score per question and configuration. Two configurations are compared on the
*same* questions, so the tests here are paired: they resample or sign-flip the per-question differences.
Everything is vectorised with numpy and seeded, so a report is reproducible to the last digit.

Example:
    >>> import numpy as np
    >>> a = np.array([0.2, 0.5, 0.4, 0.9, 0.1, 0.6])
    >>> ci = bootstrap_ci(a, seed=0)
    >>> ci.low <= ci.mean <= ci.high
    True
    >>> paired_test(a, a).p_value
    1.0

"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from heal_rag.errors import InvalidValueError

__all__ = [
    "ConfidenceInterval",
    "PairedComparison",
    "bootstrap_ci",
    "paired_test",
    "holm_adjust",
    "compare_configurations",
]

# Resamples are drawn in chunks so memory stays bounded (n_resamples x n_questions indices per chunk).
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class ConfidenceInterval:
    """Mean of the finite scores and its percentile-bootstrap confidence interval.

    Attributes:
        mean: mean of the finite values (NaN when there are none).
        low: lower bound of the interval.
        high: upper bound of the interval.
        n: number of finite values used.
        n_missing: number of NaN values left out (failed or skipped questions).
        confidence: the interval's confidence level, e.g. 0.95.

    """

    mean: float
    low: float
    high: float
    n: int
    n_missing: int
    confidence: float

    def to_dict(self) -> dict[str, float | int]:
        """Plain-JSON form."""
        return asdict(self)


@dataclass(frozen=True)
class PairedComparison:
    """Difference ``b - a`` of one metric between two configurations on the questions both scored.

    Attributes:
        metric: metric name.
        a: name of the first (baseline) configuration.
        b: name of the second configuration.
        mean_a: mean of ``a`` on the paired questions.
        mean_b: mean of ``b`` on the paired questions.
        diff: mean of ``b - a``.
        low: lower bound of the bootstrap CI of ``diff``.
        high: upper bound of the bootstrap CI of ``diff``.
        p_value: two-sided paired permutation (sign-flip) test p-value.
        p_wilcoxon: two-sided Wilcoxon signed-rank p-value (NaN when scipy cannot compute it).
        p_holm: ``p_value`` after Holm's correction over the metrics of this pair (filled in by
            :func:`compare_configurations`; equal to ``p_value`` otherwise).
        n: number of paired questions (both finite).
        n_ties: questions with identical scores (difference exactly 0).

    """

    metric: str
    a: str
    b: str
    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    p_value: float
    p_wilcoxon: float
    p_holm: float
    n: int
    n_ties: int

    @property
    def significant(self) -> bool:
        """True when the Holm-adjusted p-value is below 0.05."""
        return bool(self.p_holm < 0.05)

    def to_dict(self) -> dict[str, float | int | str | bool]:
        """Plain-JSON form (NaN kept as ``float('nan')``; the report writer maps it to null)."""
        out: dict[str, float | int | str | bool] = asdict(self)
        out["significant"] = self.significant
        return out


def _as_1d(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise InvalidValueError(
            f"{name} must be a 1-D sequence of per-question scores; got shape {array.shape}."
        )
    return array


def _check_params(n_resamples: int, confidence: float) -> None:
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise InvalidValueError(f"n_resamples must be a positive integer; got {n_resamples!r}.")
    if not 0.0 < confidence < 1.0:
        raise InvalidValueError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence!r}.")


def _bootstrap_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement) of ``values``, drawn in bounded chunks."""
    n = values.shape[0]
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    means = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        index = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[index].mean(axis=1)
    return means


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile bootstrap confidence interval of the mean of per-question scores.

    NaN values (failed or skipped questions) are left out and counted in ``n_missing``.

    Args:
        values: array of shape (n_questions,).
        n_resamples: number of bootstrap resamples.
        confidence: confidence level of the interval.
        seed: seed of the resampling generator.

    Returns:
        The mean with its interval; all NaN when no value is finite.

    """
    _check_params(n_resamples, confidence)
    array = _as_1d(values, "values")
    finite = array[np.isfinite(array)]
    n_missing = int(array.size - finite.size)
    if finite.size == 0:
        return ConfidenceInterval(math.nan, math.nan, math.nan, 0, n_missing, confidence)
    mean = float(finite.mean())
    if finite.size == 1 or np.all(finite == finite[0]):
        return ConfidenceInterval(mean, mean, mean, int(finite.size), n_missing, confidence)
    means = _bootstrap_means(finite, n_resamples, np.random.default_rng(seed))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    # The percentile interval can miss the sample mean by a rounding hair on tiny samples; clamp.
    return ConfidenceInterval(
        mean, float(min(low, mean)), float(max(high, mean)), int(finite.size), n_missing, confidence
    )


def _sign_flip_p_value(diffs: np.ndarray, n_resamples: int, rng: np.random.Generator) -> float:
    """Two-sided paired permutation test of mean(diffs) == 0 by random sign flips.

    Exact (all 2^n sign patterns) when n <= 16, otherwise Monte Carlo with the (count + 1) / (N + 1)
    correction so a p-value is never exactly 0.
    """
    n = diffs.shape[0]
    observed = abs(diffs.mean())
    # a float tolerance, so that re-ordered sums of the same numbers count as ties, not as smaller
    tolerance = 1e-12 * max(1.0, float(np.abs(diffs).max()))
    if n <= 16:
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        stats = np.abs((patterns * diffs).mean(axis=1))
        return float(np.mean(stats >= observed - tolerance))
    chunk = max(1, _CHUNK_ELEMENTS // n)
    count = 0
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        signs = rng.integers(0, 2, size=(size, n), dtype=np.int8) * 2 - 1
        stats = np.abs((signs * diffs).mean(axis=1))
        count += int(np.count_nonzero(stats >= observed - tolerance))
    return float((count + 1) / (n_resamples + 1))


def _wilcoxon_p_value(diffs: np.ndarray) -> float:
    from scipy import stats as scipy_stats

    if diffs.size == 0:
        return math.nan
    if np.all(diffs == 0):
        return 1.0  # identical systems: no evidence of a difference
    try:
        return float(scipy_stats.wilcoxon(diffs, zero_method="zsplit").pvalue)
    except ValueError:
        return math.nan


def paired_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    metric: str = "",
    name_a: str = "a",
    name_b: str = "b",
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Paired comparison of two configurations' per-question scores of one metric.

    Questions where either score is NaN are dropped from the pair. The difference is ``b - a``; its CI is
    a percentile bootstrap over questions; the p-value is a two-sided sign-flip permutation test (exact
    for up to 16 questions), and a Wilcoxon signed-rank p-value is given beside it.

    Args:
        a: scores of shape (n_questions,) of the baseline configuration.
        b: scores of shape (n_questions,) of the other configuration, same question order.
        metric: metric name, carried into the result.
        name_a: name of configuration ``a``.
        name_b: name of configuration ``b``.
        n_resamples: bootstrap / permutation resamples.
        confidence: confidence level of the interval of the difference.
        seed: seed of every random draw.
        pairs: ``(a, b)`` pairs to compare (difference ``b - a``); None: every pair, in ``scores`` order.

    Returns:
        A :class:`PairedComparison`.

    Raises:
        ValueError: when ``a`` and ``b`` have different lengths.

    """
    _check_params(n_resamples, confidence)
    array_a, array_b = _as_1d(a, "a"), _as_1d(b, "b")
    if array_a.shape != array_b.shape:
        raise InvalidValueError(
            f"Paired scores must cover the same questions: got {array_a.size} scores for {name_a!r} and "
            f"{array_b.size} for {name_b!r}."
        )
    keep = np.isfinite(array_a) & np.isfinite(array_b)
    array_a, array_b = array_a[keep], array_b[keep]
    n = int(keep.sum())
    if n == 0:
        nan = math.nan
        return PairedComparison(metric, name_a, name_b, nan, nan, nan, nan, nan, nan, nan, nan, 0, 0)
    diffs = array_b - array_a
    rng = np.random.default_rng(seed)
    ci = bootstrap_ci(diffs, n_resamples=n_resamples, confidence=confidence, seed=seed)
    p_value = _sign_flip_p_value(diffs, n_resamples, rng)
    return PairedComparison(
        metric=metric,
        a=name_a,
        b=name_b,
        mean_a=float(array_a.mean()),
        mean_b=float(array_b.mean()),
        diff=ci.mean,
        low=ci.low,
        high=ci.high,
        p_value=p_value,
        p_wilcoxon=_wilcoxon_p_value(diffs),
        p_holm=p_value,
        n=n,
        n_ties=int(np.count_nonzero(diffs == 0)),
    )


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN entries stay NaN and are not counted)."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return adjusted.tolist()
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def compare_configurations(
    scores: Mapping[str, Mapping[str, Sequence[float] | np.ndarray]],
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> list[PairedComparison]:
    """Paired comparisons of every metric between pairs of configurations.

    Args:
        scores: ``{configuration: {metric: per-question scores}}``; within a metric every configuration's
            array has the same question order. The first configuration is the baseline ``a`` of its pairs.
        n_resamples: bootstrap / permutation resamples.
        confidence: confidence level.
        seed: seed of every random draw.
        pairs: ``(a, b)`` pairs to compare (difference ``b - a``); None: every pair, in ``scores`` order.

    Returns:
        One :class:`PairedComparison` per (pair, metric present in both), with ``p_holm`` adjusted over the
        metrics of each pair.

    """
    names = list(scores)
    out: list[PairedComparison] = []
    for name_a, name_b in itertools.combinations(names, 2) if pairs is None else pairs:
        if name_a not in scores or name_b not in scores:
            raise InvalidValueError(
                f"Cannot compare {name_a!r} with {name_b!r}: known configurations are {names}."
            )
        metrics = [m for m in scores[name_a] if m in scores[name_b]]
        pair = [
            paired_test(
                scores[name_a][metric],
                scores[name_b][metric],
                metric=metric,
                name_a=name_a,
                name_b=name_b,
                n_resamples=n_resamples,
                confidence=confidence,
                seed=seed,
            )
            for metric in metrics
        ]
        adjusted = holm_adjust([c.p_value for c in pair])
        out.extend(
            PairedComparison(**{**asdict(c), "p_holm": p}) for c, p in zip(pair, adjusted, strict=True)
        )
    return out
