"""The fairness protocol of ``--tuned N`` (Oliver et al. 2018; Gulrajani & Lopez-Paz 2021): the baseline and
every arm get the same budget of N tuning trials of the learning rate, judged on validation, before the
paired seeds are run and judged on test. An arm whose own rate was tuned is compared with a baseline whose
rate was tuned too, so a trick cannot win only because the recipe's rate suited it."""

from __future__ import annotations

from pathlib import Path

from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search.plan import off_patch, plan_variants
from dltricks.tricks import Trick

SPACE = "train.lr=1e-4..1e-1:log"


def validation_metric(recipe: Recipe, metric: str) -> str:
    """``test_accuracy`` -> ``val_accuracy`` when a run records it, else ""."""
    from dltricks.runner.metrics import metric_names

    val = "val_" + metric.removeprefix("test_")
    return val if metric.startswith("test_") and val in metric_names(recipe) else ""


def tuned_arms(recipe: Recipe, tricks: list[Trick], trials: int, metric: str, *, ledger: Ledger, workers: int,
               out: Path, progress: bool) -> tuple[list[Trick], str]:
    """The arms with their tuned rates written into their patches, and the protocol's words for the table.
    Each arm's tuning is a study of its own in the ledger, so a resumed evidence run reuses it."""
    from dltricks.search.tune import tune

    val = validation_metric(recipe, metric)
    if not val:
        return tricks, f"seeds (no validation metric for {metric} to tune on)"
    variants, _ = plan_variants(recipe, tricks, "add")
    rates = {}
    for v in variants:
        result = tune(recipe.patch(v.patch), space=[SPACE], sampler="tpe", trials=trials, seeds_per_trial=1,
                      metric=val, workers=workers, rerun_seeds=0, ledger=ledger, out=out / f"tune-{_slug(v.name)}",
                      progress=progress)
        rates[v.name] = result.best.config["train.lr"] if result.best else recipe.train.lr
    arms = [Trick(t.name, t.family, t.tip, {**t.on, "train.lr": rates[f"+{t.name}"]},
                  {**off_patch(t, recipe), "train.lr": rates["baseline"]}, t.reference) for t in tricks]
    return arms, f"tuned {trials} (train.lr on {val})"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-") or "arm"
