"""``dltricks evidence``: every claim of the catalogue re-tested, one study each, and one table of verdicts.

    rows = evidence(only=["group_norm_small_batch"], seeds="auto")
    rows[0].verdict, rows[0].agreement      # "helps", "agrees"

Each claim is an ordinary study in the ledger (an ablation, or a pair of searches), so everything a study
does, this does: ``--seeds auto``, resume after Ctrl-C or kill -9 (the same command again finishes what is
missing), local ``--workers``, other machines through a PostgreSQL ledger (``dltricks worker`` joins the
study under way). The table is rewritten after each claim, so an interrupted run leaves the rows it has.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dltricks.direction import higher_is_better
from dltricks.errors import DltricksError, did_you_mean, one_of
from dltricks.ledger import Ledger
from dltricks.ledger.evidence import EvidenceRow, cost_verdict, read_rows, write_docs, write_table
from dltricks.ledger.variant_stats import VariantStats
from dltricks.recipe import Recipe
from dltricks.search.evidence import architecture, search_compress, setups, training
from dltricks.search.evidence.claim import Claim, Setting

CLAIMS: list[Claim] = [*architecture.CLAIMS, *training.CLAIMS, *setups.CLAIMS, *search_compress.CLAIMS]
COST_METRICS = {"params", "flops", "receptive_field", "size_bytes"}
QUICK_SEEDS = 2
WAIT_S = 3.0  # between looks at a study whose last cells another machine is training


def claims(only: list[str] | None = None) -> list[Claim]:
    """The claims to run: all, or those named (each name checked)."""
    by_name = {c.name: c for c in CLAIMS}
    for name in only or []:
        if name not in by_name:
            raise DltricksError(f"unknown claim {name!r}{did_you_mean(name, by_name)}; valid: {one_of(by_name)}")
    return [c for c in CLAIMS if not only or c.name in only]


@dataclass
class Options:
    seeds: int | str = "auto"  # a number, or "auto" (up to each claim's max_seeds)
    quick: bool = False  # tiny data and QUICK_SEEDS seeds: every row runs, verdicts not meant
    tuned: int = 0  # --tuned N: N lr-tuning trials per arm on validation before the seeds
    workers: int = 2
    progress: bool = True


def task_recipe(claim: Claim, setting: Setting | None, quick: bool) -> Recipe:
    """The claim's task: its bundled recipe at evidence size (or quick size), at one setting of a curve."""
    patch = {**claim.overrides, **(claim.quick if quick else {}), **(setting.overrides if setting else {})}
    try:
        return Recipe.load(claim.recipe).patch(patch)
    except DltricksError as e:  # a claim that no longer fits the schema is a bug here, named as such
        raise DltricksError(f"claim {claim.name}: {e}") from None


def evidence(only: list[str] | None = None, *, options: Options | None = None, ledger: Ledger | str | None = None,
             out: str | Path | None = None, docs: str | Path | None = None) -> list[EvidenceRow]:
    """Run (or resume) the claims and write the table to ``out`` (default: the ledger's ``evidence`` folder,
    ``evidence-quick`` for a quick run), and with ``docs`` the files the documentation includes. Returns
    the rows."""
    o = options or Options()
    chosen = claims(only)
    for c in chosen:  # every task is checked before the first study starts
        for s in c.settings or (None,):
            task_recipe(c, s, o.quick)
    ledger = ledger if isinstance(ledger, Ledger) else Ledger(url=ledger)
    folder = table_folder(ledger, out, o.quick)
    earlier = {(r.claim, r.setting, r.variant, r.metric): r for r in _earlier(folder)}
    git = _code_version()  # once: the code does not change while it runs
    # rows of the claims not run now stay, as an earlier run left them (a claim no longer defined goes)
    rows: list[EvidenceRow] = [r for r in earlier.values()
                               if r.claim not in {c.name for c in chosen} and r.claim in {c.name for c in CLAIMS}]
    for i, c in enumerate(chosen, 1):
        for s in c.settings or (None,):
            start = time.monotonic()
            new = run_claim(c, s, o, ledger, folder)
            # a study finished by an earlier session took the time it took then, not this resume's
            took = [b.wall_s for b in earlier.values() if (b.claim, b.setting) == (c.name, s.label if s else "")
                    and b.quick == o.quick and any(b.study == r.study for r in new) and not math.isnan(b.wall_s)]
            took_now = time.monotonic() - start  # one figure for every row of the study
            for r in new:
                r.wall_s = max(took) if took else took_now
            rows = [r for r in rows if (r.claim, r.setting) != (c.name, s.label if s else "")] + new
            if o.progress:
                _say(i, len(chosen), c, s, new)
        write_table(folder, _ordered(rows), header=_header(o, ledger, rows, git))
    rows = _ordered(rows)
    if docs:
        write_docs(Path(docs), rows, header=_header(o, ledger, rows, git))
    return rows


def table_folder(ledger: Ledger, out: str | Path | None, quick: bool) -> Path:
    """Where the table goes: ``out``, else the ledger's home (``evidence``, or ``evidence-quick``)."""
    return Path(out) if out else ledger.root / ("evidence-quick" if quick else "evidence")


