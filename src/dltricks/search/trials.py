"""Search trials on shared storage: the engine under ``dltricks tune`` and ``dltricks nas``.

A search is ``n_trials`` cells ``t0, t1, ...``. A worker claims a cell (:mod:`dltricks.search.claims`,
the same table as ablations), asks the search's :class:`Proposer` for the cell's configuration, trains it
on every seed of the search (the same seeds for every trial: paired), and only then writes one Optuna
trial, with the configuration as its params, the mean metric(s) as its value(s) and the per-epoch
validation metric as its intermediate values. So a search killed with -9 and run again ends with exactly
``n_trials`` trials, none run twice, and `dltricks worker --study NAME` on another machine joins through
the ledger's database.

The proposer is handed in, as Optuna hands a study a sampler: tuning's
(:class:`dltricks.search.tune.ParamProposer`) or architecture search's
(:class:`dltricks.search.nas.ArchProposer`); this module knows neither. Proposers never hold state
between trials: a configuration is a function of the finished trials, the trial's index and the search
seed, and it is stored with the study the moment a cell is first claimed, so a worker that takes over a
dead worker's cell trains the same configuration.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Protocol

from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search import claims
from dltricks.search.definition import SearchDefinition, finished, load, measure, over_budget
from dltricks.search.definition import is_search as is_search  # the CLI's `report` asks trials.is_search
from dltricks.search.space import Config, distributions, to_params

PROPOSAL = "proposal:"


class Proposer(Protocol):
    """Draws a trial's configuration from the finished trials, as an Optuna sampler does."""

    def propose(self, d: SearchDefinition, history: list, k: int, pending: list[Config]
                ) -> tuple[Config, dict[str, Any]]:
        """Trial ``k``'s configuration and notes to store with it (a sampler's state), given the finished
        trials ``history`` and the configurations other workers are training (``pending``)."""


def _propose(study, d: SearchDefinition, k: int, proposer: Proposer) -> tuple[Config, dict[str, Any]]:
    history = finished(study)
    done = {t.user_attrs["cell"] for t in history}
    pending = [v["config"] for key, v in study.user_attrs.items()
               if key.startswith(PROPOSAL) and key[len(PROPOSAL):] not in done]
    return proposer.propose(d, history, k, pending)


def proposal(study, d: SearchDefinition, cell: str, proposer: Proposer) -> tuple[Config, dict[str, Any]]:
    """The cell's configuration and the proposer's notes on it (CMA-ES and NSGA-II keep their state in
    their trials): the stored ones if an earlier (dead) worker made them, else new ones."""
    stored = study.user_attrs.get(PROPOSAL + cell)
    if stored is None:
        config, notes = _propose(study, d, int(cell[1:]), proposer)
        stored = {"config": config, "system": notes}
        study.set_user_attr(PROPOSAL + cell, stored)
    return dict(stored["config"]), dict(stored["system"])


# ---- one trial --------------------------------------------------------------------------------------

class Pruned(DltricksError):
    """The pruner stopped the trial after an epoch (the run is closed with this reason)."""


def _val_metric(metric: str) -> str:
    return "val_" + metric.removeprefix("test_") if metric.startswith("test_") else metric


def _pruning_trial(study, d: SearchDefinition, config: Config):
    """An in-memory trial that sees every finished trial's per-epoch values, for the pruner to judge."""
    import optuna

    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1) if d.pruner == "median" else
              optuna.pruners.HyperbandPruner(min_resource=1, max_resource=int(d.recipe["train"]["epochs"])))
    mem = optuna.create_study(study_name=d.name, direction=d.directions[0], pruner=pruner,
                              sampler=optuna.samplers.RandomSampler(seed=0))
    for t in finished(study):
        mem.add_trial(t)
    dims = d.dims
    mem.enqueue_trial(to_params(dims, config))
    return mem.ask(distributions(dims))


