"""Tuning any command (``dltricks tune --command 'python train.py --lr {lr} --seed {seed}'``): Optuna's
samplers over the command's placeholders, on the trial loop of recipe searches (claims, resume, workers).

A trial fills each space key's placeholder with its value and runs the command on every seed of the search
(paired across trials); its value is the metric's mean. When the script reports the metric as a list per
epoch (``{"val_accuracy": [0.61, 0.74, ...]}``, the last is the score) and a pruner is set, the first seed is
judged while it runs, as a recipe's trial is, and stopped (its process group ended) when pruned. The best
trial is then re-run on fresh seeds against the command's defaults (``{lr=0.01}``): a two-variant command
study with a paired verdict.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any

from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.search import claims
from dltricks.search import command as cm
from dltricks.search import command_process as cp
from dltricks.search import study as st
from dltricks.search.command_job import run_local, run_name
from dltricks.search.definition import SearchDefinition, directions_for, finished
from dltricks.search.plan import Variant
from dltricks.search.space import Config, Dim, Space, _is_number, distributions, parse_spec_arg, to_params
from dltricks.search.trials import SearchJob, proposal
from dltricks.search.tune import PRUNERS, SAMPLERS, ParamProposer

# ---- the space ----------------------------------------------------------------------------------------

def parse_space(entries: dict[str, Any]) -> Space:
    """Dimensions over placeholders: ``{low, high, log}`` (int when both ends are whole numbers written as
    such) or a list of choices."""
    space = []
    for key, spec in entries.items():
        if isinstance(spec, list):
            if not spec:
                raise DltricksError(f"[tune.space] {key}: the list of choices is empty")
            space.append(Dim(key, "categorical", choices=tuple(spec)))
        elif isinstance(spec, dict):
            low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
            unknown = sorted(set(spec) - {"low", "high", "log"})
            if unknown or not (_is_number(low) and _is_number(high)) or not isinstance(log, bool):
                raise DltricksError(f"[tune.space] {key} = {spec!r}: a range is {{ low = NUMBER, high = NUMBER, "
                                    "log = true|false }")
            if not low < high:
                raise DltricksError(f"[tune.space] {key}: low must be below high, got {low}, {high}")
            if log and low <= 0:
                raise DltricksError(f"[tune.space] {key}: a log range needs low > 0, got {low}")
            whole = isinstance(low, int) and isinstance(high, int)
            space.append(Dim(key, "int" if whole else "float", low=low if whole else float(low),
                             high=high if whole else float(high), log=log))
        else:
            raise DltricksError(f"[tune.space] {key} = {spec!r}: give a range {{low, high, log}} or a list of choices")
    return space


def space_entries(table: dict[str, Any] | None, extra: list[str] | None) -> dict[str, Any]:
    entries = dict(table or {})
    for item in extra or []:
        key, spec = parse_spec_arg(item)
        entries[key] = spec
    if not entries:
        raise DltricksError("the search space is empty: add [tune.space] to the study file (lr = { low = 1e-5, "
                            "high = 0.1, log = true }) or pass --space lr=1e-5..0.1:log")
    return entries


def _value(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def patch_of(config: Config) -> dict[str, Any]:
    return {"args": [], "env": {}, "set": {k: _value(v) for k, v in config.items()}}


def define(spec: cm.CommandSpec, space: Space, *, sampler: str = "tpe", trials: int = 20, seeds_per_trial: int = 1,
           metric: str = "", pruner: str = "none", search_seed: int = 0, study: str = "") -> SearchDefinition:
    if not metric:
        raise DltricksError("a command search needs --metric: the name, in the JSON the command reports, of the "
                            "metric to optimise (e.g. --metric val_accuracy)")
    if sampler not in SAMPLERS:
        raise DltricksError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise DltricksError(f"unknown pruner {pruner!r}; valid: {', '.join(PRUNERS)}")
    used = cm.placeholders(spec["line"])
    unused = [x.key for x in space if x.key not in used]
    if unused:
        raise DltricksError(f"space key {unused[0]} fills no placeholder in the command: write {{{unused[0]}}} "
                            f"where its value goes, e.g. --{unused[0].replace('_', '-')} {{{unused[0]}}}")
    d = SearchDefinition(name="", kind="tune", recipe={}, space=[x.to_json() for x in space], n_trials=trials,
                         seeds=list(range(seeds_per_trial)), objectives=[metric], directions=directions_for([metric]),
                         strategy=sampler, search_seed=search_seed, pruner=pruner, command=spec)
    if not study:
        blob = json.dumps({k: v for k, v in d.to_json().items() if k not in ("name", "n_trials")}, sort_keys=True)
        script = run_name(cm.split_line(spec["line"])).rsplit(".", 1)[0] or "command"
        study = f"{script}-tune-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"
    d.name = study
    middle = {x.key: x.sample(random.Random(0)) for x in space}  # any configuration: is every placeholder filled?
    cm.check(spec, {"t0": patch_of(middle)}, study)
    return d


# ---- one trial ----------------------------------------------------------------------------------------

def _pruning_trial(study, d: SearchDefinition, config: Config):
    """An in-memory trial that sees every finished trial's intermediate values, for the pruner to judge."""
    import optuna

    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1) if d.pruner == "median" else
              optuna.pruners.HyperbandPruner(min_resource=1))
    mem = optuna.create_study(study_name=d.name, direction=d.directions[0], pruner=pruner,
                              sampler=optuna.samplers.RandomSampler(seed=0))
    for t in finished(study):
        mem.add_trial(t)
    mem.enqueue_trial(to_params(d.dims, config))
    return mem.ask(distributions(d.dims))


