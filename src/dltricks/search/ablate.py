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
from pathlib import Path
from typing import Any

from dltricks.direction import higher_is_better
from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.ledger.study_report import AblationResult
from dltricks.recipe import Recipe
from dltricks.search import claims, local
from dltricks.search import study as st
from dltricks.search.definition import base_recipe
from dltricks.search.plan import Mode, plan_variants
from dltricks.search.study_job import StudyJob
from dltricks.search.user_model import check_model_keywords
from dltricks.search.vary import VARY
from dltricks.tricks import Trick, parse_trick

# ---- defining a study ------------------------------------------------------------------------------

def define(recipe: Recipe, tricks: list[Trick], *, mode: Mode, seeds: int | str, metric: str = "",
           study: str = "", rope: float | None = None, max_seeds: int | None = None,
           vary: list[str] | None = None) -> st.Definition:
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
    base = base_recipe(recipe)  # the sweeps' own settings are not part of what each run trains
    vary = list(vary or recipe.ablate.vary)
    if "seed" not in vary or len(set(vary)) != len(vary) or set(vary) - set(VARY):
        raise DltricksError(f'vary = {vary}: must list "seed" once, and "split" at most once: ["seed"] or '
                            '["seed", "split"]')
    if not study:
        parts: list[Any] = [base, [v.patch for v in variants], seed_list, metric, mode]
        if schedule:  # a sequential study's ROPE decides which cells run
            parts += [schedule, rope]
        if vary != ["seed"]:  # names of studies defined before ablate.vary stay the same
            parts.append(vary)
        blob = json.dumps(parts, sort_keys=True)
        study = f"{recipe.name}-{mode}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"
    return st.Definition(name=study, recipe=base, variants=variants, reference=reference, seeds=seed_list,
                         metric=metric, higher_is_better=higher_is_better(metric), mode=mode,
                         tricks=[{"name": t.name, "family": t.family, "on": t.on, "off": t.off} for t in tricks],
                         schedule=schedule, rope=rope, vary=vary)


def resolve_tricks(recipe: Recipe, names: list[str | Trick] | None) -> list[Trick]:
    """Catalogue names, custom ``NAME:key=value`` patches, or :class:`Trick` objects made in code."""
    return [n if isinstance(n, Trick) else parse_trick(n) for n in (names if names else recipe.ablate.tricks)]


# ---- running a study ---------------------------------------------------------------------------------

def ablate(recipe: Recipe | str, tricks: list[str | Trick] | None = None, *, mode: Mode | None = None,
           seeds: int | str | None = None, workers: int | None = None, metric: str = "", study: str = "",
           ledger: Ledger | str | None = None, out: str | Path | None = None,
           progress: bool = True, rope: float | None = None, max_seeds: int | None = None,
           vary: list[str] | None = None) -> AblationResult:
    """Run (or resume) an ablation study and write its report. See the module docstring.

    ``seeds``: a number, or "auto" (3 seeds, then more in rounds for the inconclusive variants only,
    up to ``max_seeds``). ``rope``: the half-width of the region of practical equivalence in metric
    units (default ``ablate.rope``, else 0.005 for metrics in [0, 1] and 1% of the baseline otherwise).
    ``vary``: what each paired seed draws afresh (default ``ablate.vary``; see :mod:`dltricks.search.vary`).
    ``ledger`` is a :class:`Ledger` or its URL (default: ``$DLTRICKS_LEDGER`` or ./dltricks-runs); it is
    opened only once the study is known to be valid, so a mistyped trick leaves no files behind."""
    if not isinstance(recipe, (Recipe, str)):
        from dltricks.nn.models.imported import not_a_recipe

        raise not_a_recipe(recipe, "ablate")
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
        definition = checked_definition(recipe, tricks, mode=mode, seeds=seeds, metric=metric, study=study,
                                        rope=rope, max_seeds=max_seeds, vary=vary)
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


def checked_definition(recipe: Recipe, tricks: list[str | Trick] | None = None, *, mode: Mode | None = None,
                       seeds: int | str | None = None, metric: str = "", study: str = "", rope: float | None = None,
                       max_seeds: int | None = None, vary: list[str] | None = None) -> st.Definition:
    """The study ``ablate`` would run (arguments left out come from the recipe's ``[ablate]``), refused
    before any training when a trick sets a keyword the user's model lacks, a variant's recipe is invalid
    or the metric is not one a run records."""
    a = recipe.ablate
    definition = define(recipe, resolve_tricks(recipe, tricks), mode=mode or a.mode, seeds=seeds or a.seeds,
                        metric=metric or a.metric, study=study or a.study,
                        rope=(None if a.rope == "auto" else float(a.rope)) if rope is None else rope,
                        max_seeds=max_seeds or a.max_seeds, vary=vary)
    check_model_keywords(recipe, definition.tricks)  # before the variants are built
    _check_variants(recipe, definition)
    return definition


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


def report(study_name: str, *, ledger: Ledger | None = None, out: str | Path | None = None,
           rope: float | None = None) -> AblationResult:
    """Statistics and the report (CSV, Markdown, HTML with plots) from what the storage holds now, assembled
    by :func:`dltricks.ledger.study_report.write_study_report`.

    ``rope`` judges the same runs with another ROPE half-width (default: the study's)."""
    from dltricks.ledger.study_report import StudyFacts, write_study_report

    ledger = ledger or Ledger()
    optuna_study, d = st.load(ledger, study_name)
    r = st.results(optuna_study, d)
    if rope is not None:
        d.rope = rope
    remaining = len(st.todo(optuna_study, d, r)) if d.schedule else len(d.cells()) - len(r.done)
    facts = StudyFacts(d.to_json(), r.scores, r.metrics, r.run_ids, r.failures, done=len(r.done),
                       remaining=remaining, unchanged=st.unchanged_variants(d))
    count = None if d.command else (lambda names: _flops_per_variant(d, names))  # a command has no model here
    return write_study_report(ledger, facts, out=out, count_flops=count)