def run_trial(study, d: SearchDefinition, ledger: Ledger, claim: claims.Claim, cell: str, config: Config,
              notes: dict[str, Any], first_run_id: str, progress: bool) -> None:
    """Train ``config`` on every seed and write the trial (COMPLETE, PRUNED or FAIL with the reason)."""
    import optuna
    from optuna.trial import TrialState

    from dltricks.errors import RunFailed
    from dltricks.ledger.record import new_run_id
    from dltricks.loop.training import TrainingInterrupted
    from dltricks.runner.run import train

    dims = d.dims
    attrs: dict[str, Any] = {"cell": cell, "config": config, "run_ids": [], "seeds": {}}
    intermediate: dict[int, float] = {}
    state, values, failure = TrialState.COMPLETE, None, None
    try:
        recipe = Recipe.from_dict(d.recipe, source=f"study {d.name}").patch(config)
        cost = measure(recipe, d, latency="latency_ms" in d.objectives) if d.in_shape else {}
        attrs["cost"] = cost
        why = over_budget(cost, d) if cost else None
        if why:
            raise DltricksError(f"over budget: {why}")
        judge = _pruning_trial(study, d, config) if d.pruner != "none" else None
        watch = _val_metric(d.metric)

        def on_epoch(epoch: int, row: dict[str, float]) -> None:
            if watch not in row or not math.isfinite(row[watch]):
                return
            intermediate[epoch] = float(row[watch])
            judge.report(float(row[watch]), epoch)
            if judge.should_prune():
                raise Pruned(f"pruned after epoch {epoch} ({d.pruner} pruner): {watch} {row[watch]:.4f}")

        for i, seed in enumerate(d.seeds):
            run_id = first_run_id if i == 0 else new_run_id()
            if i:
                claims.set_run_id(ledger, claim, run_id)
            attrs["run_ids"].append(run_id)
            try:
                result = train(recipe.patch({"seed": seed}), ledger=ledger, progress=progress, study=d.name,
                               variant=cell, run_id=run_id,
                               on_epoch=on_epoch if judge is not None and i == 0 else None)
            except TrainingInterrupted:
                raise KeyboardInterrupt from None
            attrs["seeds"][str(seed)] = {k: v for k, v in result.metrics.items() if math.isfinite(v)}
        values = []
        for obj in d.objectives:
            got = [m.get(obj, cost.get(obj)) for m in attrs["seeds"].values()]
            if any(v is None for v in got):
                have = sorted(next(iter(attrs["seeds"].values())))
                raise DltricksError(f"objective {obj} was not produced; the runs have: {', '.join(have)}")
            values.append(sum(got) / len(got))
    except Pruned as e:
        state, failure = TrialState.PRUNED, str(e)
    except (RunFailed, DltricksError) as e:  # a NaN, a bad configuration: a result, not a reason to stop
        state, failure = TrialState.FAIL, str(e)
    if failure:
        attrs["failure"] = failure
    if not claims.still_mine(ledger, claim):
        return  # a worker that wrongly thought this one dead took the cell over: its trial counts
    study.add_trial(optuna.trial.create_trial(
        state=state, values=values if state == TrialState.COMPLETE else None, params=to_params(dims, config),
        distributions=distributions(dims), user_attrs=attrs, system_attrs=notes,
        intermediate_values=intermediate))


# ---- the cells of a search, for the one worker loop -----------------------------------------------

class SearchJob:
    """The trials of search ``name`` in ``ledger``, drawn by ``proposer``, for
    :func:`dltricks.search.cells.work`."""

    def __init__(self, ledger: Ledger, name: str, proposer: Proposer):
        self.ledger, self.name, self.proposer = ledger, name, proposer
        self.study, self.definition = load(ledger, name)

    def cells(self) -> Iterator[tuple[str, Any]]:
        for cell in self.definition.cells():
            yield cell, None

    def done(self) -> set[str]:
        return {t.user_attrs["cell"] for t in finished(self.study)}

    def left(self) -> bool:
        return len(self.done()) < self.definition.n_trials

    def status(self) -> tuple[int, int, str]:
        d = self.definition
        done = finished(self.study)
        vals = [t.values[0] for t in done if t.values]
        best = (max if d.higher_is_better else min)(vals) if vals else None
        return len(done), d.n_trials, "" if best is None else f"best {d.metric} {best:.4f}"

    def give_up(self, cell: str, payload: Any) -> None:
        import optuna
        from optuna.trial import TrialState

        self.study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={
            "cell": cell, "config": self.study.user_attrs.get(PROPOSAL + cell, {}).get("config", {}),
            "failure": f"its worker died {claims.MAX_ATTEMPTS} times"}))

    def run(self, cell: str, payload: Any, claim: claims.Claim, run_id: str, progress: bool) -> None:
        config, notes = proposal(self.study, self.definition, cell, self.proposer)
        run_trial(self.study, self.definition, self.ledger, claim, cell, config, notes, run_id, progress)