def run_trial(job: CommandSearchJob, cell: str, config: Config, notes: dict[str, Any], claim: claims.Claim,
              first_run_id: str) -> None:
    """Run the command with ``config`` on every seed and write the trial (COMPLETE, PRUNED or FAIL)."""
    import optuna
    from optuna.trial import TrialState

    from dltricks.ledger.record import new_run_id

    d, ledger = job.definition, job.ledger
    attrs: dict[str, Any] = {"cell": cell, "config": config, "run_ids": [], "seeds": {}}
    intermediate: dict[int, float] = {}
    state, values, failure = TrialState.COMPLETE, None, None
    judge = _pruning_trial(job.study, d, config) if d.pruner != "none" else None
    for i, seed in enumerate(d.seeds):
        run_id = first_run_id if i == 0 else new_run_id()
        if i:
            claims.set_run_id(ledger, claim, run_id)
        attrs["run_ids"].append(run_id)
        folder = ledger.root / "runs" / run_id

        def tick(folder: Path = folder) -> str | None:  # the script's curve so far, judged by the pruner
            try:
                _, curves = cm.parse_metrics((folder / "metrics.json").read_text(), "$DLTRICKS_METRICS")
            except (OSError, DltricksError):
                return None
            for step, v in enumerate(curves.get(d.metric, []), start=1):
                if step not in intermediate and math.isfinite(v):
                    intermediate[step] = v
                    judge.report(v, step)
                    if judge.should_prune():
                        return f"pruned after step {step} ({d.pruner} pruner): {d.metric} {v:.4g}"
            return None

        o, _ = cm_run_cell(ledger, d, config, seed=seed, cell=cell, run_id=run_id,
                           on_tick=tick if judge is not None and i == 0 else None)
        if o.failure and o.failure.startswith("pruned after"):
            state, failure = TrialState.PRUNED, o.failure
            break
        if o.failure:
            state, failure = TrialState.FAIL, f"seed {seed}: {o.failure}"
            break
        attrs["seeds"][str(seed)] = {k: v for k, v in o.metrics.items() if math.isfinite(v)}
        if i == 0:  # the steps reported after the last look (or printed at the end): later pruners compare with them
            for step, v in enumerate(o.curves.get(d.metric, []), 1):
                if math.isfinite(v):
                    intermediate.setdefault(step, v)
    if state == TrialState.COMPLETE:
        got = [m[d.metric] for m in attrs["seeds"].values()]
        values = [sum(got) / len(got)]
    if failure:
        attrs["failure"] = failure
    if not claims.still_mine(ledger, claim):
        return
    job.study.add_trial(optuna.trial.create_trial(
        state=state, values=values, params=to_params(d.dims, config), distributions=distributions(d.dims),
        user_attrs=attrs, system_attrs=notes, intermediate_values=intermediate))


def cm_run_cell(ledger: Ledger, d: SearchDefinition, config: Config, *, seed: int, cell: str, run_id: str,
                on_tick=None) -> tuple[cp.Outcome, bool]:
    from dltricks.search.command_job import run_cell

    label = cell + " " + ", ".join(f"{k}={_value(v)}" for k, v in config.items())
    return run_cell(ledger, d.command, patch_of(config), seed=seed, cell=cell, variant=cell, study=d.name,
                    run_id=run_id, metric=d.metric, on_tick=on_tick, run_label=label[:200])


class CommandSearchJob(SearchJob):
    """The trials of command search ``name``: the search's sampler proposes, the command runs."""

    def __init__(self, ledger: Ledger, name: str, proposer: Any = None):
        super().__init__(ledger, name, proposer or ParamProposer())

    def run(self, cell: str, payload: Any, claim: claims.Claim, run_id: str, progress: bool) -> None:
        from dltricks.search.command_job import _stop_on_sigterm

        config, notes = proposal(self.study, self.definition, cell, self.proposer)
        before = _stop_on_sigterm()
        try:
            run_trial(self, cell, config, notes, claim, run_id)
        finally:
            if before is not None:
                import signal

                signal.signal(signal.SIGTERM, before)


