"""Paired statistics of ablations: verdicts, tests, Holm, power."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from dltricks.errors import DltricksError
from dltricks.ledger.stats import compare, holm, seeds_for_power

SEEDS = range(10)


def _baseline(n: int = 10, seed: int = 0) -> dict[int, float]:
    # Seed-to-seed noise much larger than the effects below: only pairing can see them.
    rng = np.random.default_rng(seed)
    return {s: 0.80 + float(rng.normal(0, 0.03)) for s in range(n)}


def _shifted(base: dict[int, float], shift: float, noise: float, seed: int = 1) -> dict[int, float]:
    rng = np.random.default_rng(seed)
    return {s: v + shift + float(rng.normal(0, noise)) for s, v in base.items()}


def _row(rows, name):
    return next(r for r in rows if r.variant == name)


def test_clear_positive_shift_helps_and_negative_hurts():
    base = _baseline()
    scores = {"base": base, "up": _shifted(base, 0.02, 0.004), "down": _shifted(base, -0.02, 0.004, seed=2)}
    rows = compare(scores, "base", higher_is_better=True)

    assert [r.variant for r in rows] == ["base", "up", "down"]
    assert rows[0].verdict == "baseline" and math.isnan(rows[0].delta) and rows[0].n == 10
    up, down = _row(rows, "up"), _row(rows, "down")
    assert up.verdict == "helps" and up.test == "t" and up.ci_low > 0 and up.p_holm < 0.05
    assert down.verdict == "hurts" and down.ci_high < 0
    assert up.delta == pytest.approx(np.mean([scores["up"][s] - base[s] for s in SEEDS]))
    # ttest_rel is the reference for the paired t-test.
    assert up.p == pytest.approx(sps.ttest_rel(list(scores["up"].values()), list(base.values())).pvalue)
    assert up.seeds == list(SEEDS)
    assert isinstance(up.seeds_needed, int) and up.seeds_needed <= 10


def test_lower_is_better_flips_the_direction():
    base = _baseline()
    scores = {"base": base, "up": _shifted(base, 0.02, 0.004), "down": _shifted(base, -0.02, 0.004, seed=2)}
    rows = compare(scores, "base", higher_is_better=False)
    assert _row(rows, "up").verdict == "hurts"
    assert _row(rows, "down").verdict == "helps"


def test_identical_scores_are_no_evidence_with_p_one():
    base = _baseline()
    rows = compare({"base": base, "noop": dict(base)}, "base", higher_is_better=True)
    noop = _row(rows, "noop")
    assert noop.verdict == "no evidence"
    assert noop.p == 1.0 and noop.p_holm == 1.0
    assert noop.delta == 0.0
    assert noop.seeds_needed is None


def test_noisy_small_effect_is_no_evidence_with_finite_seeds_needed():
    base = _baseline()
    scores = {"base": base, "tiny": _shifted(base, 0.003, 0.02)}
    tiny = _row(compare(scores, "base", higher_is_better=True), "tiny")
    assert tiny.verdict == "no evidence"
    assert tiny.ci_low < 0 < tiny.ci_high
    assert isinstance(tiny.seeds_needed, int) and 10 < tiny.seeds_needed < 10**7


def test_seeds_needed_matches_t_power():
    # d = 0.5: the textbook paired t-test needs 34 pairs for 80% power at alpha .05
    # (normal approximation: 32). The diffs below have mean/sd exactly 0.5.
    diffs = np.array([-1.0, 1.0] * 10)
    diffs = (diffs / diffs.std(ddof=1)) * 1.0 + 0.5
    assert seeds_for_power(diffs) == 34
    assert seeds_for_power(np.array([0.1])) is None  # one difference: no variance, undefined


def test_constant_nonzero_difference_uses_permutation_not_t():
    # A deterministic shift: sd of differences is 0, the t statistic is infinite (p = 0).
    base = _baseline()
    scores = {"base": base, "shift": {s: v + 0.01 for s, v in base.items()}}
    shift = _row(compare(scores, "base", higher_is_better=True, test="t"), "shift")
    assert shift.test == "permutation"
    assert shift.p == pytest.approx(2 / 2**10)
    assert shift.verdict == "helps"
    assert shift.seeds_needed == 6  # the exact sign-flip test cannot reach p < .05 with fewer


def test_permutation_p_for_three_positive_differences_is_a_quarter():
    scores = {"base": {0: 1.0, 1: 2.0, 2: 3.0}, "v": {0: 1.5, 1: 2.7, 2: 3.1}}
    v = _row(compare(scores, "base", higher_is_better=True), "v")
    assert v.test == "permutation"  # auto: fewer than 5 seeds
    assert v.p == 0.25  # 2 of the 8 sign flips are as extreme: exact
    assert v.verdict == "no evidence"


def test_auto_switches_to_t_at_five_seeds_and_explicit_test_is_honoured():
    base = _baseline(5)
    scores = {"base": base, "v": _shifted(base, 0.01, 0.01)}
    assert _row(compare(scores, "base", higher_is_better=True), "v").test == "t"
    assert _row(compare(scores, "base", higher_is_better=True, test="permutation"), "v").test == "permutation"
    four = {k: {s: x for s, x in v.items() if s < 4} for k, v in scores.items()}
    assert _row(compare(four, "base", higher_is_better=True), "v").test == "permutation"


def test_missing_and_nan_seeds_are_dropped_from_the_pairing():
    base = _baseline()
    variant = _shifted(base, 0.02, 0.004)
    del variant[3]  # failed run
    variant[5] = float("nan")  # diverged run
    base_missing = dict(base)
    del base_missing[7]  # baseline failed on seed 7
    rows = compare({"base": base_missing, "v": variant}, "base", higher_is_better=True)
    v = _row(rows, "v")
    assert v.seeds == [0, 1, 2, 4, 6, 8, 9]
    assert v.n == 8  # its own valid runs: mean and std describe them all
    assert v.delta == pytest.approx(np.mean([variant[s] - base[s] for s in v.seeds]))
    assert rows[0].n == 9


def test_variant_without_any_shared_seed_has_no_verdict():
    rows = compare({"base": {0: 1.0, 1: 1.1}, "v": {5: 2.0}}, "base", higher_is_better=True)
    v = _row(rows, "v")
    assert v.seeds == [] and math.isnan(v.delta) and math.isnan(v.p) and v.verdict == "no evidence"


def test_holm_corrects_across_variants():
    base = _baseline()
    scores = {"base": base}
    for i in range(4):
        scores[f"v{i}"] = _shifted(base, 0.01 * i, 0.01, seed=10 + i)
    rows = compare(scores, "base", higher_is_better=True)
    assert [r.p_holm for r in rows[1:]] == pytest.approx(holm([r.p for r in rows[1:]]))


def test_holm_hand_computed():
    # sorted: .005*4 = .02, .01*3 = .03, .03*2 = .06, .04*1 = .04 -> running max .06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    out = holm([0.01, float("nan"), 0.02])  # an untestable variant does not count in m
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm([]) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=20))
def test_holm_properties(p):
    adjusted = holm(p)
    assert all(a >= raw - 1e-15 and a <= 1.0 for a, raw in zip(adjusted, p))
    in_sorted_order = [adjusted[i] for i in sorted(range(len(p)), key=lambda i: p[i])]
    assert all(x <= y for x, y in itertools.pairwise(in_sorted_order))
    assert all(a <= min(1.0, len(p) * raw) + 1e-15 for a, raw in zip(adjusted, p))  # never beyond Bonferroni


def test_user_errors_are_one_line_dltricks_errors():
    with pytest.raises(DltricksError, match="baseline"):
        compare({"a": {0: 1.0}}, "base", higher_is_better=True)
    with pytest.raises(DltricksError, match="did you mean t"):
        compare({"base": {0: 1.0}}, "base", higher_is_better=True, test="tt")
