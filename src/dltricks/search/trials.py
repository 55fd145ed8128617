"""Search trials on shared storage: the engine under ``dltricks tune`` and ``dltricks nas``.

A search is ``n_trials`` cells ``t0, t1, ...``. A worker claims a cell (:mod:`dltricks.search.claims`,
the same table as ablations), asks the strategy for the cell's configuration, trains it on every seed
of the search (the same seeds for every trial: paired), and only then writes one Optuna trial, with the
configuration as its params, the mean metric(s) as its value(s) and the per-epoch validation metric as
its intermediate values. So a search killed with -9 and run again ends with exactly ``n_trials``
trials, none run twice, and `dltricks worker --study NAME` on another machine joins through the
ledger's database.

Strategies never hold state between trials: a configuration is a function of the finished trials,
the trial's index and the search seed (an Optuna sampler fed the finished trials in memory, or
evolution / REINFORCE replayed over them), and it is stored with the study the moment a cell is first
claimed, so a worker that takes over a dead worker's cell trains the same configuration.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search import claims
from dltricks.search import study as st
from dltricks.search.space import Config, Dim, Space, distributions, to_params

KEY = "dltricks_search"
PROPOSAL = "proposal:"
COST_OBJECTIVES = ("flops", "latency_ms")  # measured on the model before training; every other is a run metric


@dataclass
class SearchDefinition:
    """Everything a worker needs to run any trial of the search; stored with the Optuna study."""

    name: str
    kind: str  # "tune" or "nas"
    recipe: dict[str, Any]
    space: list[dict[str, Any]]
    n_trials: int
    seeds: list[int]
    objectives: list[str]
    directions: list[str]  # "maximize" | "minimize", one per objective
    strategy: str  # a sampler (tune) or a strategy (nas)
    search_seed: int = 0
    pruner: str = "none"
    max_params: int = 0
    max_flops: int = 0
    population: int = 8
    sample_size: int = 3
    in_shape: list[int] = field(default_factory=list)
    num_classes: int = 0

    @property
    def dims(self) -> Space:
        return [Dim.from_json(d) for d in self.space]

    @property
    def metric(self) -> str:
        return self.objectives[0]

    @property
    def higher_is_better(self) -> bool:
        return self.directions[0] == "maximize"

    def cells(self) -> list[str]:
        return [f"t{k}" for k in range(self.n_trials)]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SearchDefinition:
        return cls(**d)


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in ("name", "n_trials")}


def create_or_load(ledger: Ledger, d: SearchDefinition):
    """The Optuna study of the search; the same command again finds it, and more ``--trials`` extend it."""
    import optuna

    study = optuna.create_study(study_name=d.name, storage=st.storage(ledger), load_if_exists=True,
                                directions=d.directions)
    have = study.user_attrs.get(KEY)
    if have is None:
        if st.DEFINITION in study.user_attrs:
            raise DltricksError(f"study {d.name!r} is an ablation study; pass --study NEWNAME")
        study.set_user_attr(KEY, d.to_json())
    elif _comparable(have) != _comparable(d.to_json()):
        raise DltricksError(f"study {d.name!r} already exists with a different recipe, space, seeds or settings; "
                            "rerun the same command to resume it (--trials may grow), or pass --study NEWNAME")
    elif have["n_trials"] != d.n_trials:
        study.set_user_attr(KEY, d.to_json())
    return study


def is_search(ledger: Ledger, name: str) -> bool:
    import optuna

    try:
        return KEY in optuna.load_study(study_name=name, storage=st.storage(ledger)).user_attrs
    except KeyError:
        return False


def load(ledger: Ledger, name: str):
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=st.storage(ledger))
    except KeyError:
        st.load(ledger, name)  # raises the one-line "no study" error with its did-you-mean
        raise
    if KEY not in study.user_attrs:
        raise DltricksError(f"study {name!r} was not made by dltricks tune or nas")
    return study, SearchDefinition.from_json(study.user_attrs[KEY])


def finished(study) -> list:
    """The finished trials, one per cell (the first to finish it), in the order of their cells."""
    from optuna.trial import TrialState

    seen: dict[str, Any] = {}
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                              TrialState.FAIL)), key=lambda t: t.number):
        cell = t.user_attrs.get("cell")
        if cell is not None and cell not in seen:
            seen[cell] = t
    return sorted(seen.values(), key=lambda t: int(t.user_attrs["cell"][1:]))


def config_of(trial) -> Config:
    return dict(trial.user_attrs.get("config", {}))


# ---- cost of a candidate (before training) --------------------------------------------------------

def measure(recipe: Recipe, d: SearchDefinition, *, flops: bool = True, latency: bool = False) -> dict[str, float]:
    """Parameters and (with ``flops``) FLOPs of one forward pass over one sample of ``recipe``'s model,
    without training it. Counting FLOPs traces the model (a tenth of a second); parameters need no trace."""
    from dltricks.analysis import cost
    from dltricks.nn import build_model

    try:
        model = build_model(recipe.model, tuple(d.in_shape), d.num_classes)
        if not (flops or latency):
            return {"params": float(sum(p.numel() for p in model.parameters()))}
        c = cost(model, tuple(d.in_shape), latency=latency)
    except (ValueError, TypeError, RuntimeError) as e:
        raise DltricksError(f"model cannot be built for input {tuple(d.in_shape)}: {e}") from None
    out = {"params": float(c.params), "flops": float(c.flops)}
    if latency and c.latency_ms is not None:
        out["latency_ms"] = float(c.latency_ms)
    return out


def over_budget(m: dict[str, float], d: SearchDefinition) -> str | None:
    """Why a candidate of cost ``m`` breaks the search's budget, or None."""
    if d.max_params and m["params"] > d.max_params:
        return f"{m['params']:,.0f} parameters > --max-params {d.max_params:,}"
    if d.max_flops and m.get("flops", 0.0) > d.max_flops:
        return f"{m['flops']:,.0f} FLOPs > --max-flops {d.max_flops:,}"
    return None