def _earlier(folder: Path) -> list[EvidenceRow]:
    path = folder / "evidence.json"
    try:
        return read_rows(path) if path.is_file() else []
    except (ValueError, TypeError):  # a damaged table is rewritten from the studies, which hold the results
        return []


def _ordered(rows: list[EvidenceRow]) -> list[EvidenceRow]:
    order = {c.name: i for i, c in enumerate(CLAIMS)}
    return sorted(rows, key=lambda r: order.get(r.claim, len(order)))


def _code_version() -> str:
    """The commit of the code that runs (``abc1234*`` when dirty), wherever the command was started."""
    from dltricks.ledger.gitinfo import git_state

    git = git_state(Path(__file__).parent)
    return git.short if git.commit else "not in a git repository"


def _header(o: Options, ledger: Ledger, rows: list[EvidenceRow], git: str) -> dict[str, str]:
    import os

    studies = {(r.claim, r.setting): r.wall_s for r in rows if not math.isnan(r.wall_s)}
    return {"seeds": f"{QUICK_SEEDS} (quick: verdicts not meant)" if o.quick else str(o.seeds),
            "protocol": f"--tuned {o.tuned}" if o.tuned else "the recipe's settings for every arm",
            "machine": f"{os.cpu_count()} CPU cores, {o.workers} workers",
            "wall time": f"{sum(studies.values()) / 60:.1f} minutes for {len(studies)} studies",
            "ledger": ledger.where, "git commit": git,
            "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def _say(i: int, n: int, c: Claim, s: Setting | None, rows: list[EvidenceRow]) -> None:
    from rich.console import Console

    where = f"{c.name}{' @ ' + s.label if s else ''}"
    verdicts = ", ".join(f"{r.variant}: {r.verdict}" for r in rows if r.metric == rows[0].metric)
    Console(stderr=True, highlight=False).print(f"[{i}/{n}] {where}: {verdicts}")


# ---- one claim at one setting ------------------------------------------------------------------------------

def run_claim(c: Claim, s: Setting | None, o: Options, ledger: Ledger, folder: Path) -> list[EvidenceRow]:
    recipe = task_recipe(c, s, o.quick)
    if c.kind == "cost":
        return cost_rows(c, s, recipe)
    if c.kind == "search":
        return search_rows(c, recipe, o, ledger, folder)
    return effect_rows(c, s, recipe, o, ledger, folder)


def _row(c: Claim, metric: str, variant: str, anchor=None, **kw: Any) -> EvidenceRow:
    anchor = anchor or c.anchor
    expects = c.expects.get(variant.lstrip("+"), anchor.expects) if anchor is c.anchor else anchor.expects
    return EvidenceRow(claim=c.name, family=c.family, tip=c.tip_text(), source=c.source, task=c.task,
                       metric=metric, baseline=c.baseline or "without", variant=variant, anchor=anchor.text(),
                       expects=expects, higher_is_better=higher_is_better(metric), **kw)


def cost_rows(c: Claim, s: Setting | None, recipe: Recipe) -> list[EvidenceRow]:
    from dltricks.search.evidence.costs import model_costs
    from dltricks.search.plan import plan_variants

    variants, _ = plan_variants(recipe, c.tricks, "add")
    measured = {v.name: model_costs(recipe.patch(v.patch)) for v in variants}
    rows = []
    for metric, anchor in ((c.metric, c.anchor), *c.also):
        base = measured["baseline"][metric]
        for v in variants[1:]:
            value = measured[v.name][metric]
            rows.append(_row(c, metric, v.name, anchor, kind="cost", baseline_mean=base, variant_mean=value,
                             delta=value - base, verdict=cost_verdict(base, value), protocol="exact",
                             setting=s.label if s else ""))
    return rows


def effect_rows(c: Claim, s: Setting | None, recipe: Recipe, o: Options, ledger: Ledger,
                folder: Path) -> list[EvidenceRow]:
    from dltricks.search import study as st
    from dltricks.search.ablate import ablate
    from dltricks.search.evidence.compressed import MEASURED, measured_scores
    from dltricks.search.evidence.tuned import tuned_arms

    slug = c.name + (f"-{s.label.replace(' ', '')}" if s else "")
    arms, protocol = c.tricks, "seeds"
    if o.tuned and c.tunable:
        arms, protocol = tuned_arms(recipe, arms, o.tuned, c.metric, ledger=ledger, workers=o.workers,
                                    out=folder / "studies" / slug, progress=o.progress)
    elif o.tuned:
        protocol = "seeds (not tuned: the arms do not train by one learning rate)"
    seeds = QUICK_SEEDS if o.quick else o.seeds

    def study(progress: bool):
        return ablate(recipe, arms, mode="add", seeds=seeds, max_seeds=max(3, c.max_seeds) if seeds == "auto" else None,
                      metric=c.metric, workers=o.workers, ledger=ledger, out=folder / "studies" / slug,
                      progress=progress)

    result = study(o.progress)
    while result.partial:  # cells still held by another machine's workers: join again (a dead one's are freed)
        time.sleep(WAIT_S)
        result = study(False)
    optuna_study, d = st.load(ledger, result.study)
    found = st.results(optuna_study, d)
    compute = sum(m.get("wall_time_s", 0.0) for by_seed in found.metrics.values() for m in by_seed.values())
    report = str(result.report.get("html", "")).removeprefix(str(folder) + "/")
    common = dict(setting=s.label if s else "", protocol=protocol, study=result.study, report=report,
                  compute_s=compute, quick=o.quick)
    rows = [_effect_row(c, s, c.metric, c.anchor, st_row, result.scores[d.reference], common)
            for st_row in result.stats if st_row.verdict != "baseline"]
    for metric, anchor in c.also:
        scores = {v: {seed: m[metric] for seed, m in by_seed.items() if metric in m}
                  for v, by_seed in found.metrics.items()}
        if metric in MEASURED:  # the float baseline has no compressed file: both are measured here
            scores = measured_scores(ledger, found.run_ids, d.reference, metric, scores)
        rows += also_rows(c, s, metric, anchor, scores, d.reference, common)
    return rows


def _effect_row(c: Claim, s: Setting | None, metric: str, anchor, v: VariantStats, base: dict[int, float],
                common: dict[str, Any]) -> EvidenceRow:
    """``base``: the baseline's scores by seed; the row's baseline mean is over the seeds paired with ``v``
    (in a sequential study the baseline may have run more seeds than an arm decided at)."""
    paired = [base[seed] for seed in v.seeds if seed in base]
    base_mean = sum(paired) / len(paired) if paired else math.nan
    row = _row(c, metric, v.variant, anchor, kind="effect", baseline_mean=base_mean, variant_mean=v.mean,
               delta=v.delta, ci_low=v.ci_low, ci_high=v.ci_high, rope=v.rope, verdict=v.verdict, seeds=v.n_paired,
               reason=v.reason if v.verdict == "inconclusive" else "", **common)
    if s and s.expects and anchor is c.anchor:
        row.expects = s.expects
    return row


def also_rows(c: Claim, s: Setting | None, metric: str, anchor, scores: dict[str, dict[int, float]],
              reference: str, common: dict[str, Any]) -> list[EvidenceRow]:
    """Rows for another metric of the same runs: a cost (the same at every seed) or an effect, judged with
    the same paired rule at the seeds the study ran."""
    from dltricks.ledger.paired import describe
    from dltricks.ledger.stats import compare

    if metric in COST_METRICS:
        means = {v: describe(list(by_seed.values()))[0] for v, by_seed in scores.items() if by_seed}
        base = means.get(reference, math.nan)
        return [_row(c, metric, v, anchor, kind="cost", baseline_mean=base, variant_mean=m, delta=m - base,
                     verdict=cost_verdict(base, m), **{**common, "protocol": "exact"})
                for v, m in means.items() if v != reference]
    stats = compare(scores, reference, higher_is_better=higher_is_better(metric), metric=metric)
    return [_effect_row(c, s, metric, anchor, x, scores[reference], common) for x in stats if x.verdict != "baseline"]


def search_rows(c: Claim, recipe: Recipe, o: Options, ledger: Ledger, folder: Path) -> list[EvidenceRow]:
    """Two strategies, each run once per search seed with the same budget; each seed's pair is compared by
    the best validation score found."""
    from dltricks.ledger.stats import compare
    from dltricks.search.nas import nas
    from dltricks.search.tune import tune

    spec = c.search
    trials = spec["quick_trials"] if o.quick else spec["trials"]
    n = 1 if o.quick else (o.seeds if isinstance(o.seeds, int) else min(c.max_seeds, 5))
    run = tune if spec["kind"] == "tune" else nas
    key = "sampler" if spec["kind"] == "tune" else "strategy"
    scores: dict[str, dict[int, float]] = {spec["baseline"]: {}, spec["variant"]: {}}
    studies, compute = [], 0.0
    for seed in range(n):
        for strategy in scores:
            result = run(recipe, **{key: strategy}, trials=trials, seeds_per_trial=1, metric="val_accuracy",
                         search_seed=seed, workers=o.workers, rerun_seeds=0, ledger=ledger,
                         out=folder / "studies" / f"{c.name}-{strategy}-{seed}", progress=o.progress)
            studies.append(result.study)
            compute += sum(t.cost.get("wall_time_s", 0.0) for t in result.trials)
            if result.best and result.best.values:
                scores[strategy][seed] = result.best.values[0]
    stats = compare(scores, spec["baseline"], higher_is_better=True, metric="val_accuracy")
    common = dict(protocol=f"{trials} trials each, {n} search seeds", study=studies[-1] if studies else "",
                  compute_s=compute, quick=o.quick)
    return [_effect_row(c, None, "best val_accuracy", c.anchor, x, scores[spec["baseline"]], common)
            for x in stats if x.verdict != "baseline"]
