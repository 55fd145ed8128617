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
from dltricks.ledger.looks import auto_schedule
from dltricks.ledger.paired import holm, seeds_for_power
from dltricks.ledger.rope import EQUIVALENT, HELPS_DOWN, HELPS_UP, INCONCLUSIVE, decide, default_rope, seeds_needed
from dltricks.ledger.stats import compare, sequential_compare, sequential_decide

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


def test_identical_scores_are_equivalent_with_p_one():
    base = _baseline()
    rows = compare({"base": base, "noop": dict(base)}, "base", higher_is_better=True)
    noop = _row(rows, "noop")
    assert noop.verdict == "equivalent" and noop.prob_rope == pytest.approx(1.0)
    assert noop.p == 1.0 and noop.p_holm == 1.0
    assert noop.delta == 0.0
    assert noop.seeds_needed == 3  # the rule's minimum: identical runs show it at once


def test_noisy_small_effect_is_inconclusive_with_finite_seeds_needed():
    base = _baseline()
    scores = {"base": base, "tiny": _shifted(base, 0.003, 0.02)}
    tiny = _row(compare(scores, "base", higher_is_better=True), "tiny")
    assert tiny.verdict == "inconclusive" and "straddles the ROPE" in tiny.reason
    assert tiny.ci_low < 0 < tiny.ci_high
    assert isinstance(tiny.seeds_needed, int) and 10 < tiny.seeds_needed < 10**7
    assert f"about {tiny.seeds_needed} paired seeds" in tiny.reason


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
    assert shift.verdict == "helps"  # a perfectly consistent shift beyond the ROPE: overwhelming evidence
    assert shift.seeds_needed == 3  # the rule's minimum
    assert shift.p_signflip == pytest.approx(1 / 2**10) and not shift.fragile


def test_permutation_p_for_three_positive_differences_is_a_quarter():
    scores = {"base": {0: 1.0, 1: 2.0, 2: 3.0}, "v": {0: 1.5, 1: 2.7, 2: 3.1}}
    v = _row(compare(scores, "base", higher_is_better=True), "v")
    assert v.test == "permutation"  # auto: fewer than 5 seeds
    assert v.p == 0.25  # 2 of the 8 sign flips are as extreme: exact
    assert v.verdict == "inconclusive"  # d = 0.5, 0.7, 0.1: too noisy for 3 seeds


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
    assert v.seeds == [] and math.isnan(v.delta) and math.isnan(v.p) and v.verdict == "inconclusive"
    assert "no paired seed" in v.reason


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


# ---- the decision rule, proved by simulated studies with a known truth ------------------------------
#
# Each simulated study: a baseline and 4 variants over n seeds; score = seed effect (shared by every
# variant of a seed, so pairing removes it) + run noise (each run its own). The rule sees only the
# paired differences, computed from those scores as compare() computes them, and decide() is the same
# code compare() runs. Sizes: 20 000 studies per seed count give a binomial SE of 0.0015 at a rate of
# 0.05, so "rate <= alpha + 4 SE" fails with probability ~3e-5 if the rule were exactly at alpha, and
# reliably catches a rule that is 0.01 too liberal. Fixed RNG seeds make the test deterministic.


ALPHA, VARIANTS, STUDIES = 0.05, 4, 20_000


def _simulate(rng, studies: int, n: int, effects=(0.0,) * VARIANTS, seed_sd=0.03, run_sd=0.01):
    """(studies, variants, n) paired differences from simulated raw scores with shared seed noise."""
    seed_effect = rng.normal(0.0, seed_sd, size=(studies, 1, n))
    base = 0.8 + seed_effect[:, 0] + rng.normal(0.0, run_sd, size=(studies, n))
    variants = (0.8 + np.asarray(effects)[None, :, None] + seed_effect
                + rng.normal(0.0, run_sd, size=(studies, len(effects), n)))
    return variants - base[:, None, :]


def _codes(diffs, rope, alpha=ALPHA):
    n = diffs.shape[-1]
    return decide(diffs.mean(-1), diffs.std(-1, ddof=1), np.full(diffs.shape[:-1], n), rope, alpha)["code"]


@pytest.mark.parametrize("rope", [0.0, 0.005])
def test_null_family_wise_rate_of_helps_or_hurts_is_at_most_alpha_for_3_to_10_seeds(rope):
    rng = np.random.default_rng(20260101)
    se = math.sqrt(ALPHA * (1 - ALPHA) / STUDIES)
    for n in range(3, 11):
        codes = _codes(_simulate(rng, STUDIES, n), rope)
        fwer = np.mean(np.any((codes == HELPS_UP) | (codes == HELPS_DOWN), axis=1))
        assert fwer <= ALPHA + 4 * se, (n, rope, fwer)
        if rope == 0.0:
            assert fwer > ALPHA / 4  # not vacuous: with no ROPE the rule spends a fair part of alpha


