"""Paired comparison of ablation variants against a baseline.

An ablation runs every variant over the same seeds, and a variant shares each seed's
initialisation and data order with the baseline. The comparison is therefore *paired*
by seed: the unit of evidence is the per-seed difference ``variant - baseline``, which
removes the seed-to-seed noise that both runs share.

For each variant :func:`compare` reports the mean paired difference, its t-based
confidence interval, a two-sided p-value (paired t-test, or an exact sign-flip
permutation test when there are too few seeds for the t-test's normality assumption
to be trusted), the Holm-corrected p-value across all variants, a verdict, and how
many seeds a paired t-test would need to detect the observed effect.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as sps

from dltricks.errors import DltricksError, did_you_mean, one_of

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


@dataclass
class VariantStats:
    """One row of the results sheet: a variant's scores and its paired comparison to the baseline."""

    variant: str
    n: int  # valid (non-missing, non-NaN) runs of this variant; mean and std are over them
    mean: float
    std: float  # sample std (ddof=1); nan if n < 2
    delta: float  # mean paired difference variant - baseline (nan for the baseline row)
    ci_low: float  # 95% t-based CI of the paired mean difference; nan if fewer than 2 paired seeds
    ci_high: float
    p: float  # two-sided paired p-value (nan for the baseline or with no paired seed)
    p_holm: float  # p Holm-corrected across the non-baseline variants
    verdict: str  # "helps" | "hurts" | "no evidence" | "baseline"
    seeds_needed: int | None  # paired seeds for 80% power at this effect; None if delta == 0 or undefined
    test: str  # "t" or "permutation" (which test gave p); "" for the baseline row
    seeds: list[int] = field(default_factory=list)  # seeds used in the pairing (all valid seeds for baseline)

    @property
    def n_paired(self) -> int:
        """How many seeds the paired comparison used."""
        return len(self.seeds)


