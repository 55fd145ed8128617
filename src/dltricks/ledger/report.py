"""The ablation report: a results sheet (CSV, Markdown, HTML) and three plots.

``write_report`` takes what :func:`dltricks.ledger.stats.compare` computed plus the raw
per-seed scores and learning curves, and writes into one folder:

- ``report.csv``  the sheet, one row per variant, full precision, for other tools;
- ``report.md``   the answer first (verdicts, the table, the forest plot), then the numbers behind
  each verdict, per-seed scores, failures, the study's fields, the full recipe last;
- ``report.html`` the same with verdicts coloured, the plots embedded and the recipe folded;
- ``forest.png``  paired difference to the baseline with its CI, per variant, and the ROPE band;
- ``seeds.png``   every seed's score per variant, lines joining a seed across variants;
- ``curves.png``  mean validation curve per variant over faint per-seed curves
  (only when curves were given);
- ``run-*.png``    figures one run of each variant drew (a MAML run's pre/post-update curves, a
  zero-shot run's accuracies), copied beside the report.

It is called again and again while a study runs, so it accepts partial data (missing
seeds, variants without stats yet, ragged curves) and replaces each file atomically:
a reader never sees a half-written report.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dltricks.ledger.atomic import atomic_write
from dltricks.ledger.report_docs import display_rows, evidence_rows, html_page, markdown, seed_table
from dltricks.ledger.report_plots import plot_curves, plot_forest, plot_seeds
from dltricks.ledger.variant_stats import VariantStats
from dltricks.ledger.writers import csv_table

SHEET_COLUMNS = [
    "variant", "n", "n_paired", "mean", "std", "delta", "ci_low", "ci_high",
    "p", "p_holm", "verdict", "seeds_needed", "test", "seeds",
    "rope", "prob_worse", "prob_rope", "prob_better", "p_beyond", "p_beyond_holm", "p_equiv", "p_equiv_holm",
    "alpha", "p_signflip", "fragile", "look", "reason", "changes",
]


def csv_value(x: Any) -> str:
    """Full precision for machines: repr of floats ('nan' for NaN), '' for None."""
    if x is None:
        return ""
    if isinstance(x, float):
        return repr(x)
    if isinstance(x, (list, tuple)):
        return " ".join(str(v) for v in x)
    return str(x)


def _snapshot_scores(scores: Mapping[str, Mapping[int, float]]) -> dict[str, dict[int, float]]:
    """A private copy with NaN for None, so a study adding runs meanwhile cannot break iteration."""
    out: dict[str, dict[int, float]] = {}
    for variant, by_seed in list(scores.items()):
        out[str(variant)] = {
            int(seed): (math.nan if value is None else float(value)) for seed, value in list(by_seed.items())
        }
    return out


def variant_order(stats: Sequence[VariantStats], *more: Mapping[str, Any] | None) -> list[str]:
    """Variants in the sheet's order, then any that have data but no stats yet (partial study)."""
    order = [row.variant for row in stats]
    for mapping in more:
        for name in mapping or {}:
            if name not in order:
                order.append(str(name))
    return order


def _extra_columns(extras: Mapping[str, Mapping[str, float]] | None) -> list[str]:
    """The union of extra measurements, in first-seen order."""
    columns: list[str] = []
    for values in (extras or {}).values():
        for key in values:
            if key not in columns and key not in SHEET_COLUMNS:
                columns.append(key)
    return columns


