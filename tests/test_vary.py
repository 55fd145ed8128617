"""``ablate.vary``: each paired seed draws its own split, shared by the two variants of that seed; and the
report's paired bootstrap over test samples beside the seed-level interval."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from dltricks.data import load_data
from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.ledger.sample_bootstrap import CORRECT_FILE, paired_sample_bootstrap, read_correct
from dltricks.recipe import Recipe
from dltricks.search.ablate import ablate
from dltricks.search.vary import cell_patch

# a tiny CNN on scikit-learn's digits: 1 epoch, one thread
DIGITS = ["train.epochs=1", "train.batch_size=64", "model.channels=[4]", "train.device='cpu'", "train.threads=1"]


def _fingerprint(t) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]


def _splits(ledger: Ledger, study: str) -> dict[tuple[int, str], tuple[str, str]]:
    """``{(seed, variant): (validation split, test split)}`` as each run of the study saw them."""
    out = {}
    for rec in ledger.runs(study=study):
        recipe = Recipe.from_dict(rec.recipe)
        bundle = load_data(recipe.data, recipe.seed)
        out[(rec.seed, rec.variant)] = (_fingerprint(bundle.val[0]), _fingerprint(bundle.test[0]))
    return out


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    root = tmp_path_factory.mktemp("vary")
    ledger = Ledger(url=f"sqlite:///{root / 'ledger.db'}", root=root)
    recipe = Recipe.load("digits-cnn", DIGITS)
    result = ablate(recipe, ["label_smoothing"], seeds=3, ledger=ledger, progress=False, study="split",
                    vary=["seed", "split"])
    return ledger, result


def test_each_seed_draws_its_own_split_shared_by_its_two_variants(varied):
    ledger, result = varied
    splits = _splits(ledger, "split")
    assert len(splits) == 6  # 2 variants x 3 seeds
    variants = {v for _, v in splits}
    assert variants == {"baseline", "+label_smoothing"}
    for seed in (0, 1, 2):  # paired: the two variants of a seed are trained and tested on the same split
        assert splits[(seed, "baseline")] == splits[(seed, "+label_smoothing")]
    tests = {splits[(s, "baseline")][1] for s in (0, 1, 2)}
    vals = {splits[(s, "baseline")][0] for s in (0, 1, 2)}
    assert len(tests) == 3 and len(vals) == 3  # a different test and validation split per seed
    assert {r.seed: r.recipe["data"]["split_seed"] for r in ledger.runs(study="split")} == {0: 0, 1: 1, 2: 2}
    assert "seed, split" in result.report["md"].read_text()


def test_default_vary_keeps_one_test_set(tmp_path):
    ledger = Ledger(url=f"sqlite:///{tmp_path / 'ledger.db'}", root=tmp_path)
    ablate(Recipe.load("digits-cnn", DIGITS), ["label_smoothing"], seeds=2, ledger=ledger, progress=False,
           study="seed-only")
    splits = _splits(ledger, "seed-only")
    assert len({test for _, test in splits.values()}) == 1  # every run tested on the same samples
    assert splits[(0, "baseline")] == splits[(0, "+label_smoothing")]


def test_the_report_adds_a_paired_bootstrap_over_test_samples(varied):
    ledger, result = varied
    (interval,) = result.sample_intervals
    assert interval.variant == "+label_smoothing" and interval.seeds == 3
    assert interval.lo <= interval.mean <= interval.hi
    # the same number by hand, from the files the runs left
    runs = {(r.seed, r.variant): ledger.run_dir(r.id) for r in ledger.runs(study="split")}
    diffs = [read_correct(runs[(s, "+label_smoothing")]).astype(float) - read_correct(runs[(s, "baseline")])
             for s in (0, 1, 2)]
    assert interval.mean == pytest.approx(np.mean([d.mean() for d in diffs]))
    assert interval.samples == len(diffs[0]) == 450  # a quarter of 1797 digits held out for test
    assert (runs[(0, "baseline")] / CORRECT_FILE).is_file()
    assert any("paired bootstrap over test samples" in n for n in result.notes)
    assert "paired bootstrap over test samples" in result.report["md"].read_text()


def test_paired_sample_bootstrap():
    rng = np.random.default_rng(0)
    base = rng.random(2000) < 0.7
    same = paired_sample_bootstrap([(base, base.copy())])
    assert same == (0.0, 0.0, 0.0)  # the same predictions: no difference on any resample
    better = base.copy()
    better[np.flatnonzero(~base)[:100]] = True  # 100 of 2000 more correct: +0.05
    mean, lo, hi = paired_sample_bootstrap([(base, better), (base, better)])
    assert mean == pytest.approx(0.05) and 0.03 < lo < 0.05 < hi < 0.07


def test_vary_is_checked_and_leaves_fixed_test_sets_alone():
    with pytest.raises(DltricksError, match="vary"):
        Recipe.load("digits-cnn", ["ablate.vary=['split']"])
    with pytest.raises(DltricksError, match="vary"):
        Recipe.load("digits-cnn", ["ablate.vary=['seed', 'fold']"])
    with pytest.raises(DltricksError, match="vary"):  # the Python API checks it too
        ablate(Recipe.load("digits-cnn"), ["label_smoothing"], seeds=2, vary=["split"], ledger="sqlite://")
    digits = Recipe.load("digits-cnn")
    assert cell_patch(digits, 3, ["seed", "split"]) == {"seed": 3, "data.split_seed": 3}
    assert cell_patch(digits, 3, ["seed"]) == {"seed": 3}
    assert cell_patch(Recipe.load("mnist1d-cnn"), 3, ["seed", "split"]) == {"seed": 3}  # its test set is fixed
