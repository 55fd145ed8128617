"""Ablation studies: every variant of a recipe over paired seeds, and an honest verdict per trick.

    result = ablate("mnist1d-cnn", ["label_smoothing", "one_cycle"], mode="add", seeds=5, workers=2)
    result.verdicts            # {"+label_smoothing": "no evidence", "+one_cycle": "helps"}

Each cell (variant x seed) is claimed by one worker (:mod:`dltricks.search.claims`), trained as a
ledger run, and recorded as an Optuna trial (:mod:`dltricks.search.study`). The same call after a
crash, Ctrl-C or kill -9 finishes what is missing; `dltricks worker` on other machines joins in.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search import claims, local
from dltricks.search import study as st
from dltricks.search.plan import Mode, plan_variants
from dltricks.search.worker import work
from dltricks.train.tasks import higher_is_better
from dltricks.tricks import Trick, parse_trick

if TYPE_CHECKING:  # scipy (behind the statistics) takes seconds to import; a worker never needs it
    from dltricks.ledger.stats import VariantStats


@dataclass
class AblationResult:
    study: str
    metric: str
    reference: str
    stats: list[VariantStats]
    scores: dict[str, dict[int, float]]
    failures: list[dict[str, Any]]
    report: dict[str, Path]

    @property
    def verdicts(self) -> dict[str, str]:
        return {s.variant: s.verdict for s in self.stats}

    def table(self):
        from rich.table import Table

        colour = {"helps": "green", "hurts": "red", "baseline": "bold"}
        t = Table("variant", "n", "mean", "delta [95% CI]", "p (Holm)", "verdict", "seeds needed",
                  title=f"{self.study}: {self.metric}", box=None)
        for s in self.stats:
            ci = "" if s.verdict == "baseline" else f"{s.delta:+.4f} [{s.ci_low:+.4f}, {s.ci_high:+.4f}]"
            p = "" if s.verdict == "baseline" else f"{s.p_holm:.3g}"
            need = "" if s.seeds_needed is None else str(s.seeds_needed)
            t.add_row(s.variant, str(s.n), f"{s.mean:.4f}", ci, p,
                      f"[{colour.get(s.verdict, 'yellow')}]{s.verdict}[/]", need)
        return t


# ---- defining a study ------------------------------------------------------------------------------

def define(recipe: Recipe, tricks: list[Trick], *, mode: Mode, seeds: int, metric: str = "",
           study: str = "") -> st.Definition:
    variants, reference = plan_variants(recipe, tricks, mode)
    metric = metric or recipe.ablate.metric or recipe.eval.metric
    seed_list = [recipe.seed + i for i in range(seeds)]
    base = recipe.to_dict()
    base.pop("ablate", None)  # the sweep's own settings are not part of what each run trains
    if not study:
        blob = json.dumps([base, [v.patch for v in variants], seed_list, metric, mode], sort_keys=True)
        study = f"{recipe.name}-{mode}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"
    return st.Definition(name=study, recipe=base, variants=variants, reference=reference, seeds=seed_list,
                         metric=metric, higher_is_better=higher_is_better(metric), mode=mode,
                         tricks=[{"name": t.name, "family": t.family, "on": t.on, "off": t.off} for t in tricks])


def resolve_tricks(recipe: Recipe, names: list[str] | None) -> list[Trick]:
    return [parse_trick(n) for n in (names if names else recipe.ablate.tricks)]


# ---- running a study ---------------------------------------------------------------------------------

def ablate(recipe: Recipe | str, tricks: list[str] | None = None, *, mode: Mode | None = None,
           seeds: int | None = None, workers: int | None = None, metric: str = "", study: str = "",
           ledger: Ledger | str | None = None, out: str | Path | None = None,
           progress: bool = True) -> AblationResult:
    """Run (or resume) an ablation study and write its report. See the module docstring.

    ``ledger`` is a :class:`Ledger` or its URL (default: ``$DLTRICKS_LEDGER`` or ./dltricks-runs); it is
    opened only once the study is known to be valid, so a mistyped trick leaves no files behind."""
    recipe = Recipe.load(recipe) if isinstance(recipe, str) else recipe
    a = recipe.ablate
    processes, threads = local.plan(workers or a.workers)
    # the other workers start now, and warm up while this process defines the study
    with local.LocalWorkers(processes - 1, threads) as children:
        definition = define(recipe, resolve_tricks(recipe, tricks), mode=mode or a.mode,
                            seeds=seeds or a.seeds, metric=metric or a.metric, study=study or a.study)
        _check_variants(recipe, definition)
        ledger = ledger if isinstance(ledger, Ledger) else Ledger(url=ledger)
        claims.ensure_table(ledger)
        st.create_or_load(ledger, definition)
        children.hand_over(ledger, definition.name)
        _run_workers(ledger, definition, children, progress)
    return report(definition.name, ledger=ledger, out=out)


def _check_variants(recipe: Recipe, definition: st.Definition) -> None:
    """Fail before any training if the reference itself is invalid; other bad patches only fail
    their own variant (the study goes on and reports why)."""
    ref = next(v for v in definition.variants if v.name == definition.reference)
    recipe.patch(ref.patch)


def _run_workers(ledger: Ledger, definition: st.Definition, children: local.LocalWorkers, progress: bool) -> None:
    """This process and the children (:mod:`dltricks.search.local`) work through the study's cells.

    This process works too: it has imported torch already, and the children warmed up while it
    defined the study. The cores are split between the processes."""
    total = len(definition.cells())
    with _StudyProgress(progress, ledger, definition, total) as bar:
        local.run(ledger, definition, children, on_cell=bar.refresh)
        if children.procs:  # a worker that died leaves a stale claim: take it over here
            work(ledger, definition.name, threads=children.threads, on_cell=bar.refresh)
        bar.refresh()


class _StudyProgress:
    """trials done/total, running, failed and ETA, read from the shared storage."""

    def __init__(self, enabled: bool, ledger: Ledger, definition: st.Definition, total: int):
        self.enabled = enabled and os.environ.get("DLTRICKS_NO_PROGRESS", "") in ("", "0")
        self.ledger, self.definition, self.total = ledger, definition, total
        self._study = None

    def __enter__(self) -> _StudyProgress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.p = Progress(TextColumn(f"[bold]{self.definition.name}[/]"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("running {task.fields[running]}  failed {task.fields[failed]}"),
                              TimeRemainingColumn())
            self.p.__enter__()
            self.task = self.p.add_task("cells", total=self.total, running=0, failed=0)
            self.refresh()
        return self

    def refresh(self) -> None:
        if not self.enabled:
            return
        if self._study is None:
            self._study, _ = st.load(self.ledger, self.definition.name)
        r = st.results(self._study, self.definition)
        self.p.update(self.task, completed=len(r.done), failed=r.n_failed,
                      running=len(claims.running(self.ledger, self.definition.name)))

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.p.__exit__(*exc)


# ---- the report ------------------------------------------------------------------------------------

def _unchanged_variants(d: st.Definition) -> set[str]:
    """Variants whose recipe is exactly the reference's: a trick that changes nothing. Their runs
    can still differ from the reference's by run-to-run noise (non-deterministic kernels, another
    thread count on another worker), which must never turn into a verdict."""
    base = Recipe.from_dict(d.recipe, source=f"study {d.name}")

    def digest(v) -> str | None:
        try:
            return base.patch(v.patch).digest()
        except DltricksError:
            return None  # a bad patch: its cells fail, with their reason

    ref = digest(next(v for v in d.variants if v.name == d.reference))
    return {v.name for v in d.variants if v.name != d.reference and ref is not None and digest(v) == ref}


def _flops_per_variant(d: st.Definition) -> dict[str, float]:
    """FLOPs of one forward pass per sample, for each variant whose model can be built and counted."""
    from dltricks.analysis import cost
    from dltricks.analysis.inspect import data_info
    from dltricks.nn import build_model

    base = Recipe.from_dict(d.recipe, source=f"study {d.name}")
    infos: dict[str, object] = {}
    out = {}
    for v in d.variants:
        try:
            recipe = base.patch(v.patch)
            key = json.dumps(recipe.to_dict()["data"], sort_keys=True)
            info = infos[key] = infos.get(key) or data_info(recipe)
            model = build_model(recipe.model, info.in_shape, info.num_classes)
            out[v.name] = float(cost(model, info.in_shape, latency=False).flops)
        except Exception:  # noqa: BLE001 - "where known": a model the counter cannot trace just has no FLOPs
            continue
    return out


def report(study_name: str, *, ledger: Ledger | None = None, out: str | Path | None = None) -> AblationResult:
    """Statistics and the report (CSV, Markdown, HTML with plots) from what the storage holds now."""
    from dltricks.ledger.report import write_report
    from dltricks.ledger.stats import compare

    ledger = ledger or Ledger()
    optuna_study, d = st.load(ledger, study_name)
    r = st.results(optuna_study, d)
    stats = compare(r.scores, d.reference, higher_is_better=d.higher_is_better, unchanged=_unchanged_variants(d))
    curves: dict[str, dict[int, dict[str, list[float]]]] = {}
    extras: dict[str, dict[str, float]] = {}
    commits = set()
    for v, by_seed in r.run_ids.items():
        curves[v] = {}
        for seed, run_id in by_seed.items():
            try:
                rec = ledger.get(run_id)
            except DltricksError:
                continue
            curves[v][seed] = rec.curves
            commits.add(rec.git_short)
        ms = list(r.metrics[v].values())
        extras[v] = {k: sum(m[k] for m in ms) / len(ms) for k in ("wall_time_s", "params")
                     if ms and all(k in m for m in ms)}
    for v, flops in _flops_per_variant(d).items():
        extras.setdefault(v, {})["flops"] = flops
    from dltricks.ledger.store import versions

    header = {
        "study": d.name, "mode": d.mode, "metric": f"{d.metric} ({'higher' if d.higher_is_better else 'lower'} "
                                                  "is better)",
        "reference": d.reference, "seeds": ", ".join(map(str, d.seeds)),
        "cells": f"{len(r.done)} of {len(d.cells())} done, {r.n_failed} failed",
        "git commit": ", ".join(sorted(c for c in commits if c)) or "not in a git repository",
        "tricks": "; ".join(f"{t['name']}: {t['on']}" for t in d.tricks),
        "environment": ", ".join(f"{k} {v}" for k, v in versions().items()),
        "storage": ledger.where,
        "recipe": Recipe.from_dict(d.recipe).to_toml(),
    }
    out = Path(out) if out else ledger.root / "reports" / d.name
    paths = write_report(out, title=f"Ablation: {d.name}", stats=stats, scores=r.scores, metric=d.metric,
                         higher_is_better=d.higher_is_better, header=header, curves=curves, extras=extras,
                         failures=r.failures)
    return AblationResult(d.name, d.metric, d.reference, stats, r.scores, r.failures, paths)
