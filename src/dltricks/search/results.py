"""What a tuning or architecture search found: its trials, the best (or the Pareto front), parameter
importances, the best recipe as TOML, the re-run verdict and the report."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search import definition as sd
from dltricks.search import local
from dltricks.search.rerun import RerunResult, rerun, same_as_start
from dltricks.search.trials import Proposer, SearchJob


@dataclass
class TrialRow:
    number: int  # the cell's index: t3 -> 3
    state: str  # complete | pruned | failed
    values: list[float] | None
    config: dict[str, Any]
    cost: dict[str, float] = field(default_factory=dict)
    failure: str = ""
    run_ids: list[str] = field(default_factory=list)


@dataclass
class SearchResult:
    study: str
    kind: str
    objectives: list[str]
    directions: list[str]
    trials: list[TrialRow]
    best: TrialRow | None
    pareto: list[TrialRow]
    importances: dict[str, float]
    rerun: RerunResult | None = None
    rerun_note: str = ""
    report: dict[str, Path] = field(default_factory=dict)
    best_path: Path | None = None

    @property
    def n_complete(self) -> int:
        return sum(t.state == "complete" for t in self.trials)

    def table(self, top: int = 10):
        from rich.table import Table

        t = Table("trial", *self.objectives, "configuration", title=f"{self.study}: best {min(top, self.n_complete)} "
                  f"of {len(self.trials)} trials", box=None)
        sign = 1.0 if self.directions[0] == "maximize" else -1.0
        done = sorted((r for r in self.trials if r.values), key=lambda r: -sign * r.values[0])
        front = {r.number for r in self.pareto} if len(self.objectives) > 1 else set()
        for r in done[:top]:
            mark = " *" if r.number in front else ""
            t.add_row(f"t{r.number}{mark}", *(f"{v:.4g}" for v in r.values),
                      ", ".join(f"{k}={_short(v)}" for k, v in r.config.items()))
        return t


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _rows(trials: list) -> list[TrialRow]:
    from optuna.trial import TrialState

    state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}
    return [TrialRow(int(t.user_attrs["cell"][1:]), state[t.state], list(t.values) if t.values else None,
                     sd.config_of(t), dict(t.user_attrs.get("cost", {})), t.user_attrs.get("failure", ""),
                     list(t.user_attrs.get("run_ids", []))) for t in trials]


def pareto_front(rows: list[TrialRow], directions: list[str]) -> list[TrialRow]:
    """The complete trials no other complete trial beats on every objective."""
    sign = [1.0 if d == "maximize" else -1.0 for d in directions]
    done = [r for r in rows if r.values and all(math.isfinite(v) for v in r.values)]

    def dominates(a: TrialRow, b: TrialRow) -> bool:
        pa, pb = [s * v for s, v in zip(sign, a.values)], [s * v for s, v in zip(sign, b.values)]
        return all(x >= y for x, y in zip(pa, pb)) and any(x > y for x, y in zip(pa, pb))

    return [r for r in done if not any(dominates(o, r) for o in done if o is not r)]


def importances(study, d: sd.SearchDefinition) -> dict[str, float]:
    """fANOVA importance of each key for the first objective ({} with too few complete trials)."""
    import warnings

    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    trials = [t for t in sd.finished(study) if t.values]
    if len(trials) < 3:
        return {}
    mem = optuna.create_study(directions=d.directions)
    for t in trials:
        mem.add_trial(t)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(
                mem, evaluator=FanovaImportanceEvaluator(seed=0), target=lambda t: t.values[0]))
    except (RuntimeError, ValueError):  # every trial with the same params, say
        return {}


def summarize(ledger: Ledger, name: str) -> tuple[sd.SearchDefinition, SearchResult]:
    study, d = sd.load(ledger, name)
    rows = _rows(sd.finished(study))
    sign = 1.0 if d.higher_is_better else -1.0
    done = [r for r in rows if r.values and math.isfinite(r.values[0])]
    front = pareto_front(rows, d.directions)
    # several objectives: the best is the front's best on the first (the metric)
    pool = front if len(d.objectives) > 1 else done
    best = max(pool, key=lambda r: sign * r.values[0]) if pool else None
    return d, SearchResult(d.name, d.kind, d.objectives, d.directions, rows, best, front, importances(study, d))


def best_recipe(d: sd.SearchDefinition, best: TrialRow) -> Recipe:
    return Recipe.from_dict(d.recipe, source=f"study {d.name}").patch(best.config)


def write_best(d: sd.SearchDefinition, best: TrialRow, path: str | Path) -> Path:
    path = Path(path)
    recipe = best_recipe(d, best)
    lines = [f"# best of {d.kind} study {d.name}: trial t{best.number}, "
             + ", ".join(f"{o} {v:.4g}" for o, v in zip(d.objectives, best.values)),
             "# changed: " + ", ".join(f"{k} = {v!r}" for k, v in best.config.items()), ""]
    try:
        path.write_text("\n".join(lines) + recipe.to_toml())
    except OSError as e:
        raise DltricksError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def check_rerun_seeds(rerun_seeds: int | None) -> None:
    if rerun_seeds is not None and rerun_seeds < 0:
        raise DltricksError(f"--rerun-seeds must be 0 (no re-run) or more, got {rerun_seeds}")


def run(ledger: Ledger | str | None, d: sd.SearchDefinition, proposer: Proposer, *, workers: int, rerun_seeds: int,
        best: str | Path | None, out: str | Path | None, progress: bool) -> SearchResult:
    """Create (or join) the search's study, run local workers until no trial is left to claim, then
    :func:`finish` it: what ``dltricks tune`` and ``dltricks nas`` share once their search is defined."""
    from dltricks.search.claims import ensure_table

    ledger = ledger if isinstance(ledger, Ledger) else Ledger(url=ledger)
    ensure_table(ledger)
    sd.create_or_load(ledger, d)
    local.run_workers(ledger, d.name, workers, progress, functools.partial(SearchJob, proposer=proposer))
    return finish(ledger, d.name, best=best, out=out, workers=workers, rerun_seeds=rerun_seeds, progress=progress)


def finish(ledger: Ledger, name: str, *, best: str | Path | None = None, out: str | Path | None = None,
           workers: int = 1, rerun_seeds: int = 6, progress: bool = True) -> SearchResult:
    """After the trials: best.toml, the re-run against the start recipe, and the report."""

    d, result = summarize(ledger, name)
    if result.best is not None:
        if best:
            result.best_path = write_best(d, result.best, best)
        if rerun_seeds and same_as_start(d, result.best.config):
            result.rerun_note = "the best configuration is the start recipe itself: nothing to re-run"
        elif rerun_seeds:
            result.rerun = rerun(ledger, d, result.best.config, seeds=rerun_seeds, workers=workers,
                                 progress=progress)
    else:
        result.rerun_note = "no trial completed: nothing to re-run"
    result.report = report(ledger, d, result, out)
    return result


def rewrite_report(ledger: Ledger, name: str, *, out: str | Path | None = None) -> SearchResult:
    """The report from what the storage holds now (trials still running are left out); no re-run."""
    d, result = summarize(ledger, name)
    result.rerun_note = "not re-run here (the report was rewritten from storage)"
    result.report = report(ledger, d, result, out)
    return result


def report(ledger: Ledger, d: sd.SearchDefinition, result: SearchResult, out: str | Path | None) -> dict[str, Path]:
    from dltricks.ledger.search_report import write_search_report

    header = {
        "study": d.name, "kind": d.kind, "strategy": d.strategy, "objectives": ", ".join(
            f"{o} ({'higher' if x == 'maximize' else 'lower'} is better)" for o, x in zip(d.objectives, d.directions)),
        "trials": f"{len(result.trials)} of {d.n_trials} done ({result.n_complete} complete)",
        "seeds per trial": ", ".join(map(str, d.seeds)),
        "space": "; ".join(x.describe() for x in d.dims),
        "storage": ledger.where,
    }
    if d.max_params or d.max_flops:
        header["budget"] = f"max params {d.max_params or '-'}, max FLOPs {d.max_flops or '-'}"
    if d.pruner != "none":
        header["pruner"] = d.pruner
    if result.best is not None:
        header["best"] = f"t{result.best.number}: " + ", ".join(f"{k} = {v!r}" for k, v in result.best.config.items())
    if result.rerun is not None:
        header["re-run"] = result.rerun.summary()
    elif result.rerun_note:
        header["re-run"] = result.rerun_note
    rows = [{"trial": r.number, "state": r.state, "values": r.values, "config": r.config, "cost": r.cost,
             "failure": r.failure} for r in result.trials]
    out = Path(out) if out else ledger.root / "reports" / d.name
    return write_search_report(out, title=f"{'Tuning' if d.kind == 'tune' else 'Architecture search'}: {d.name}",
                               header=header, objectives=d.objectives, directions=d.directions, trials=rows,
                               keys=[x.key for x in d.dims], importances=result.importances,
                               pareto=[r.number for r in result.pareto])