def test_null_family_wise_rate_stays_at_most_alpha_with_seeds_auto():
    rng = np.random.default_rng(7)
    se = math.sqrt(ALPHA * (1 - ALPHA) / STUDIES)
    for max_seeds in (5, 10):
        schedule = auto_schedule(max_seeds)
        code, _ = sequential_decide(_simulate(rng, STUDIES, max_seeds), schedule, 0.0, ALPHA)
        fwer = np.mean(np.any((code == HELPS_UP) | (code == HELPS_DOWN), axis=1))
        assert fwer <= ALPHA + 4 * se, (schedule, fwer)
        # Peeking without the spending would not hold alpha: the same looks each at the full alpha.
        naive, _ = sequential_decide(_simulate(rng, STUDIES, max_seeds), schedule, 0.0, ALPHA * len(schedule))
        assert np.mean(np.any((naive == HELPS_UP) | (naive == HELPS_DOWN), axis=1)) > ALPHA + 4 * se


def test_an_overwhelming_effect_gets_its_verdict_with_3_seeds():
    # The measurement: accuracy 0.96 -> 0.13 when the learning rate is crippled.
    rng = np.random.default_rng(3)
    diffs = _simulate(rng, 2000, 3, effects=(-0.83, 0.0, 0.0, 0.0), run_sd=0.03)
    assert np.mean(_codes(diffs, 0.005)[:, 0] == HELPS_DOWN) >= 0.99
    code, look = sequential_decide(diffs, [3], 0.005, ALPHA / len(auto_schedule(10)))  # first look of auto
    # alpha / 4 at the first look, Holm over 4 variants, 2 degrees of freedom: a few unlucky sd estimates
    # wait for the look at 5 seeds
    assert np.mean(code[:, 0] == HELPS_DOWN) >= 0.95
    # and through compare() itself, where lower is better the same runs are "helps"
    scores = {"base": {s: 0.96 + 0.01 * s for s in range(3)}, "cripple": {0: 0.12, 1: 0.15, 2: 0.11}}
    assert _row(compare(scores, "base", higher_is_better=True), "cripple").verdict == "hurts"
    assert _row(compare(scores, "base", higher_is_better=False), "cripple").verdict == "helps"


def test_a_variant_identical_to_the_baseline_becomes_equivalent_once_seeds_show_it():
    rng = np.random.default_rng(11)
    rates = []
    for n in (3, 5, 10):
        codes = _codes(_simulate(rng, 4000, n, run_sd=0.002), 0.005)
        rates.append(np.mean(codes[:, 0] == EQUIVALENT))
        assert np.mean((codes == HELPS_UP) | (codes == HELPS_DOWN)) <= ALPHA
    assert rates[0] < rates[1] < rates[2] and rates[2] >= 0.99, rates
    code, look = sequential_decide(_simulate(rng, 4000, 10, run_sd=0.002), auto_schedule(10), 0.005, ALPHA)
    assert np.mean(code[:, 0] == EQUIVALENT) >= 0.97 and np.median(look[:, 0]) <= 8  # alpha / 4 per look


def test_seeds_needed_is_the_count_at_which_the_rule_decides():
    for mean, sd in ((0.02, 0.01), (-0.05, 0.04), (0.001, 0.003)):
        need = seeds_needed(mean, sd, 0.005, ALPHA)
        for n, decided in ((need, True), (need - 1, False)):
            if n < 3:
                continue
            code = decide(np.array([mean]), np.array([sd]), np.array([n]), 0.005, ALPHA)["code"][0]
            assert (code != INCONCLUSIVE) == decided, (mean, sd, n)
    assert seeds_needed(0.005, 0.01, 0.005, ALPHA) is None  # on the ROPE's edge nothing decides


def test_rope_default_per_metric_and_reported_numbers():
    assert default_rope("test_accuracy") == default_rope("val_dice") == 0.005
    assert default_rope("test_loss", 0.4) == pytest.approx(0.004)
    base = _baseline()
    row = _row(compare({"base": base, "up": _shifted(base, 0.02, 0.004)}, "base", higher_is_better=True,
                       metric="test_accuracy"), "up")
    assert row.rope == 0.005 and row.verdict == "helps"
    assert row.prob_better > 0.99 and row.prob_better + row.prob_rope + row.prob_worse == pytest.approx(1.0)
    assert row.p_beyond_holm < 0.05 and "P(better by more than the ROPE ±0.005)" in row.reason
    wide = _row(compare({"base": base, "up": _shifted(base, 0.02, 0.004)}, "base", higher_is_better=True,
                        rope=0.05), "up")
    assert wide.verdict == "equivalent"  # a 0.02 gain does not matter if 0.05 is what matters
    with pytest.raises(DltricksError, match="ROPE"):
        compare({"base": base}, "base", higher_is_better=True, rope=-1.0)


