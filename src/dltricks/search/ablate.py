"""Ablation studies: every variant of a recipe over paired seeds, and an honest verdict per trick.

    result = ablate("mnist1d-cnn", ["label_smoothing", "one_cycle"], mode="add", seeds=5, workers=2)
    result.verdicts            # {"+label_smoothing": "equivalent", "+one_cycle": "helps"}

Each cell (variant x seed) is claimed by one worker (:mod:`dltricks.search.claims`), trained as a
ledger run, and recorded as an Optuna trial (:mod:`dltricks.search.study`). The same call after a
crash, Ctrl-C or kill -9 finishes what is missing; `dltricks worker` on other machines joins in.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dltricks.direction import higher_is_better
from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search import claims, local
from dltricks.search import study as st
from dltricks.search.plan import Mode, plan_variants
from dltricks.search.study_job import StudyJob
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
    cells_done: int = 0
    cells_total: int = 0  # with seeds = "auto": the cells done plus those the rule still asks for
    notes: list[str] = field(default_factory=list)  # things the reader must know (a trick the baseline turns off)
    rope: float = float("nan")

    @property
    def verdicts(self) -> dict[str, str]:
        return {s.variant: s.verdict for s in self.stats}

    @property
    def partial(self) -> bool:
        """True while cells are still to run (a study running, interrupted, or waiting for a look)."""
        return self.cells_done < self.cells_total

    def rich_table(self):
        """The results as a rich renderable (what the CLI prints); every variant name and verdict stays whole
        at any width (:class:`dltricks.ledger.verdict_table.VerdictTable`)."""
        from dltricks.ledger.verdict_table import VerdictTable

        return VerdictTable(self.stats, f"{self.study}: {self.metric}, ROPE ±{self.rope:.3g}")

    def lines(self) -> list[str]:
        """The notes under the table: partial state, reasons for inconclusive and fragile verdicts."""
        out = []
        if self.partial:
            out.append(f"partial: {self.cells_done} of {self.cells_total} cells done; verdicts may change")
        out += [f"note: {n}" for n in self.notes]
        for s in self.stats:
            if s.verdict == "inconclusive" or s.fragile:
                why = s.reason + ("; the sign-flip cross-check does not confirm it" if s.fragile else "")
                out.append(f"{s.variant}: {s.verdict}: {why}")
        return out

    def table(self) -> str:
        """The results as plain text, for print() in Python (the CLI prints :meth:`rich_table`)."""
        import io

        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=120, no_color=True, color_system=None, highlight=False).print(self.rich_table())
        return buf.getvalue().rstrip("\n")

    def __str__(self) -> str:
        return "\n".join([self.table(), *self.lines()])

    def __repr__(self) -> str:
        verdicts = ", ".join(f"{v}: {w}" for v, w in self.verdicts.items() if w != "baseline")
        return f"<AblationResult {self.study} ({self.metric}, {self.cells_done}/{self.cells_total} cells): {verdicts}>"


# ---- defining a study ------------------------------------------------------------------------------

def define(recipe: Recipe, tricks: list[Trick], *, mode: Mode, seeds: int | str, metric: str = "",
           study: str = "", rope: float | None = None, max_seeds: int | None = None) -> st.Definition:
    """The study: variants, seeds and metric. ``seeds="auto"`` plans up to ``max_seeds`` seeds
    (default ``ablate.max_seeds``) in looks (:func:`dltricks.ledger.looks.auto_schedule`)."""
    from dltricks.ledger.looks import auto_schedule

    variants, reference = plan_variants(recipe, tricks, mode)
    metric = metric or recipe.ablate.metric or recipe.eval.metric
    if seeds == "auto":
        schedule = auto_schedule(max_seeds or recipe.ablate.max_seeds)
        n_seeds = schedule[-1]
    elif isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
        schedule, n_seeds = [], seeds
    else:
        raise DltricksError(f'seeds must be a whole number >= 1 or "auto", got {seeds!r}')
    seed_list = [recipe.seed + i for i in range(n_seeds)]
    base = recipe.to_dict()
    for section in ("ablate", "tune", "nas"):
        base.pop(section, None)  # the sweeps' own settings are not part of what each run trains
    if not study:
        parts: list[Any] = [base, [v.patch for v in variants], seed_list, metric, mode]
        if schedule:  # a sequential study's ROPE decides which cells run
            parts += [schedule, rope]
        blob = json.dumps(parts, sort_keys=True)
        study = f"{recipe.name}-{mode}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"
    return st.Definition(name=study, recipe=base, variants=variants, reference=reference, seeds=seed_list,
                         metric=metric, higher_is_better=higher_is_better(metric), mode=mode,
                         tricks=[{"name": t.name, "family": t.family, "on": t.on, "off": t.off} for t in tricks],
                         schedule=schedule, rope=rope)


def resolve_tricks(recipe: Recipe, names: list[str] | None) -> list[Trick]:
    return [parse_trick(n) for n in (names if names else recipe.ablate.tricks)]


# ---- running a study ---------------------------------------------------------------------------------

def ablate(recipe: Recipe | str, tricks: list[str] | None = None, *, mode: Mode | None = None,
           seeds: int | str | None = None, workers: int | None = None, metric: str = "", study: str = "",
           ledger: Ledger | str | None = None, out: str | Path | None = None,
           progress: bool = True, rope: float | None = None, max_seeds: int | None = None) -> AblationResult:
    """Run (or resume) an ablation study and write its report. See the module docstring.

    ``seeds``: a number, or "auto" (3 seeds, then more in rounds for the inconclusive variants only,
    up to ``max_seeds``). ``rope``: the half-width of the region of practical equivalence in metric
    units (default ``ablate.rope``, else 0.005 for metrics in [0, 1] and 1% of the baseline otherwise).
    ``ledger`` is a :class:`Ledger` or its URL (default: ``$DLTRICKS_LEDGER`` or ./dltricks-runs); it is
    opened only once the study is known to be valid, so a mistyped trick leaves no files behind."""
    recipe = Recipe.load(recipe) if isinstance(recipe, str) else recipe
    a = recipe.ablate
    if rope is not None and not (rope >= 0 and rope != float("inf")):
        raise DltricksError(f"--rope is a half-width in metric units, a number >= 0; got {rope}")
    processes, threads = local.plan(workers or a.workers)
    # The other workers start now, and warm up while this process defines the study. A fresh process
    # (the command line) leaves every cell to its workers and only coordinates.
    coordinate = local.can_fork(threads) and local.still_fresh()
    with local.LocalWorkers(processes if coordinate else processes - 1, threads, StudyJob,
                            coordinate=coordinate) as children:
        definition = define(recipe, resolve_tricks(recipe, tricks), mode=mode or a.mode,
                            seeds=seeds or a.seeds, metric=metric or a.metric, study=study or a.study,
                            rope=(None if a.rope == "auto" else float(a.rope)) if rope is None else rope,
                            max_seeds=max_seeds or a.max_seeds)
        _check_variants(recipe, definition)
        if not coordinate:
            local.warm_up()  # this process trains cells too (a no-op where forked children made it warm up)
        ledger = ledger if isinstance(ledger, Ledger) else Ledger(url=ledger)
        claims.ensure_table(ledger)
        st.create_or_load(ledger, definition)
        if coordinate:
            local.load_report_modules()  # while the workers still import torch._dynamo
        children.hand_over(ledger, definition.name)
        local.run_workers(ledger, definition.name, children, progress, StudyJob)
    return report(definition.name, ledger=ledger, out=out)


def _check_variants(recipe: Recipe, definition: st.Definition) -> None:
    """Fail before any training if a variant's recipe is invalid (a bad key or value) or the metric is
    not one a run records: otherwise the study would train the baseline and then fail every cell."""
    from dltricks.errors import did_you_mean, one_of
    from dltricks.runner.run import metric_names

    ref = None
    for v in definition.variants:
        try:
            patched = recipe.patch(v.patch)
        except DltricksError as e:
            raise DltricksError(f"variant {v.name}: {e}") from None
        if v.name == definition.reference:
            ref = patched
    names = metric_names(ref or recipe)
    if definition.metric not in names:
        raise DltricksError(f"unknown metric {definition.metric!r}{did_you_mean(definition.metric, names)}; "
                            f"a run of {recipe.name} records: {one_of(names)}")


# ---- the report ------------------------------------------------------------------------------------

def _unchanged_variants(d: st.Definition) -> set[str]:
    return st.unchanged_variants(d)


def _switched_off(d: st.Definition) -> list[str]:
    """Tricks the recipe already had on that the reference variant turns off: the reader must know
    that the baseline is not the recipe as written (mnist1d-cnn has one_cycle; --trick one_cycle
    makes its baseline a constant learning rate)."""
    base = Recipe.from_dict(d.recipe, source=f"study {d.name}")
    ref = next(v for v in d.variants if v.name == d.reference)
    out = []
    for t in d.tricks:
        if not t.get("off") or t["name"] in ref.on:
            continue
        try:
            had = all(base.get(k) == v for k, v in t["on"].items())
        except DltricksError:
            continue
        if had:
            change = ", ".join(f"{k} = {base.get(k)!r} -> {v!r}" for k, v in t["off"].items())
            out.append(f"the recipe has {t['name']} on; the {d.reference} turns it off ({change})")
    return out


def _flops_per_variant(d: st.Definition, names: set[str]) -> dict[str, float]:
    """FLOPs of one forward pass per sample, for each variant in ``names`` whose model can be built and
    counted."""
    from dltricks.analysis import cost
    from dltricks.analysis.inspect import data_info
    from dltricks.nn import build_model

    base = Recipe.from_dict(d.recipe, source=f"study {d.name}")
    infos: dict[str, object] = {}
    out = {}
    for v in d.variants:
        if v.name not in names:
            continue
        try:
            recipe = base.patch(v.patch)
            key = json.dumps(recipe.to_dict()["data"], sort_keys=True)
            info = infos[key] = infos.get(key) or data_info(recipe)
            model = build_model(recipe.model, info.in_shape, info.num_classes)
            out[v.name] = float(cost(model, info.in_shape, latency=False).flops)
        except Exception:  # noqa: BLE001 - "where known": a model the counter cannot trace just has no FLOPs
            continue
    return out


# figures a run writes into its folder that the study's report shows, one run per variant
RUN_FIGURES = ("adaptation.png", "zero_shot.png")


def report(study_name: str, *, ledger: Ledger | None = None, out: str | Path | None = None,
           rope: float | None = None) -> AblationResult:
    """Statistics and the report (CSV, Markdown, HTML with plots) from what the storage holds now.

    ``rope`` judges the same runs with another ROPE half-width (default: the study's)."""
    from dltricks.ledger.report import write_report
    from dltricks.ledger.stats import compare

    ledger = ledger or Ledger()
    optuna_study, d = st.load(ledger, study_name)
    r = st.results(optuna_study, d)
    if rope is not None:
        d.rope = rope
    if d.schedule:
        stats, _, _ = st.sequential_state(optuna_study, d, r)
        remaining = len(st.todo(optuna_study, d, r))
    else:
        stats = compare(r.scores, d.reference, higher_is_better=d.higher_is_better, unchanged=_unchanged_variants(d),
                        rope=d.rope, metric=d.metric, alpha=d.alpha)
        remaining = len(d.cells()) - len(r.done)
    curves: dict[str, dict[int, dict[str, list[float]]]] = {}
    extras: dict[str, dict[str, float]] = {}
    figures: dict[str, Path] = {}
    commits = set()
    for v, by_seed in r.run_ids.items():
        curves[v] = {}
        for seed, run_id in sorted(by_seed.items()):
            try:
                rec = ledger.get(run_id)
            except DltricksError:
                continue
            curves[v][seed] = rec.curves
            commits.add(rec.git_short)
            for name in RUN_FIGURES:  # the first seed's figures: what the set-up looks like, per variant
                if f"{v}: {name}" not in figures and (ledger.run_dir(run_id) / name).is_file():
                    figures[f"{v}: {name}"] = ledger.run_dir(run_id) / name
        ms = list(r.metrics[v].values())
        extras[v] = {k: sum(m[k] for m in ms) / len(ms) for k in ("wall_time_s", "params", "flops")
                     if ms and all(k in m for m in ms)}
    uncounted = {v.name for v in d.variants if "flops" not in extras.get(v.name, {})}
    if uncounted:  # runs recorded before runs counted their FLOPs, or none yet
        for v, flops in _flops_per_variant(d, uncounted).items():
            extras.setdefault(v, {})["flops"] = flops
    from dltricks.ledger.store import versions

    rope = next((row.rope for row in stats if row.rope == row.rope), float("nan"))
    rope_source = "given" if d.rope is not None else "default for this metric"
    if d.schedule:
        seeds = (f"auto: {d.schedule[0]} seeds, more only for inconclusive variants, up to {d.schedule[-1]} "
                 f"(looks at {', '.join(map(str, d.schedule))}; Bonferroni alpha spending, "
                 f"{d.alpha / len(d.schedule):.3g} per look)")
    else:
        seeds = ", ".join(map(str, d.seeds))
    done, total = len(r.done), len(r.done) + remaining
    notes = _switched_off(d)
    if remaining:
        notes = [f"partial: {done} of {total} cells done; the verdicts may change", *notes]
    header = {
        "study": d.name, "mode": d.mode, "metric": f"{d.metric} ({'higher' if d.higher_is_better else 'lower'} "
                                                  "is better)",
        "ROPE": f"±{rope:.4g} {d.metric} ({rope_source})", "alpha": f"{d.alpha} (family-wise, Holm)",
        "reference": d.reference, "seeds": seeds,
        "cells": f"{done} of {total} done, {r.n_failed} failed",
        "git commit": ", ".join(sorted(c for c in commits if c)) or "not in a git repository",
        "tricks": "; ".join(f"{t['name']}: {t['on']}" for t in d.tricks),
        "environment": ", ".join(f"{k} {v}" for k, v in versions().items()),
        "storage": ledger.where,
    }
    out = Path(out) if out else ledger.root / "reports" / d.name
    paths = write_report(out, title=f"Ablation: {d.name}", stats=stats, scores=r.scores, metric=d.metric,
                         higher_is_better=d.higher_is_better, header=header, curves=curves, extras=extras,
                         failures=r.failures, notes=notes, changes=_changes(d),
                         recipe=Recipe.from_dict(d.recipe).to_toml(), run_figures=figures)
    return AblationResult(d.name, d.metric, d.reference, stats, r.scores, r.failures, paths, cells_done=done,
                          cells_total=total, notes=_switched_off(d), rope=rope)


def _changes(d: st.Definition) -> dict[str, str]:
    """Per variant, the recipe keys whose value differs from the reference's: "train.lr: 0.01 -> 1e-06"."""
    from dltricks.ledger.sheet import flatten

    base = Recipe.from_dict(d.recipe, source=f"study {d.name}")

    def flat(v) -> dict[str, Any] | None:
        try:
            return flatten(base.patch(v.patch).to_dict())
        except DltricksError:
            return None

    ref = flat(next(v for v in d.variants if v.name == d.reference)) or {}
    out = {}
    for v in d.variants:
        mine = flat(v)
        if mine is None:
            out[v.name] = "invalid patch: " + ", ".join(f"{k} = {x!r}" for k, x in v.patch.items())
            continue
        diff = [f"{k}: {ref.get(k)!r} -> {mine.get(k)!r}" for k in sorted(set(ref) | set(mine))
                if ref.get(k) != mine.get(k)]
        out[v.name] = "; ".join(diff) if diff else ("" if v.name == d.reference else "no change")
    return out

