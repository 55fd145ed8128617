"""Paired comparison of ablation variants against a baseline.

An ablation runs every variant over the same seeds, and a variant shares each seed's
initialisation and data order with the baseline. The comparison is therefore *paired*
by seed: the unit of evidence is the per-seed difference ``variant - baseline``, which
removes the seed-to-seed noise that both runs share.

For each variant :func:`compare` reports the mean paired difference, its t-based 95%
confidence interval, the posterior probabilities that the variant is worse, equivalent (inside
the region of practical equivalence, ROPE) or better, one of four verdicts (helps, hurts,
equivalent, inconclusive with its reason) under a rule that holds the family-wise error at
alpha from 3 seeds on (see the comment above :func:`rope_tests`), an exact sign-flip cross-check
from 6 seeds, how many seeds the rule needs at the observed effect, and the classic
"any difference" p-value with Holm's correction. :func:`sequential_compare` judges a study that
adds seeds in rounds (``--seeds auto``) with alpha spent over its looks.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

# The t, normal and noncentral t distributions as scipy.special's functions (what scipy.stats.t and
# friends call inside): scipy.stats itself takes 1-2 s to import, a tenth of a small study.
from scipy.special import nctdtr, ndtri, stdtr, stdtrit

from dltricks.errors import DltricksError, did_you_mean, one_of
from dltricks.ledger.looks import MIN_SEEDS, auto_schedule  # noqa: F401 - auto_schedule is part of this API

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
    """One row of the results sheet: a variant's scores, its paired comparison to the baseline, its verdict."""

    variant: str
    n: int  # valid (non-missing, non-NaN) runs of this variant; mean and std are over them
    mean: float
    std: float  # sample std (ddof=1); nan if n < 2
    delta: float  # mean paired difference variant - baseline (nan for the baseline row)
    ci_low: float  # 95% t-based CI of the paired mean difference; nan if fewer than 2 paired seeds
    ci_high: float
    p: float  # two-sided paired p-value of "no difference" (t or sign-flip, see ``test``)
    p_holm: float  # p Holm-corrected across the non-baseline variants
    verdict: str  # "helps" | "hurts" | "equivalent" | "inconclusive" | "baseline"
    seeds_needed: int | None  # paired seeds the decision rule needs at this effect and noise (after correction)
    test: str  # "t" or "permutation" (which test gave p); "" for the baseline row
    seeds: list[int] = field(default_factory=list)  # seeds used in the pairing (all valid seeds for baseline)
    # --- the numbers behind the verdict (see :func:`compare`) ---
    rope: float = math.nan  # half-width of the region of practical equivalence, metric units
    reason: str = ""  # one line: why this verdict (for inconclusive: what is missing)
    prob_better: float = math.nan  # posterior P(better by more than the ROPE)
    prob_rope: float = math.nan  # posterior P(inside the ROPE)
    prob_worse: float = math.nan  # posterior P(worse by more than the ROPE)
    p_beyond: float = math.nan  # p of "not beyond the ROPE" in the observed direction (x2, two-sided)
    p_beyond_holm: float = math.nan
    p_equiv: float = math.nan  # TOST p of "not inside the ROPE"
    p_equiv_holm: float = math.nan
    alpha: float = math.nan  # the level each corrected p was held to (alpha / looks in a sequential study)
    p_signflip: float = math.nan  # exact one-sided sign-flip p of the verdict's direction (from 6 seeds)
    fragile: bool = False  # helps/hurts that the sign-flip cross-check does not confirm
    look: int | None = None  # sequential study: the number of seeds at which the verdict was reached

    @property
    def n_paired(self) -> int:
        """How many seeds the paired comparison used."""
        return len(self.seeds)


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


def _t_sf(t: np.ndarray | float, df: np.ndarray | float) -> np.ndarray:
    """P(T > t) for Student's t with ``df`` degrees of freedom (scipy.stats.t.sf)."""
    return stdtr(df, -np.asarray(t, dtype=float))


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
        t = diffs.mean() / (diffs.std(ddof=1) / math.sqrt(diffs.size))
        return float(min(1.0, 2.0 * _t_sf(abs(t), diffs.size - 1))), "t"
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


