"""Issue 20.1: the metric names a sweep checks before training (``metric_names``) are exactly the keys a
real run records, for every bundled recipe; the README's domain-adaptation study starts and finishes."""

from __future__ import annotations

import time

import pytest

from dltricks.recipe import Recipe, bundled_recipes
from dltricks.runner.run import metric_names, train

MNIST1D = ["data.num_samples=400", "train.epochs=1"]
EPISODES = ["eval.queries=5", "eval.episodes=5"]
TINY: dict[str, list[str]] = {
    "cubic1d-mlp": ["train.epochs=1"],
    "digits-cnn": ["train.epochs=1", "model.channels=[4, 8]"],
    "mnist1d-meta": ["data.num_samples=1500", "train.epochs=1", "train.meta_steps=3", "train.meta_batch=2",
                     *EPISODES],
    "mnist1d-multitask": MNIST1D,
    "mnist1d-oneshot": MNIST1D + EPISODES + ["model.channels=[8, 8]"],
    "seg2d-unet": ["data.size=32", "data.num_train=8", "data.num_test=4", "data.val_fraction=0.25",
                   "model.channels=[4, 8]", "train.epochs=1", "train.batch_size=4"],
    "seg3d-unet": ["data.num_train=4", "data.num_test=2", "data.val_fraction=0.25", "data.size=24",
                   "data.patch_size=[16, 16, 16]", "data.patches_per_epoch=2", "model.channels=[4, 8]",
                   "train.epochs=1"],
    "sinusoid-maml": ["data.train_tasks=20", "data.test_tasks=8", "train.epochs=1"],
    "zsl1d-zeroshot": ["data.per_class=30", "model.channels=[8, 8]", "train.epochs=1", "eval.queries=5"],
}


def tiny(name: str, extra: list[str] = ()) -> Recipe:
    over = TINY.get(name, MNIST1D)
    return Recipe.load(name, [*over, *extra])


def test_every_bundled_recipe_has_a_tiny_form():
    # a new bundled recipe on a dataset without num_samples must say here how to make it small
    for name in bundled_recipes():
        tiny(name)


@pytest.mark.parametrize("name", list(bundled_recipes()))
def test_predicted_metric_names_are_the_keys_a_run_records(name, home_ledger):
    recipe = tiny(name)
    predicted = metric_names(recipe)
    assert len(predicted) == len(set(predicted)), predicted
    result = train(recipe, ledger=home_ledger, progress=False)
    assert set(predicted) == set(result.metrics), (sorted(set(predicted) - set(result.metrics)),
                                                   sorted(set(result.metrics) - set(predicted)))
    if recipe.ablate.tricks:  # the metric the recipe's study compares exists
        assert (recipe.ablate.metric or recipe.eval.metric) in predicted


# the runs a study's variant learns from, made tiny too (their bundled sizes train for minutes)
REFERENCES = {"model.init_from": "mnist1d-pretrain-0to4", "train.teacher": "mnist1d-teacher"}


@pytest.mark.parametrize("name", [n for n in bundled_recipes() if Recipe.load(n).ablate.tricks])
def test_every_variant_of_a_bundled_study_records_the_predicted_names(name, home_ledger, tmp_path):
    from dltricks.tricks.catalogue import get

    recipe = tiny(name)
    for trick in recipe.ablate.tricks:
        patch = dict(get(trick).on)
        for key, ref in REFERENCES.items():
            if key in patch:
                (tmp_path / f"{ref}.toml").write_text(tiny(ref).to_toml())
                patch[key] = f"recipe:{tmp_path / ref}.toml"
        variant = recipe.patch(patch)
        predicted = metric_names(variant)
        assert (recipe.ablate.metric or recipe.eval.metric) in predicted, trick
        recorded = train(variant, ledger=home_ledger, progress=False).metrics
        assert set(predicted) == set(recorded), (trick, sorted(set(predicted) ^ set(recorded)))


def test_target_domain_metrics_are_known_before_training(home_ledger):
    names = metric_names(tiny("mnist1d-da"))
    assert {"test_target_accuracy", "oracle_test_target_accuracy", "oracle_val_target_accuracy"} <= set(names)
    plain = metric_names(tiny("mnist1d-da", ["data.target={}"]))
    assert not any("target" in k for k in plain)


def test_the_readme_domain_adaptation_study_runs_at_the_smallest_size(ledger_home, shared_data_cache,
                                                                      monkeypatch, capsys):
    """`dltricks ablate mnist1d-da --seeds 3` exited 2 (`unknown metric 'test_target_accuracy'`)."""
    from dltricks.cli import main

    monkeypatch.setenv("DLTRICKS_CACHE", str(shared_data_cache))
    t0 = time.perf_counter()
    code = main(["ablate", "mnist1d-da", "--seeds", "3", "--workers", "1", "--quiet",
                 *(a for o in MNIST1D + ["model.channels=[4, 8]"] for a in ("-o", o))])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "test_target_accuracy" in out.out and time.perf_counter() - t0 < 300


def test_a_registered_setup_adds_its_metrics_names_and_figures_without_runner_changes(home_ledger):
    """Adding a learning set-up is one class: its names before training, its metrics and figures after."""
    from dltricks.methods import registry
    from dltricks.methods.registry import Setup, register_method

    @register_method("probe_for_test")
    class Probe(Setup):
        @classmethod
        def selects(cls, recipe, bundle) -> bool:
            return recipe.name == "probe-run"

        def metric_names(self, model, task):
            return ["test_probe_params"]

        def metrics(self, run):
            return {"test_probe_params": float(sum(p.numel() for p in run.model.parameters()))}

        def figures(self, run, metrics):
            (run.run_dir / "probe.txt").write_text(str(metrics["test_probe_params"]))

    try:
        recipe = tiny("mnist1d-mlp", ["name='probe-run'"])
        assert "test_probe_params" in metric_names(recipe)
        assert "test_probe_params" not in metric_names(tiny("mnist1d-mlp"))
        result = train(recipe, ledger=home_ledger, progress=False)
        assert result.metrics["test_probe_params"] == result.metrics["params"]
        assert (result.run_dir / "probe.txt").read_text() == str(result.metrics["params"])
    finally:
        registry._SETUPS.pop("probe_for_test")
