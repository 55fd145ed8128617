"""One row of an ablation's results: a variant's scores, its paired comparison to the baseline, its verdict
(computed by :func:`dltricks.ledger.stats.compare`; light to import, for whatever only shows it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


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