def _sheet_rows(stats: Sequence[VariantStats], extras: Mapping[str, Mapping[str, float]] | None,
                changes: Mapping[str, str] | None = None) -> list[dict]:
    columns = _extra_columns(extras)
    rows = []
    for s in stats:
        row = {
            "variant": s.variant, "n": s.n, "n_paired": len(s.seeds), "mean": s.mean, "std": s.std,
            "delta": s.delta, "ci_low": s.ci_low, "ci_high": s.ci_high, "p": s.p, "p_holm": s.p_holm,
            "verdict": s.verdict, "seeds_needed": s.seeds_needed, "test": s.test, "seeds": list(s.seeds),
            "rope": s.rope, "prob_worse": s.prob_worse, "prob_rope": s.prob_rope, "prob_better": s.prob_better,
            "p_beyond": s.p_beyond, "p_beyond_holm": s.p_beyond_holm, "p_equiv": s.p_equiv,
            "p_equiv_holm": s.p_equiv_holm, "alpha": s.alpha, "p_signflip": s.p_signflip,
            "fragile": s.fragile, "look": s.look, "reason": s.reason,
            "changes": (changes or {}).get(s.variant, ""),
        }
        mine = (extras or {}).get(s.variant, {})
        for key in columns:
            value = mine.get(key)
            row[key] = None if value is None else float(value)
        rows.append(row)
    return rows


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    atomic_write(path, csv_table(columns, [[csv_value(row.get(c)) for c in columns] for row in rows]))
    return path


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    stats: list[VariantStats],
    scores: dict[str, dict[int, float]],
    metric: str,
    higher_is_better: bool,
    header: dict[str, str],
    curves: dict[str, dict[int, dict[str, list[float]]]] | None = None,
    extras: dict[str, dict[str, float]] | None = None,
    failures: list[dict] | None = None,
    notes: Sequence[str] = (),
    changes: Mapping[str, str] | None = None,
    recipe: str = "",
    run_figures: Mapping[str, Path] | None = None,
) -> dict[str, Path]:
    """Write the report files into ``out_dir`` (created if needed) and return their paths.

    Keys of the result: "csv", "md", "html", "forest", "seeds", and "curves" when any
    curve was recorded. ``header`` values are shown at the top; the key "recipe" (TOML
    text) and multi-line values are shown as blocks. ``curves[variant][seed][name]``
    holds per-epoch values; the plot uses ``val_<metric>`` (or another validation curve)
    and ``train_loss`` when present. ``extras[variant]`` adds columns (wall time, params,
    FLOPs...). ``failures`` lists {"variant", "seed", "reason"}. ``notes`` are shown above the
    answer (a partial study, a trick the baseline turns off); ``changes[variant]`` says which recipe
    keys it changes against the baseline; ``recipe`` (TOML) goes last, folded (the header's
    "recipe" key is taken as well). ``run_figures`` maps a caption to a PNG a run wrote (a MAML
    run's adaptation.png): each is copied beside the report and shown with the plots.
    """
    # Plots use matplotlib.figure.Figure, never pyplot: PNGs are rendered by Agg whatever
    # backend the caller has (a notebook keeps its own), and no global figure state is touched.
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats = list(stats)
    scores = _snapshot_scores(scores)
    curves = {str(k): dict(v) for k, v in list((curves or {}).items())}
    failures = list(failures or [])

    order = variant_order(stats, scores, curves)
    plots: dict[str, Path] = {
        "forest": plot_forest(out / "forest.png", stats, metric, higher_is_better),
        "seeds": plot_seeds(out / "seeds.png", order, scores, metric),
    }
    curve_path = plot_curves(out / "curves.png", order, curves, metric) if curves else None
    if curve_path is not None:
        plots["curves"] = curve_path
    for i, (caption, src) in enumerate((run_figures or {}).items()):
        if Path(src).is_file():  # a run folder may have been cleaned away since
            plots[caption] = out / f"run-{i}-{Path(src).name}"
            shutil.copyfile(src, plots[caption])

    extra_columns = _extra_columns(extras)
    rows = _sheet_rows(stats, extras, changes)
    sheet = display_rows(rows, extra_columns)
    per_seed = seed_table(order, scores)
    paths = {"csv": _write_csv(out / "report.csv", rows, SHEET_COLUMNS + extra_columns)}
    args = (title, header, sheet, per_seed, stats, metric, higher_is_better, failures, plots)
    more = {"evidence": evidence_rows(rows, extra_columns), "notes": list(notes), "recipe": recipe}
    paths["md"] = out / "report.md"
    atomic_write(paths["md"], markdown(*args, **more))
    paths["html"] = out / "report.html"
    atomic_write(paths["html"], html_page(*args, **more))
    return {**paths, **plots}