# ---- the re-run and the whole search ---------------------------------------------------------------------

def defaults(spec: cm.CommandSpec) -> dict[str, str]:
    """The placeholder defaults written in the command: ``{lr=0.01}`` -> {"lr": "0.01"}."""
    return {m.group(1): m.group(2) for m in cm.PLACEHOLDER.finditer(spec["line"]) if m.group(2) is not None}


def rerun_best(ledger: Ledger, d: SearchDefinition, config: Config, *, seeds: int, workers: int, progress: bool):
    """The best configuration against the command's defaults on ``seeds`` fresh seeds, paired: a
    :class:`dltricks.search.rerun.RerunResult`."""
    from dltricks.ledger.stats import compare
    from dltricks.search.command_job import CommandJob
    from dltricks.search.rerun import RerunResult, fresh_seeds

    tag = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:6]
    best = patch_of(config)
    definition = st.Definition(
        name=f"{d.name}-rerun-{tag}", recipe={}, reference="start", seeds=fresh_seeds(d, seeds), metric=d.metric,
        variants=[Variant("start", (), {"args": [], "env": {}, "set": {}}), Variant("best", ("best",), best)],
        higher_is_better=d.higher_is_better, mode="rerun", command=d.command,
        tricks=[{"name": "best", "family": "tune", "on": best, "off": {}}])
    claims.ensure_table(ledger)
    st.create_or_load(ledger, definition)
    run_local(ledger, definition.name, workers, progress, CommandJob)
    optuna_study, _ = st.load(ledger, definition.name)
    r = st.results(optuna_study, definition)
    rows = {s.variant: s for s in compare(r.scores, "start", higher_is_better=d.higher_is_better)}
    return RerunResult(definition.name, d.metric, definition.seeds, rows["start"], rows["best"], r.scores)


def write_best(d: SearchDefinition, best, path: str | Path) -> Path:
    path = Path(path)
    line = d.command["line"]
    for k, v in best.config.items():
        line = cm.PLACEHOLDER.sub(lambda m, k=k, v=v: _value(v) if m.group(1) == k else m.group(0), line)
    text = (f"# best of command search {d.name}: trial t{best.number}, {d.metric} {best.values[0]:.4g}\n"
            f"command = {json.dumps(line)}\n\n[values]\n"
            + "".join(f"{k} = {json.dumps(v)}\n" for k, v in best.config.items()))
    try:
        path.write_text(text)
    except OSError as e:
        raise DltricksError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def tune_command(spec: cm.CommandSpec, space: Space, *, sampler: str = "tpe", trials: int = 20,
                 seeds_per_trial: int = 1, metric: str = "", pruner: str = "none", search_seed: int = 0,
                 study: str = "", workers: int = 1, rerun_seeds: int = 6, best: str | Path | None = None,
                 ledger: Ledger | str | None = None, out: str | Path | None = None, progress: bool = True):
    """Run (or resume) a search over the command's placeholders, re-run its best against the defaults and
    write the report; returns a :class:`dltricks.search.results.SearchResult`."""
    from dltricks.search import results
    from dltricks.search.definition import create_or_load

    results.check_rerun_seeds(rerun_seeds)
    d = define(spec, space, sampler=sampler, trials=trials, seeds_per_trial=seeds_per_trial, metric=metric,
               pruner=pruner, search_seed=search_seed, study=study)
    ledger = ledger if isinstance(ledger, Ledger) else Ledger(url=ledger)
    claims.ensure_table(ledger)
    create_or_load(ledger, d)
    run_local(ledger, d.name, max(1, workers), progress, CommandSearchJob)
    d, result = results.summarize(ledger, d.name)
    if result.best is not None:
        if best:
            result.best_path = write_best(d, result.best, best)
        missing = [x.key for x in d.dims if x.key not in defaults(d.command)]
        if not rerun_seeds:
            result.rerun_note = "not re-run (--rerun-seeds 0)"
        elif missing:
            result.rerun_note = (f"not re-run: {{{missing[0]}}} has no default in the command to compare the best "
                                 f"with (write {{{missing[0]}=VALUE}})")
        elif all(_value(v) == defaults(d.command)[k] for k, v in result.best.config.items()):
            result.rerun_note = "the best configuration is the command's defaults: nothing to re-run"
        else:
            result.rerun = rerun_best(ledger, d, result.best.config, seeds=rerun_seeds, workers=max(1, workers),
                                      progress=progress)
    else:
        result.rerun_note = "no trial completed: nothing to re-run"
    result.report = results.report(ledger, d, result, out)
    return result

