"""Hyperparameter tuning: Optuna's samplers over a recipe's ``[tune]`` space, on the ablation engine's
storage and claims: :class:`ParamProposer` draws each trial for the trial loop
(:mod:`dltricks.search.trials`).

    result = tune("mnist1d-cnn", sampler="tpe", trials=20, seeds_per_trial=2)
    result.best.config          # {"train.lr": 0.0041, "train.weight_decay": 2.1e-05, ...}
    result.rerun.verdict        # best vs start recipe on fresh seeds: "helps", "equivalent", "inconclusive", ...

Each trial's score is its mean over ``seeds_per_trial`` seeds, the same seeds for every trial (paired).
Several ``objective`` metrics (``test_accuracy,params``) give a Pareto front instead of one best.
Pruning (median, hyperband) judges a trial's first seed by its per-epoch validation metric.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dltricks.errors import DltricksError, did_you_mean, one_of
from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search.definition import (
    COST_OBJECTIVES,
    SearchDefinition,
    base_recipe,
    data_shape,
    directions_for,
    resolve_space,
    study_name,
)
from dltricks.search.space import Config, default_tune_space, distributions

SAMPLERS = ("random", "tpe", "gp", "cmaes", "nsga2")
PRUNERS = ("median", "hyperband", "none")
SINGLE_OBJECTIVE = ("cmaes",)


def make_sampler(name: str, *, seed: int, n_trials: int, multi: bool = False):
    """An Optuna sampler; model-based ones start after a few random trials (a quarter of the budget, 3 to 10)."""
    import optuna

    startup = min(10, max(3, n_trials // 4))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        # constant_liar: trials other workers are running count as bad guesses, so workers spread out
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True,
                                          constant_liar=True)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(20, n_trials // 3)))
    raise DltricksError(f"unknown sampler {name!r}{did_you_mean(name, SAMPLERS)}; valid: {one_of(SAMPLERS)}")


def propose(d: SearchDefinition, history: list, k: int, pending: list[Config]) -> tuple[Config, dict[str, Any]]:
    """Trial ``k``'s configuration: the sampler, seeded by the search seed and ``k``, fed the finished
    trials (and, as running trials, the ones other workers hold) in an in-memory study."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dims = d.dims
    sampler = make_sampler(d.strategy, seed=d.search_seed * 100_003 + k, n_trials=d.n_trials,
                           multi=len(d.objectives) > 1)
    mem = optuna.create_study(study_name=d.name, directions=d.directions, sampler=sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature warnings of the samplers
        for t in history:
            mem.add_trial(t)
        if d.strategy == "tpe":
            for config in pending:
                try:
                    mem.add_trial(optuna.trial.create_trial(
                        state=TrialState.RUNNING, params={x.key: x.encode(config[x.key]) for x in dims},
                        distributions=distributions(dims)))
                except (KeyError, ValueError):
                    continue
        trial = mem.ask(distributions(dims))
    frozen = mem.get_trials(deepcopy=False)[-1]
    notes = {k: v for k, v in frozen.system_attrs.items() if _jsonable(v)}
    return {x.key: x.decode(trial.params[x.key]) for x in dims}, notes


class ParamProposer:
    """Tuning's proposer for the trial loop (:class:`dltricks.search.trials.Proposer`): the search's
    Optuna sampler, replayed over the finished trials (:func:`propose`)."""

    def propose(self, d: SearchDefinition, history: list, k: int, pending: list[Config]
                ) -> tuple[Config, dict[str, Any]]:
        return propose(d, history, k, pending)


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


def define(recipe: Recipe, *, space: list[str] | None = None, sampler: str | None = None, trials: int | None = None,
           seeds_per_trial: int | None = None, metric: str = "", objective: list[str] | None = None,
           pruner: str | None = None, search_seed: int | None = None, study: str = "") -> SearchDefinition:
    t = recipe.tune
    sampler = sampler or t.sampler
    if sampler not in SAMPLERS:
        raise DltricksError(f"unknown sampler {sampler!r}{did_you_mean(sampler, SAMPLERS)}; valid: {one_of(SAMPLERS)}")
    pruner = pruner or t.pruner
    if pruner not in PRUNERS:
        raise DltricksError(f"unknown pruner {pruner!r}{did_you_mean(pruner, PRUNERS)}; valid: {one_of(PRUNERS)}")
    objectives = [o.strip() for o in (objective or t.objective) if o.strip()] or \
        [metric or t.metric or recipe.eval.metric]
    if len(set(objectives)) != len(objectives):
        raise DltricksError(f"an objective is named twice: {', '.join(objectives)}")
    if len(objectives) > 1 and sampler in SINGLE_OBJECTIVE:
        raise DltricksError(f"the {sampler} sampler optimises one objective; for {', '.join(objectives)} "
                            "use tpe, gp, nsga2 or random")
    if len(objectives) > 1 and pruner != "none":
        raise DltricksError("pruning needs one objective; use --pruner none with several objectives")
    if pruner != "none" and recipe.data.val_fraction == 0:
        raise DltricksError("pruning judges the per-epoch validation metric: set data.val_fraction > 0 "
                            "or use --pruner none")
    dims = resolve_space(recipe, "tune", space, default_tune_space)
    n = trials or t.trials
    k = seeds_per_trial or t.seeds_per_trial
    in_shape, classes = data_shape(recipe) if set(objectives) & set(COST_OBJECTIVES) else ([], 0)
    d = SearchDefinition(name="", kind="tune", recipe=base_recipe(recipe), space=[x.to_json() for x in dims],
                         n_trials=n, seeds=[recipe.seed + i for i in range(k)], objectives=objectives,
                         directions=directions_for(objectives), strategy=sampler,
                         search_seed=t.search_seed if search_seed is None else search_seed, pruner=pruner,
                         in_shape=in_shape, num_classes=classes)
    d.name = study or t.study or study_name(recipe, "tune", d)
    return d


def tune(recipe: Recipe | str, *, space: list[str] | None = None, sampler: str | None = None,
         trials: int | None = None, seeds_per_trial: int | None = None, metric: str = "",
         objective: list[str] | None = None, pruner: str | None = None, search_seed: int | None = None,
         workers: int | None = None, study: str = "", rerun_seeds: int | None = None,
         best: str | Path | None = None, ledger: Ledger | str | None = None, out: str | Path | None = None,
         progress: bool = True):
    """Run (or resume) a tuning study, re-run its best against the start, write the report; see the module
    docstring. Returns a :class:`dltricks.search.results.SearchResult`."""
    from dltricks.search import results

    results.check_rerun_seeds(rerun_seeds)
    recipe = Recipe.load(recipe) if isinstance(recipe, str) else recipe
    d = define(recipe, space=space, sampler=sampler, trials=trials, seeds_per_trial=seeds_per_trial, metric=metric,
               objective=objective, pruner=pruner, search_seed=search_seed, study=study)
    settings = recipe.tune
    return results.run(ledger, d, ParamProposer(), workers=workers or settings.workers, best=best, out=out,
                       progress=progress, rerun_seeds=settings.rerun_seeds if rerun_seeds is None else rerun_seeds)