ROPE_BOUNDED = 0.005  # half-width for metrics in [0, 1] (accuracy, Dice, IoU, F1, AUC): half a percentage point
ROPE_RELATIVE = 0.01  # otherwise 1% of the baseline's mean
BOUNDED_WORDS = ("accuracy", "acc", "dice", "iou", "f1", "auc", "precision", "recall", "jaccard", "top1", "top5")
SIGNFLIP_FROM = 6  # the exact sign-flip cross-check can reach p < .05 (one-sided: 1/64) from here
VERDICTS = ("helps", "hurts", "equivalent", "inconclusive")


def default_rope(metric: str, baseline_mean: float = math.nan) -> float:
    """The ROPE half-width in metric units when the user gives none.

    0.005 for a metric in [0, 1] (known by its name: accuracy, Dice, IoU, F1, AUC...);
    otherwise 1% of the baseline's mean (|mean|), or 0.005 where that is unknown or zero.
    """
    words = metric.lower().replace("-", "_").split("_")
    if any(w in BOUNDED_WORDS for w in words):
        return ROPE_BOUNDED
    if math.isfinite(baseline_mean) and baseline_mean != 0.0:
        return ROPE_RELATIVE * abs(baseline_mean)
    return ROPE_BOUNDED


# ---- the decision rule -----------------------------------------------------------------------------
#
# The posterior of the mean paired difference mu under a flat prior on (mu, log sigma) is a
# Student-t with n - 1 degrees of freedom, centred on the mean difference, scaled by sd / sqrt(n)
# (Benavoli et al. 2017, "Time for a change", JMLR 18; Corani & Benavoli 2015). Its tail masses
# are exactly the one-sided paired t-test p-values, so the rule can be read both ways:
#
#   helps / hurts  P(mu beyond the ROPE, in that direction) >= 1 - a/2, i.e. the one-sided t-test of
#                  "mu is not beyond the ROPE" rejects at a/2 (two one-sided tests, one per direction);
#   equivalent     P(mu inside the ROPE) high: TOST (two one-sided t-tests at the ROPE's edges) rejects;
#   inconclusive   neither.
#
# a is alpha after Holm's correction across the variants, done separately for the two claims; a
# sequential study (seeds = auto) also divides alpha by its number of looks (Bonferroni alpha
# spending), so that the family-wise error over all looks stays at or below alpha.