def test_fragile_when_the_sign_flip_cross_check_disagrees():
    # Six seeds, two of them at or below the ROPE's edge: the t posterior says helps (the mean is far
    # beyond the ROPE), the exact sign-flip test of "beyond the ROPE" does not (p = 4/64).
    base = {s: 0.8 for s in range(6)}
    v = {s: 0.8 + d for s, d in enumerate([0.034, 0.058, 0.049, 0.061, -0.001, 0.005])}
    row = _row(compare({"base": base, "v": v}, "base", higher_is_better=True, rope=0.005), "v")
    assert row.verdict == "helps" and row.fragile and row.p_signflip >= 0.05
    steady = {s: 0.8 + d for s, d in enumerate([0.06, 0.05, 0.07, 0.06, 0.055, 0.05])}
    row = _row(compare({"base": base, "v": steady}, "base", higher_is_better=True, rope=0.005), "v")
    assert row.verdict == "helps" and not row.fragile and row.p_signflip == pytest.approx(1 / 64)


def test_sequential_compare_agrees_with_the_vectorised_rule_and_waits_for_a_look():
    rng = np.random.default_rng(5)
    schedule, seeds = auto_schedule(10), list(range(10))
    diffs = _simulate(rng, 30, 10, effects=(0.0, 0.01, -0.03, 0.002), run_sd=0.006)
    code, look = sequential_decide(diffs, schedule, 0.005, ALPHA)
    words = {HELPS_UP: "helps", HELPS_DOWN: "hurts", EQUIVALENT: "equivalent", INCONCLUSIVE: "inconclusive"}
    for i in range(diffs.shape[0]):
        scores = {"base": {s: 0.0 for s in seeds}}
        scores.update({f"v{j}": {s: float(diffs[i, j, s]) for s in seeds} for j in range(VARIANTS)})
        rows, open_, waiting = sequential_compare(scores, "base", seeds=seeds, schedule=schedule,
                                                  higher_is_better=True, rope=0.005)
        assert not open_ and waiting == 0
        assert [r.verdict for r in rows[1:]] == [words[c] for c in code[i]]
        assert [r.look for r in rows[1:]] == list(look[i])
    # With only the first look's seeds, the open variants wait for the next look's.
    scores = {"base": {s: 0.8 for s in range(3)}, "same": {s: 0.8 for s in range(3)},
              "noisy": {0: 0.81, 1: 0.79, 2: 0.805}}
    rows, open_, waiting = sequential_compare(scores, "base", seeds=seeds, schedule=schedule,
                                              higher_is_better=True, metric="test_accuracy")
    assert _row(rows, "same").verdict == "equivalent" and _row(rows, "same").look == 3
    assert open_ == {"noisy"} and waiting == 5 and "waiting for the look at 5" in _row(rows, "noisy").reason


def test_the_light_distribution_functions_give_scipy_stats_numbers() -> None:
    """The statistics compute their t, normal and noncentral t figures with scipy.special (scipy.stats
    takes seconds to import): the same p-values, intervals, posteriors and power as scipy.stats gives."""
    from dltricks.ledger import paired as S
    from dltricks.ledger import rope

    rng = np.random.default_rng(3)
    for n in range(2, 17):
        diffs = rng.normal(rng.normal(0, 0.02), rng.uniform(0.001, 0.05), n)
        p, test = S.paired_p(diffs, "t")
        assert test == "t" and p == pytest.approx(sps.ttest_1samp(diffs, 0.0).pvalue, rel=1e-9, abs=1e-15)
        exact = sps.permutation_test((diffs,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                                     vectorized=True, n_resamples=np.inf, alternative="two-sided").pvalue
        assert S._permutation_p(diffs) == pytest.approx(min(1.0, exact), abs=1e-12)
        se = diffs.std(ddof=1) / math.sqrt(n)
        assert S.confidence_interval(diffs) == pytest.approx(sps.t.interval(0.95, n - 1, diffs.mean(), se))
        up, down, equiv = rope.rope_tests(diffs.mean(), diffs.std(ddof=1), n, 0.005)
        assert up == pytest.approx(sps.t.cdf((0.005 - diffs.mean()) / se, n - 1))
        assert down == pytest.approx(sps.t.cdf((diffs.mean() + 0.005) / se, n - 1))
        assert equiv == pytest.approx(max(sps.t.cdf((-0.005 - diffs.mean()) / se, n - 1),
                                          sps.t.sf((0.005 - diffs.mean()) / se, n - 1)))
        d, crit = 0.8, sps.t.ppf(0.975, n - 1)
        reference = sps.nct.sf(crit, n - 1, d * math.sqrt(n)) + sps.nct.cdf(-crit, n - 1, d * math.sqrt(n))
        assert S._t_power(d, n, 0.05) == pytest.approx(reference, rel=1e-9)


def test_the_statistics_do_not_import_scipy_stats() -> None:
    import subprocess
    import sys

    code = "import sys, dltricks.ledger.stats, dltricks.loop.calibration; print('scipy.stats' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
