"""The verdict rule: the region of practical equivalence (ROPE), the posterior tail masses and TOST
behind helps / hurts / equivalent / inconclusive, how many seeds the rule needs, and the exact sign-flip
cross-check. Vectorised over variants (and simulated studies)."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import stdtr, stdtrit

from dltricks.ledger.looks import MIN_SEEDS
from dltricks.ledger.paired import holm_array, t_sf

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
        p_equiv = np.maximum(stdtr(df, (-rope - mean) / se), t_sf((rope - mean) / se, df))
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


def verdict_word(code: int, higher_is_better: bool) -> str:
    if code == EQUIVALENT:
        return "equivalent"
    if code == INCONCLUSIVE:
        return "inconclusive"
    return "helps" if (code == HELPS_UP) == higher_is_better else "hurts"