def holm(p: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    The i-th smallest of m p-values is multiplied by (m - i) (i from 0), then a running
    maximum keeps the adjusted values monotone in the sorted order, capped at 1.
    NaN entries (variants that could not be tested) are left as NaN and do not count in m.
    """
    values = [float(x) for x in p]
    finite = sorted((v, i) for i, v in enumerate(values) if not math.isnan(v))
    m = len(finite)
    out = [math.nan] * len(values)
    running = 0.0
    for rank, (value, index) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * value))
        out[index] = running
    return out


def _valid(scores: Mapping[int, float]) -> dict[int, float]:
    """Seed -> score without missing or NaN scores (a failed or diverged run counts as missing)."""
    out = {}
    for seed, value in scores.items():
        if value is None:
            continue
        value = float(value)
        if not math.isnan(value):
            out[int(seed)] = value
    return out


def _describe(values: list[float]) -> tuple[float, float]:
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


def _permutation_p(diffs: np.ndarray) -> float:
    """Two-sided sign-flip permutation p-value of the mean paired difference.

    Under the null hypothesis (no effect) each difference is equally likely to have
    either sign. scipy's ``permutation_test`` with one sample and
    ``permutation_type="samples"`` flips signs; ``n_resamples=inf`` enumerates all
    2^n flips (exact), used up to 16 seeds.
    """
    exact = diffs.size <= MAX_EXACT_PERMUTATION
    result = sps.permutation_test(
        (diffs,),
        lambda x, axis: np.mean(x, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=np.inf if exact else PERMUTATION_RESAMPLES,
        alternative="two-sided",
        rng=0,
    )
    return float(min(1.0, result.pvalue))


def _paired_p(diffs: np.ndarray, test: str) -> tuple[float, str]:
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
        return float(sps.ttest_1samp(diffs, 0.0).pvalue), "t"
    # Too few seeds for "auto", requested explicitly, or the t statistic is undefined
    # (zero variance gives t = inf and p = 0, a false certainty).
    return _permutation_p(diffs), "permutation"


def _confidence_interval(diffs: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """t-based CI of the mean difference; nan if fewer than 2 differences."""
    n = diffs.size
    if n < 2:
        return math.nan, math.nan
    mean = float(diffs.mean())
    sem = float(diffs.std(ddof=1)) / math.sqrt(n)
    half = float(sps.t.ppf(0.5 + level / 2.0, n - 1)) * sem
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
    crit = sps.t.ppf(1.0 - alpha / 2.0, df)
    nc = abs(d) * math.sqrt(n)
    return float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))


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
    z = sps.norm.ppf(1.0 - alpha / 2.0) + sps.norm.ppf(power)
    n_normal = max(2, math.ceil((z / d) ** 2))
    if n_normal > 100_000:
        return max(floor, n_normal)
    n = max(2, n_normal - 1)
    while _t_power(d, n, alpha) < power:
        n += 1
    return max(floor, n)


def _verdict(p_holm: float, ci_low: float, ci_high: float, alpha: float, higher_is_better: bool) -> str:
    """'helps' / 'hurts' only when the corrected p is small AND the CI lies wholly on one side of 0."""
    if math.isnan(p_holm) or not p_holm < alpha or math.isnan(ci_low) or math.isnan(ci_high):
        return "no evidence"
    if ci_low > 0:
        return "helps" if higher_is_better else "hurts"
    if ci_high < 0:
        return "hurts" if higher_is_better else "helps"
    return "no evidence"


def compare(
    scores: Mapping[str, Mapping[int, float]],
    baseline: str,
    *,
    higher_is_better: bool,
    alpha: float = 0.05,
    test: str = "auto",
    unchanged: Collection[str] = (),
) -> list[VariantStats]:
    """Compare every variant with the baseline, paired by seed.

    ``scores[variant][seed]`` is the final metric of one run. Only seeds present (and
    not NaN) for both the variant and the baseline enter a pairing; failed runs are
    simply missing. ``test``: "t" (paired t-test), "permutation" (sign-flip permutation
    test, exact up to 16 seeds) or "auto" (t-test from 5 paired seeds, permutation
    below). Whatever is asked, differences that are all equal fall back to the
    permutation test (the t statistic is undefined), and differences that are all zero
    get p = 1 and "no evidence".

    A verdict needs the Holm-corrected p below ``alpha`` and the 95% confidence interval
    (always 95%, as the report labels it) wholly on one side of zero; its direction follows ``higher_is_better``.
    ``unchanged`` names variants known to be the baseline itself (the same recipe): whatever
    run-to-run noise their scores carry, they get p = 1 and never a verdict.
    Returns the baseline row first, then the variants in input order.
    """
    if test not in TESTS:
        raise DltricksError(f"unknown test {test!r}{did_you_mean(test, TESTS)}; valid: {one_of(TESTS)}")
    if not 0.0 < alpha < 1.0:
        raise DltricksError(f"alpha must be between 0 and 1, got {alpha}")
    if baseline not in scores:
        raise DltricksError(
            f"baseline {baseline!r} has no scores{did_you_mean(baseline, scores)}; variants: {one_of(scores)}"
        )

    base = _valid(scores[baseline])
    base_mean, base_std = _describe(list(base.values()))
    rows = [
        VariantStats(
            variant=baseline, n=len(base), mean=base_mean, std=base_std, delta=math.nan,
            ci_low=math.nan, ci_high=math.nan, p=math.nan, p_holm=math.nan, verdict="baseline",
            seeds_needed=None, test="", seeds=sorted(base),
        )
    ]
    for variant, variant_scores in scores.items():
        if variant == baseline:
            continue
        mine = _valid(variant_scores)
        paired = sorted(set(mine) & set(base))
        diffs = np.array([mine[s] - base[s] for s in paired], dtype=float)
        mean, std = _describe(list(mine.values()))
        p, used = (1.0, "") if variant in unchanged and diffs.size else _paired_p(diffs, test)
        ci_low, ci_high = _confidence_interval(diffs)
        rows.append(
            VariantStats(
                variant=variant, n=len(mine), mean=mean, std=std,
                delta=float(diffs.mean()) if diffs.size else math.nan,
                ci_low=ci_low, ci_high=ci_high, p=p, p_holm=math.nan, verdict="no evidence",
                seeds_needed=None if variant in unchanged else seeds_for_power(diffs, alpha, test=test),
                test=used, seeds=paired,
            )
        )

    adjusted = holm([row.p for row in rows[1:]])
    for row, p_holm in zip(rows[1:], adjusted):
        row.p_holm = p_holm
        row.verdict = _verdict(p_holm, row.ci_low, row.ci_high, alpha, higher_is_better)
    return rows
