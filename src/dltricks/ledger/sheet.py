"""The results sheet: runs as CSV, Markdown or JSON, and (re-exported here) on the terminal and as diffs.

"Keep a sheet of the versions and their results": each row is a run with its code version
(commit, ``*`` when the tree was dirty), its seed and its headline metrics. Its ``duration`` is the time
the run was active, summed over its attempts: the idle time between an interrupt and the resume is not in it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from dltricks.direction import higher_is_better
from dltricks.ledger.diff import MISSING, MetricDelta, RunDiff, diff_runs, render_diff
from dltricks.ledger.record import RunRecord
from dltricks.ledger.terminal import (
    HEADLINE_METRICS,
    KNOWN_METRICS,
    SHEET_COLUMNS,
    StudyLine,
    VariantLine,
    fold_studies,
    headline_metrics,
    runs_table,
)
from dltricks.ledger.writers import cell, csv_table, flatten, fmt_duration, fmt_local, fmt_number, iso, markdown_table

__all__ = [
    "HEADLINE_METRICS",
    "KNOWN_METRICS",
    "MISSING",
    "SHEET_COLUMNS",
    "MetricDelta",
    "RunDiff",
    "StudyLine",
    "VariantLine",
    "diff_runs",
    "flatten",
    "fold_studies",
    "headline_metrics",
    "higher_is_better",
    "render_diff",
    "runs_table",
    "to_csv",
    "to_json",
    "to_markdown",
]


def _varying_keys(records: list[RunRecord]) -> list[str]:
    """Recipe keys whose value is not the same in every run: what the sheet should show."""
    flats = [flatten(r.recipe) for r in records]
    keys = sorted({k for f in flats for k in f})
    return [k for k in keys if len({json.dumps(f.get(k, MISSING), default=repr, sort_keys=True)
                                    for f in flats}) > 1]


def _duration_s(r: RunRecord) -> float | None:
    d = r.duration
    return None if d is None else round(d.total_seconds(), 3)


def to_csv(records: list[RunRecord]) -> str:
    """Every run with every recipe key (``recipe.train.lr``) and metric (``metrics.test_loss``)."""
    recipe_keys = sorted({k for r in records for k in flatten(r.recipe)})
    metric_keys = sorted({m for r in records for m in r.metrics})
    header = ["id", "name", "status", "study", "variant", "seed", "git_commit", "git_dirty", "git_diff_hash",
              "device", "host", "started", "finished", "duration_s", "failure",
              *(f"recipe.{k}" for k in recipe_keys), *(f"metrics.{m}" for m in metric_keys)]
    rows = []
    for r in records:
        flat = flatten(r.recipe)
        rows.append([r.id, r.name, r.status, r.study, r.variant, r.seed, r.git_commit, r.git_dirty, r.git_diff_hash,
                     r.device, r.host, iso(r.started), iso(r.finished), _duration_s(r), r.failure,
                     *(flat.get(k) for k in recipe_keys), *(r.metrics.get(m) for m in metric_keys)])
    return csv_table(header, rows)


def to_markdown(records: list[RunRecord]) -> str:
    """A Markdown table for notes and pull requests: the sheet's columns, the recipe keys that
    differ between the runs, and every metric."""
    metric_keys = headline_metrics(records)
    metric_keys += sorted({m for r in records for m in r.metrics} - set(metric_keys))
    varying = _varying_keys(records)
    failure = ["failure"] if any(r.failure for r in records) else []
    header = [*SHEET_COLUMNS, *varying, *metric_keys, *failure]
    rows = []
    for r in records:
        flat = flatten(r.recipe)
        rows.append([r.id, r.name, r.status, str(r.seed), r.git_short, fmt_local(r.started),
                     fmt_duration(r.duration), *(cell(flat.get(k)) for k in varying),
                     *(fmt_number(r.metrics.get(m)) for m in metric_keys), *([r.failure] if failure else [])])
    return markdown_table(header, rows, right=["seed", *metric_keys])


def _finite(v: Any) -> Any:
    """JSON has no NaN: non-finite floats become null so that every JSON reader accepts the file."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def to_json(records: list[RunRecord]) -> str:
    """A JSON list with one object per run: every field, ISO 8601 times, ``duration_s``."""
    out = []
    for r in records:
        d = r.duration
        out.append(_finite({
            "id": r.id, "name": r.name, "status": r.status, "study": r.study, "variant": r.variant,
            "seed": r.seed, "git_commit": r.git_commit, "git_dirty": r.git_dirty,
            "git_diff_hash": r.git_diff_hash, "versions": r.versions, "device": r.device, "host": r.host,
            "pid": r.pid, "started": iso(r.started), "finished": iso(r.finished),
            "duration_s": None if d is None else d.total_seconds(), "recipe": r.recipe,
            "metrics": r.metrics, "curves": r.curves, "checkpoint": r.checkpoint, "failure": r.failure,
        }))
    return json.dumps(out, indent=2, default=str) + "\n"