def _sd_floor(mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """sd, but never exactly 0: differences that are all equal make a perfectly consistent effect
    (a deterministic shift), which the rule should treat as overwhelming evidence, not a 0/0."""
    return np.maximum(sd, 1e-12 * np.maximum(1.0, np.abs(mean)))


def rope_tests(mean: np.ndarray, sd: np.ndarray, n: np.ndarray, rope: float | np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p_up, p_down, p_equiv) of paired differences with this mean, sd (ddof=1) and count n.

    Array arguments broadcast (any shape: studies x variants in a simulation). ``p_up`` is
    P(mu <= rope) under the posterior (= the one-sided t-test p of "not better than +rope");
    ``p_down`` is P(mu >= -rope); ``p_equiv`` = max(P(mu <= -rope), P(mu >= rope)) (TOST).
    NaN where n < 2.
    """
    mean, sd, n = (np.asarray(x, dtype=float) for x in (mean, sd, n))
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(n >= 2, n - 1, np.nan)
        se = _sd_floor(mean, sd) / np.sqrt(n)
        p_up = stdtr(df, (rope - mean) / se)
        p_down = stdtr(df, (mean + rope) / se)
        p_equiv = np.maximum(stdtr(df, (-rope - mean) / se), _t_sf((rope - mean) / se, df))
    return p_up, p_down, p_equiv


HELPS_UP, HELPS_DOWN, EQUIVALENT, INCONCLUSIVE = 1, -1, 0, 2


def decide(mean: np.ndarray, sd: np.ndarray, n: np.ndarray, rope: float | np.ndarray, alpha: float
           ) -> dict[str, np.ndarray]:
    """The verdicts of a family of variants, vectorised: the last axis is the variants.

    Returns arrays of that shape: ``code`` (HELPS_UP: beyond +rope, HELPS_DOWN: beyond -rope,
    EQUIVALENT, INCONCLUSIVE), ``p_beyond`` and ``p_equiv`` with their Holm-corrected values.
    Variants with fewer than MIN_SEEDS paired seeds (or NaN statistics) are not tested and do not
    count in Holm's m. :func:`compare` calls this; the simulation tests call it on thousands of
    simulated studies at once.
    """
    n = np.asarray(n, dtype=float)
    p_up, p_down, p_equiv = rope_tests(mean, sd, n, rope)
    tested = (n >= MIN_SEEDS) & ~np.isnan(p_up) & ~np.isnan(p_down)
    p_beyond = np.where(tested, np.minimum(1.0, 2.0 * np.minimum(p_up, p_down)), np.nan)
    p_equiv = np.where(tested, p_equiv, np.nan)
    beyond_holm, equiv_holm = holm_array(p_beyond), holm_array(p_equiv)
    code = np.full(p_beyond.shape, INCONCLUSIVE)
    code = np.where(equiv_holm < alpha, EQUIVALENT, code)
    code = np.where((beyond_holm < alpha) & (p_up < p_down), HELPS_UP, code)
    code = np.where((beyond_holm < alpha) & (p_down <= p_up), HELPS_DOWN, code)
    return {"code": code, "p_beyond": p_beyond, "p_beyond_holm": beyond_holm, "p_equiv": p_equiv,
            "p_equiv_holm": equiv_holm, "p_up": p_up, "p_down": p_down}


def seeds_needed(mean: float, sd: float, rope: float, alpha_each: float, *, limit: int = 100_000) -> int | None:
    """Paired seeds this rule needs to decide at the observed mean and sd of the differences.

    ``alpha_each`` is the level one variant is held to in the worst case of the correction
    (alpha / (variants x looks): Holm's first step, Bonferroni over looks), so the count holds
    whatever the other variants do. Beyond the ROPE the t statistic of |mean| - rope must pass the
    one-sided critical value at alpha_each / 2; inside it, the TOST's rope - |mean| at alpha_each.
    The count is "at the observed values" (about even odds of deciding with that many seeds), never
    fewer than MIN_SEEDS. None when |mean| sits on the ROPE's edge (no number of seeds decides) or
    the statistics are undefined; ``limit`` when even that many would not do.
    """
    if not (math.isfinite(mean) and math.isfinite(sd)):
        return None
    margin = abs(abs(mean) - rope)
    if margin == 0.0:
        return None
    level = alpha_each / 2.0 if abs(mean) > rope else alpha_each
    sd = float(_sd_floor(np.asarray(mean), np.asarray(sd)))

    def decides(n: int) -> bool:  # the t statistic grows with n and the critical value falls: monotone
        return bool(margin / (sd / math.sqrt(n)) >= -stdtrit(n - 1, level))  # t.isf(level, n - 1)

    if not decides(limit):
        return limit
    lo, hi = MIN_SEEDS - 1, limit  # decides(hi) holds; decides(lo) is taken as false
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decides(mid) else (mid, hi)
    return hi


def _signflip_one_sided(diffs: np.ndarray) -> float:
    """Exact one-sided sign-flip p that the mean of ``diffs`` is above 0 (all 2^n flips up to 16 seeds)."""
    n = diffs.size
    if n <= MAX_EXACT_PERMUTATION:
        means = _signflip_means(diffs)
    else:
        means = (np.random.default_rng(0).choice([-1, 1], size=(PERMUTATION_RESAMPLES, n)) * diffs).mean(axis=1)
    observed = diffs.mean()
    return float(np.mean(means >= observed - 1e-12 * max(1.0, abs(observed))))


def _verdict_word(code: int, higher_is_better: bool) -> str:
    if code == EQUIVALENT:
        return "equivalent"
    if code == INCONCLUSIVE:
        return "inconclusive"
    return "helps" if (code == HELPS_UP) == higher_is_better else "hurts"


def compare(
    scores: Mapping[str, Mapping[int, float]],
    baseline: str,
    *,
    higher_is_better: bool,
    alpha: float = 0.05,
    test: str = "auto",
    unchanged: Collection[str] = (),
    rope: float | None = None,
    metric: str = "",
    looks: int = 1,
) -> list[VariantStats]:
    """Compare every variant with the baseline, paired by seed, and give each a verdict.

    ``scores[variant][seed]`` is the final metric of one run. Only seeds present (and not NaN)
    for both the variant and the baseline enter a pairing; failed runs are simply missing.

    Verdicts (see the comment above :func:`rope_tests`): ``helps`` / ``hurts`` when the posterior
    of the mean paired difference puts at least 1 - a/2 of its mass beyond the ROPE on one side,
    ``equivalent`` when the TOST shows it inside the ROPE, ``inconclusive`` otherwise (with the
    reason in ``.reason``), where a is ``alpha`` / ``looks`` after Holm's correction across the
    variants. Fewer than 3 paired seeds: inconclusive. ``rope`` is the ROPE half-width in metric
    units (default :func:`default_rope` of ``metric`` and the baseline's mean); direction follows
    ``higher_is_better``. From 6 paired seeds the exact sign-flip test cross-checks every helps /
    hurts (one-sided, uncorrected, beyond the ROPE): a verdict it does not confirm is ``fragile``.

    ``p`` / ``p_holm`` keep the classic "is there any difference" test: ``test`` "t" (paired
    t-test), "permutation" (sign-flip, exact up to 16 seeds) or "auto" (t from 5 paired seeds);
    differences that are all equal use the sign-flip test, all zero get p = 1. With ``test =
    "permutation"`` a helps/hurts also needs that Holm-corrected p below alpha.
    ``unchanged`` names variants known to be the baseline itself (the same recipe): whatever
    run-to-run noise their scores carry, they are ``equivalent`` and count in no correction.
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
    if rope is not None and not (math.isfinite(rope) and rope >= 0):
        raise DltricksError(f"the ROPE half-width must be a number >= 0 in metric units, got {rope}")
    if looks < 1:
        raise DltricksError(f"looks must be at least 1, got {looks}")

    base = _valid(scores[baseline])
    base_mean, base_std = _describe(list(base.values()))
    rope = default_rope(metric, base_mean) if rope is None else float(rope)
    level = alpha / looks
    rows = [
        VariantStats(
            variant=baseline, n=len(base), mean=base_mean, std=base_std, delta=math.nan,
            ci_low=math.nan, ci_high=math.nan, p=math.nan, p_holm=math.nan, verdict="baseline",
            seeds_needed=None, test="", seeds=sorted(base), rope=rope, alpha=level,
        )
    ]
    all_diffs: list[np.ndarray] = []
    for variant, variant_scores in scores.items():
        if variant == baseline:
            continue
        mine = _valid(variant_scores)
        paired = sorted(set(mine) & set(base))
        diffs = np.array([mine[s] - base[s] for s in paired], dtype=float)
        all_diffs.append(diffs)
        mean, std = _describe(list(mine.values()))
        p, used = (1.0, "") if variant in unchanged and diffs.size else _paired_p(diffs, test)
        ci_low, ci_high = _confidence_interval(diffs)
        rows.append(
            VariantStats(
                variant=variant, n=len(mine), mean=mean, std=std,
                delta=float(diffs.mean()) if diffs.size else math.nan,
                ci_low=ci_low, ci_high=ci_high, p=p, p_holm=math.nan, verdict="inconclusive",
                seeds_needed=None, test=used, seeds=paired, rope=rope, alpha=level,
            )
        )
    variants = rows[1:]
    for row, p_holm in zip(variants, holm([row.p if row.variant not in unchanged else math.nan
                                            for row in variants])):
        row.p_holm = 1.0 if row.variant in unchanged and row.seeds else p_holm
    if not variants:
        return rows

    # The decision rule, on every variant at once (the unchanged ones are not tested: n = 0).
    means = np.array([d.mean() if d.size else np.nan for d in all_diffs])
    sds = np.array([d.std(ddof=1) if d.size >= 2 else np.nan for d in all_diffs])
    ns = np.array([0 if row.variant in unchanged else d.size for row, d in zip(variants, all_diffs)])
    got = decide(means, sds, ns, rope, level)
    m = max(1, int(np.sum(ns >= MIN_SEEDS)))
    for i, (row, diffs) in enumerate(zip(variants, all_diffs)):
        row.p_beyond, row.p_beyond_holm = float(got["p_beyond"][i]), float(got["p_beyond_holm"][i])
        row.p_equiv, row.p_equiv_holm = float(got["p_equiv"][i]), float(got["p_equiv_holm"][i])
        if ns[i] >= 2:
            up, down = float(got["p_up"][i]), float(got["p_down"][i])  # P(mu <= r), P(mu >= -r)
            above, below, inside = 1.0 - up, 1.0 - down, max(0.0, up + down - 1.0)
            row.prob_better, row.prob_worse = (above, below) if higher_is_better else (below, above)
            row.prob_rope = inside
        if row.variant in unchanged and diffs.size:
            row.verdict, row.reason = "equivalent", "the same recipe as the baseline (the trick changes nothing here)"
            continue
        if diffs.size == 0:
            row.reason = "no paired seed yet (failed or missing runs)"
            continue
        row.seeds_needed = seeds_needed(float(means[i]), float(sds[i]) if diffs.size >= 2 else 0.0, rope,
                                        level / m)
        if diffs.size < MIN_SEEDS:
            row.reason = f"too few seeds: {diffs.size} paired, a verdict needs {MIN_SEEDS}"
            continue
        row.verdict = _verdict_word(int(got["code"][i]), higher_is_better)
        if row.verdict in ("helps", "hurts") and test == "permutation" and not row.p_holm < alpha:
            row.verdict = "inconclusive"
        row.reason = _reason(row, level)
        if row.verdict in ("helps", "hurts") and diffs.size >= SIGNFLIP_FROM:
            toward = diffs - rope if means[i] > 0 else -(diffs + rope)  # beyond the ROPE, as the verdict says
            row.p_signflip = _signflip_one_sided(toward)
            row.fragile = not row.p_signflip < alpha
    return rows


def _reason(row: VariantStats, level: float) -> str:
    r = f"±{row.rope:.3g}"
    if row.verdict in ("helps", "hurts"):
        prob = row.prob_better if row.verdict == "helps" else row.prob_worse
        return (f"P({'better' if row.verdict == 'helps' else 'worse'} by more than the ROPE {r}) = {prob:.4f}; "
                f"corrected p {row.p_beyond_holm:.2g} < {level:.3g}")
    if row.verdict == "equivalent":
        return f"P(inside the ROPE {r}) = {row.prob_rope:.4f}; corrected TOST p {row.p_equiv_holm:.2g} < {level:.3g}"
    if math.isnan(row.ci_low):
        where = ""
    elif row.ci_low > row.rope or row.ci_high < -row.rope:
        where = f"the 95% CI [{row.ci_low:+.3g}, {row.ci_high:+.3g}] lies beyond the ROPE {r} but not after correction"
    elif -row.rope < row.ci_low and row.ci_high < row.rope:
        where = f"the 95% CI [{row.ci_low:+.3g}, {row.ci_high:+.3g}] lies in the ROPE {r} but not after correction"
    else:
        where = f"the 95% CI [{row.ci_low:+.3g}, {row.ci_high:+.3g}] straddles the ROPE edge {r}"
    more = f"; about {row.seeds_needed} paired seeds would decide" if row.seeds_needed else ""
    return (where or "undefined statistics") + more


def sequential_decide(diffs: np.ndarray, schedule: list[int], rope: float, alpha: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sequential_compare`'s rule on many simulated studies at once.

    ``diffs`` (S, m, N): S studies, m variants, N >= schedule[-1] paired differences each.
    Returns (code, look), both (S, m): the verdict code of :func:`decide` and the number of seeds
    at which it was reached. Used by the simulation tests; agrees with :func:`sequential_compare`.
    """
    diffs = np.asarray(diffs, dtype=float)
    K, level = len(schedule), alpha / len(schedule)
    code = np.full(diffs.shape[:-1], INCONCLUSIVE)
    look = np.full(diffs.shape[:-1], schedule[-1])
    decided = np.zeros(diffs.shape[:-1], dtype=bool)
    index = np.arange(diffs.shape[-1])
    for k, n_k in enumerate(schedule):
        n_eff = np.where(decided, look, n_k)
        mask = index < n_eff[..., None]
        mean = (diffs * mask).sum(-1) / n_eff
        sd = np.sqrt((((diffs - mean[..., None]) ** 2) * mask).sum(-1) / (n_eff - 1))
        got = decide(mean, sd, n_eff, rope, level)["code"]
        new = ~decided & ((got != INCONCLUSIVE) | (k == K - 1))
        code, look, decided = np.where(new, got, code), np.where(new, n_k, look), decided | new
        if decided.all():
            break
    return code, look


def sequential_compare(
    scores: Mapping[str, Mapping[int, float]],
    baseline: str,
    *,
    seeds: list[int],
    schedule: list[int],
    higher_is_better: bool,
    alpha: float = 0.05,
    rope: float | None = None,
    metric: str = "",
    unchanged: Collection[str] = (),
) -> tuple[list[VariantStats], set[str], int]:
    """The verdicts of a study that adds seeds in rounds (``--seeds auto``).

    ``schedule`` lists the looks as numbers of seeds (3, 5, 8, 10): at look k the first
    schedule[k] of ``seeds`` are compared with :func:`compare` at alpha / len(schedule)
    (Bonferroni alpha spending: a false claim at any look has probability at most alpha / K,
    so over all K looks at most alpha). A variant keeps the verdict of the first look that gives
    it one; its later seeds are never run. Only looks whose every needed score is present (or
    failed) are counted: pass ``scores`` as they stand and this says where the study is.

    Returns (rows, the variants still open, the number of seeds of the look they wait for; 0 when
    no look is left). The ROPE is fixed from the first look's baseline, so it does not move.
    """
    K = len(schedule)
    if K == 0 or sorted(set(schedule)) != list(schedule) or schedule[0] < 1 or schedule[-1] > len(seeds):
        raise DltricksError(f"a sequential schedule is increasing numbers of seeds up to {len(seeds)}, got {schedule}")
    variants = [v for v in scores if v != baseline]
    if rope is None:
        base0 = _valid({s: x for s, x in scores[baseline].items() if s in set(seeds[: schedule[0]])})
        rope = default_rope(metric, _describe(list(base0.values()))[0])
    decided: dict[str, VariantStats] = {}

    def at(n_k: int) -> list[VariantStats]:
        # A decided variant's data stop at its look: its later seeds are not part of the study.
        sub = {v: {s: x for s, x in scores[v].items()
                   if s in set(seeds[: min(n_k, decided[v].look if v in decided else n_k)])} for v in scores}
        return compare(sub, baseline, higher_is_better=higher_is_better, alpha=alpha, rope=rope, metric=metric,
                       unchanged=unchanged, looks=K)

    rows: list[VariantStats] = []
    for k, n_k in enumerate(schedule):
        open_ = [v for v in variants if v not in decided]
        need = set(seeds[:n_k])
        rows = at(n_k)
        if not all(need <= _present(scores[v]) for v in [baseline, *open_]):
            # This look is not complete yet: show what there is, but judge only at the look.
            for row in rows[1:]:
                if row.variant not in decided:
                    row.verdict, row.reason = "inconclusive", f"waiting for the look at {n_k} seeds"
            return [rows[0]] + [decided.get(r.variant, r) for r in rows[1:]], set(open_), n_k
        for row in rows[1:]:
            if row.variant not in decided and (row.verdict != "inconclusive" or k == K - 1):
                row.look = n_k
                decided[row.variant] = row
        if len(decided) == len(variants):
            break
    return [rows[0]] + [decided.get(r.variant, r) for r in rows[1:]], set(), 0


def _present(by_seed: Mapping[int, float]) -> set[int]:
    """Seeds that have an entry (a score, or NaN / None for a failed run)."""
    return {int(s) for s in by_seed}
