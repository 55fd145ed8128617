"""Paired tests and intervals on per-seed differences ``variant - baseline``: Holm's correction, the
paired t-test and the exact sign-flip (permutation) test, the t confidence interval, and how many seeds a
test needs for a given power. The verdict rule built on them is :mod:`dltricks.ledger.rope`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

# The t, normal and noncentral t distributions as scipy.special's functions (what scipy.stats.t and
# friends call inside): scipy.stats itself takes 1-2 s to import, a tenth of a small study.
from scipy.special import nctdtr, ndtri, stdtr, stdtrit

TESTS = ("auto", "t", "permutation")
# Below this many paired seeds, "auto" uses the exact permutation test: the t-test's
# normality assumption cannot be checked on so few differences.
MIN_SEEDS_FOR_T = 5
# Up to this many seeds the permutation test enumerates all 2^n sign flips (65 536 at 16).
MAX_EXACT_PERMUTATION = 16
# Beyond it, a Monte Carlo permutation test with a fixed seed, so reports are reproducible.
PERMUTATION_RESAMPLES = 9999
POWER = 0.8
CI_LEVEL = 0.95


def holm_array(p: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values along the last axis (variants), vectorised over the others.

    The i-th smallest of m p-values is multiplied by (m - i) (i from 0), then a running
    maximum keeps the adjusted values monotone in the sorted order, capped at 1.
    NaN entries (variants that could not be tested) stay NaN and do not count in m.
    """
    p = np.asarray(p, dtype=float)
    if p.shape[-1] == 0:
        return p.copy()
    finite = ~np.isnan(p)
    m = finite.sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(finite, p, np.inf), axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)  # NaN last
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(p.shape[-1])) * ranked), axis=-1)
    out = np.empty_like(p)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def holm(p: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values of a list, in the input order (see :func:`holm_array`)."""
    return [float(x) for x in holm_array(np.asarray([float(v) for v in p], dtype=float))]


def valid_scores(scores: Mapping[int, float]) -> dict[int, float]:
    """Seed -> score without missing or NaN scores (a failed or diverged run counts as missing)."""
    out = {}
    for seed, value in scores.items():
        if value is None:
            continue
        value = float(value)
        if not math.isnan(value):
            out[int(seed)] = value
    return out


def describe(values: list[float]) -> tuple[float, float]:
    """Mean and sample std, NaN where undefined."""
    if not values:
        return math.nan, math.nan
    arr = np.asarray(values, dtype=float)
    std = float(arr.std(ddof=1)) if arr.size >= 2 else math.nan
    return float(arr.mean()), std


def _is_constant(diffs: np.ndarray) -> bool:
    """True if all differences are equal (zero variance), where the t statistic is undefined.

    Uses a relative tolerance because subtracting floats can leave tiny rounding noise
    around an effect that is, for practical purposes, a constant shift.
    """
    return bool(np.all(np.abs(diffs - diffs[0]) <= 1e-12 * max(1.0, float(np.abs(diffs).max()))))


def _signflip_means(diffs: np.ndarray) -> np.ndarray:
    """The mean of ``diffs`` under each of its 2^n sign flips (up to 16 seeds: 65 536 flips)."""
    n = diffs.size
    signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    return (signs * diffs).mean(axis=1)


def _permutation_p(diffs: np.ndarray) -> float:
    """Two-sided sign-flip permutation p-value of the mean paired difference.

    Under the null hypothesis (no effect) each difference is equally likely to have
    either sign. Up to 16 seeds all 2^n flips are enumerated (exact), counted as scipy's
    ``permutation_test`` counts them (twice the smaller tail, ties within 100 ulp); beyond,
    scipy's Monte Carlo ``permutation_test`` with a fixed seed (imported only then: it is slow to import).
    """
    if diffs.size <= MAX_EXACT_PERMUTATION:
        means, observed = _signflip_means(diffs), diffs.mean()
        tie = abs(observed) * np.finfo(float).eps * 100
        less, greater = np.mean(means <= observed + tie), np.mean(means >= observed - tie)
        return float(min(1.0, 2.0 * min(less, greater)))
    from scipy.stats import permutation_test

    result = permutation_test((diffs,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                              vectorized=True, n_resamples=PERMUTATION_RESAMPLES, alternative="two-sided", rng=0)
    return float(min(1.0, result.pvalue))


def t_sf(t: np.ndarray | float, df: np.ndarray | float) -> np.ndarray:
    """P(T > t) for Student's t with ``df`` degrees of freedom (scipy.stats.t.sf)."""
    return stdtr(df, -np.asarray(t, dtype=float))


def paired_p(diffs: np.ndarray, test: str) -> tuple[float, str]:
    """(two-sided p, test used) for paired differences; see :func:`compare` for the rules."""
    if diffs.size == 0:
        return math.nan, ""
    if np.all(diffs == 0):
        # A trick that changes nothing: every sign flip gives the same mean, so the exact
        # permutation p is 1. Stated directly so no test can ever find "evidence" here.
        return 1.0, "permutation"
    if diffs.size == 1:
        # One pair (a study still running, or every other seed failed): both sign flips give the
        # same |mean|, so the exact two-sided p is 1. scipy's permutation_test refuses one sample.
        return 1.0, "permutation"
    use_t = test == "t" or (test == "auto" and diffs.size >= MIN_SEEDS_FOR_T)
    if use_t and diffs.size >= 2 and not _is_constant(diffs):
        # ttest_rel(variant, baseline) is the one-sample t-test of these differences.
        t = diffs.mean() / (diffs.std(ddof=1) / math.sqrt(diffs.size))
        return float(min(1.0, 2.0 * t_sf(abs(t), diffs.size - 1))), "t"
    # Too few seeds for "auto", requested explicitly, or the t statistic is undefined
    # (zero variance gives t = inf and p = 0, a false certainty).
    return _permutation_p(diffs), "permutation"


def confidence_interval(diffs: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """t-based CI of the mean difference; nan if fewer than 2 differences."""
    n = diffs.size
    if n < 2:
        return math.nan, math.nan
    mean = float(diffs.mean())
    sem = float(diffs.std(ddof=1)) / math.sqrt(n)
    half = float(stdtrit(n - 1, 0.5 + level / 2.0)) * sem
    return mean - half, mean + half


def _min_permutation_seeds(alpha: float) -> int:
    """Fewest paired seeds with which the exact sign-flip test can reach p < alpha at all.

    Its smallest two-sided p is 2 / 2^n (0.125 at n = 4, 0.031 at n = 6), so fewer seeds
    can never give a verdict, however large the effect.
    """
    n = 1
    while 2.0 / 2.0**n >= alpha:
        n += 1
    return n


def _min_seeds_for_test(test: str, alpha: float) -> int:
    """Fewest paired seeds with which ``test`` (as chosen by :func:`compare`) can reach p < alpha."""
    if test == "permutation":
        return _min_permutation_seeds(alpha)
    if test == "auto":
        # Permutation below MIN_SEEDS_FOR_T, t-test (which can reach any alpha) from there.
        return min(_min_permutation_seeds(alpha), MIN_SEEDS_FOR_T)
    return 2


def _t_power(d: float, n: int, alpha: float) -> float:
    """Power of the two-sided paired t-test with effect size d (mean/sd of differences) and n pairs."""
    df = n - 1
    crit = stdtrit(df, 1.0 - alpha / 2.0)
    nc = abs(d) * math.sqrt(n)
    return float(1.0 - nctdtr(df, nc, crit) + nctdtr(df, nc, -crit))


def seeds_for_power(diffs: np.ndarray, alpha: float = 0.05, power: float = POWER, test: str = "t") -> int | None:
    """Paired seeds a two-sided paired t-test needs to detect the observed effect with given power.

    Effect size d = mean(diffs) / sd(diffs). The count comes from the exact power of the
    t-test (noncentral t distribution), searched upward from one below the normal
    approximation n = ((z_{1-alpha/2} + z_power) / d)^2 (the t-test needs at least as many).
    Beyond 100 000 seeds the normal approximation is returned (the two agree there).
    It is not corrected for multiple comparisons (Holm), so with several variants it is
    a lower bound. The result is at least the fewest seeds with which ``test`` can reach
    alpha at all (5 for "auto", 6 for "permutation" at alpha = 0.05). None when there is
    no effect (delta == 0) or fewer than 2 differences. A perfectly consistent non-zero
    effect (zero variance, so the permutation test) needs only that test's minimum.
    """
    if diffs.size < 2:
        return None
    mean = float(diffs.mean())
    if mean == 0.0 or not math.isfinite(mean):
        return None
    if _is_constant(diffs):
        # Zero variance: compare() always uses the permutation test here, and any n it can decide on is enough.
        return _min_permutation_seeds(alpha)
    floor = _min_seeds_for_test(test, alpha)
    d = mean / float(diffs.std(ddof=1))
    z = ndtri(1.0 - alpha / 2.0) + ndtri(power)
    n_normal = max(2, math.ceil((z / d) ** 2))
    if n_normal > 100_000:
        return max(floor, n_normal)
    n = max(2, n_normal - 1)
    while _t_power(d, n, alpha) < power:
        n += 1
    return max(floor, n)


def signflip_one_sided(diffs: np.ndarray) -> float:
    """Exact one-sided sign-flip p that the mean of ``diffs`` is above 0 (all 2^n flips up to 16 seeds)."""
    n = diffs.size
    if n <= MAX_EXACT_PERMUTATION:
        means = _signflip_means(diffs)
    else:
        means = (np.random.default_rng(0).choice([-1, 1], size=(PERMUTATION_RESAMPLES, n)) * diffs).mean(axis=1)
    observed = diffs.mean()
    return float(np.mean(means >= observed - 1e-12 * max(1.0, abs(observed))))