# ---- proposals ------------------------------------------------------------------------------------

def _propose(study, d: SearchDefinition, k: int) -> tuple[Config, dict[str, Any]]:
    history = finished(study)
    if d.kind == "nas":
        from dltricks.search import nas

        return nas.propose(d, history, k), {}
    from dltricks.search import tune

    done = {t.user_attrs["cell"] for t in history}
    pending = [v["config"] for key, v in study.user_attrs.items()
               if key.startswith(PROPOSAL) and key[len(PROPOSAL):] not in done]
    return tune.propose(d, history, k, pending)


def proposal(study, d: SearchDefinition, cell: str) -> tuple[Config, dict[str, Any]]:
    """The cell's configuration and the sampler's notes on it (CMA-ES and NSGA-II keep their state in
    their trials): the stored ones if an earlier (dead) worker made them, else new ones."""
    stored = study.user_attrs.get(PROPOSAL + cell)
    if stored is None:
        config, notes = _propose(study, d, int(cell[1:]))
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


# ---- workers ----------------------------------------------------------------------------------------

def work(ledger: Ledger, name: str, *, threads: int = 0, progress: bool = False, on_trial=None) -> int:
    """Claim and run trials of a search until none is left to claim; return how many this worker ran."""
    import torch

    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        claims.ensure_table(ledger)
        study, d = load(ledger, name)
        ran = 0
        def done() -> set[str]:
            return {t.user_attrs["cell"] for t in finished(study)}

        for cell, claim, run_id in claims.claim_each(ledger, name, ((c, c) for c in d.cells()), done):
            with claims.settle(ledger, claim):
                if claim.gave_up:
                    _record_given_up(study, d, cell)
                else:
                    with claims.Heartbeat(ledger, claim):
                        config, notes = proposal(study, d, cell)
                        run_trial(study, d, ledger, claim, cell, config, notes, run_id, progress)
            ran += 1
            if on_trial is not None:
                on_trial()
        return ran
    finally:
        if threads:
            torch.set_num_threads(threads_before)


def _record_given_up(study, d: SearchDefinition, cell: str) -> None:
    import optuna
    from optuna.trial import TrialState

    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={
        "cell": cell, "config": study.user_attrs.get(PROPOSAL + cell, {}).get("config", {}),
        "failure": f"its worker died {claims.MAX_ATTEMPTS} times"}))


def run_workers(ledger: Ledger, d: SearchDefinition, workers: int, progress: bool) -> None:
    """This process and ``workers - 1`` `dltricks worker` children on this machine, cores split between them."""
    import torch

    threads = max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) // workers))
    with _Progress(progress, ledger, d) as bar:
        if workers <= 1:
            work(ledger, d.name, threads=threads, on_trial=bar.refresh)
            return
        env = {**os.environ, "DLTRICKS_NO_PROGRESS": "1", "DLTRICKS_LEDGER": ledger.url,
               "DLTRICKS_HOME": str(ledger.root), "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "dltricks.cli", "worker", "--study", d.name, "--threads", str(threads), "--quiet"]
        logs = [tempfile.TemporaryFile(mode="w+", prefix="dltricks-worker-")  # noqa: SIM115 - closed below
                for _ in range(workers - 1)]
        procs = [subprocess.Popen(cmd, env=env, cwd=os.getcwd(), stdout=subprocess.DEVNULL, stderr=log, text=True)
                 for log in logs]
        try:
            work(ledger, d.name, threads=threads, on_trial=bar.refresh)
            while any(p.poll() is None for p in procs):
                bar.refresh()
                time.sleep(0.5)
        except BaseException:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)  # as a Ctrl-C would: they release their cells
            for p in procs:
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            raise
        finally:
            errors = []
            for p, log in zip(procs, logs):
                log.seek(0)
                text = log.read().strip()
                log.close()
                if p.returncode not in (0, None) and text:
                    errors.append(text)
        if errors:
            raise DltricksError(f"a worker stopped with an error: {errors[0].splitlines()[-1]}")
        work(ledger, d.name, threads=threads, on_trial=bar.refresh)  # a dead worker's cell, taken over here


class _Progress:
    """Trials done/total and the best so far, read from the shared storage."""

    def __init__(self, enabled: bool, ledger: Ledger, d: SearchDefinition):
        self.enabled = enabled and os.environ.get("DLTRICKS_NO_PROGRESS", "") in ("", "0")
        self.ledger, self.d = ledger, d

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.p = Progress(TextColumn(f"[bold]{self.d.name}[/]"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[best]}"), TimeRemainingColumn())
            self.p.__enter__()
            self.task = self.p.add_task("trials", total=self.d.n_trials, best="")
            self.refresh()
        return self

    def refresh(self) -> None:
        if not self.enabled:
            return
        study, _ = load(self.ledger, self.d.name)
        done = finished(study)
        vals = [t.values[0] for t in done if t.values]
        best = (max if self.d.higher_is_better else min)(vals) if vals else None
        self.p.update(self.task, completed=len(done),
                      best="" if best is None else f"best {self.d.metric} {best:.4f}")

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.p.__exit__(*exc)
