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

import numpy as np

from dltricks.errors import DltricksError, did_you_mean, one_of
from dltricks.ledger.looks import MIN_SEEDS
from dltricks.ledger.paired import (
    TESTS,
    confidence_interval,
    describe,
    holm,
    paired_p,
    signflip_one_sided,
    valid_scores,
)
from dltricks.ledger.rope import INCONCLUSIVE, SIGNFLIP_FROM, decide, default_rope, seeds_needed, verdict_word
from dltricks.ledger.variant_stats import VariantStats
from dltricks.ledger.verdict_text import reason


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

    base = valid_scores(scores[baseline])
    base_mean, base_std = describe(list(base.values()))
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
        mine = valid_scores(variant_scores)
        paired = sorted(set(mine) & set(base))
        diffs = np.array([mine[s] - base[s] for s in paired], dtype=float)
        all_diffs.append(diffs)
        mean, std = describe(list(mine.values()))
        p, used = (1.0, "") if variant in unchanged and diffs.size else paired_p(diffs, test)
        ci_low, ci_high = confidence_interval(diffs)
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
        row.verdict = verdict_word(int(got["code"][i]), higher_is_better)
        if row.verdict in ("helps", "hurts") and test == "permutation" and not row.p_holm < alpha:
            row.verdict = "inconclusive"
        row.reason = reason(row, level)
        if row.verdict in ("helps", "hurts") and diffs.size >= SIGNFLIP_FROM:
            toward = diffs - rope if means[i] > 0 else -(diffs + rope)  # beyond the ROPE, as the verdict says
            row.p_signflip = signflip_one_sided(toward)
            row.fragile = not row.p_signflip < alpha
    return rows



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
        base0 = valid_scores({s: x for s, x in scores[baseline].items() if s in set(seeds[: schedule[0]])})
        rope = default_rope(metric, describe(list(base0.values()))[0])
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
