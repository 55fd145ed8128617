"""The results sheet: runs as a table on the terminal, as CSV, Markdown or JSON, and run-to-run diffs.

"Keep a sheet of the versions and their results": each row is a run with its code version
(commit, ``*`` when the tree was dirty), its seed and its headline metrics.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from dltricks.direction import higher_is_better
from dltricks.ledger.record import RunRecord

__all__ = [
    "HEADLINE_METRICS",
    "MISSING",
    "MetricDelta",
    "StudyLine",
    "RunDiff",
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

# Shown in the terminal table and Markdown when any run has them, in this order.
HEADLINE_METRICS = ("test_accuracy", "test_dice", "test_iou", "test_mae", "test_loss")
MAX_HEADLINE = 4
STATUS_STYLE = {"running": "cyan", "completed": "green", "failed": "red", "interrupted": "yellow"}


class _Missing:
    """A key one side of a diff does not have (distinct from a value of None)."""

    def __repr__(self) -> str:
        return "(absent)"


MISSING: Any = _Missing()


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def headline_metrics(records: list[RunRecord]) -> list[str]:
    """The metric columns worth a glance: the known headline ones present, else other test_* ones."""
    present = {k for r in records for k in r.metrics}
    chosen = [m for m in HEADLINE_METRICS if m in present]
    chosen += sorted(m for m in present if m.startswith("test_") and m not in chosen)
    return chosen[:MAX_HEADLINE]


def _fmt_number(x: float | None) -> str:
    if x is None:
        return ""
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.4g}"


def _fmt_duration(d: timedelta | None) -> str:
    if d is None:
        return ""
    s = round(d.total_seconds())
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _fmt_local(t: datetime | None) -> str:
    return "" if t is None else t.astimezone().strftime("%Y-%m-%d %H:%M")


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _varying_keys(records: list[RunRecord]) -> list[str]:
    """Recipe keys whose value is not the same in every run: what the sheet should show."""
    flats = [flatten(r.recipe) for r in records]
    keys = sorted({k for f in flats for k in f})
    return [k for k in keys if len({json.dumps(f.get(k, MISSING), default=repr, sort_keys=True)
                                    for f in flats}) > 1]


SHEET_COLUMNS = ("id", "name", "status", "seed", "commit", "started", "duration")
# Which columns stay when the terminal is narrow, most wanted first (metrics come after "status").
_KEEP_FIRST = ("id", "name", "status")
_KEEP_LAST = ("seed", "started", "duration", "commit")
_MIN_FAILURE = 16  # the failure reason takes what width is left, at least this much


@dataclass(frozen=True)
class StudyLine:
    """One line of the sheet standing for every run of a study (an ablation or a sweep)."""

    study: str
    runs: list[RunRecord]

    @property
    def started(self) -> datetime | None:
        times = [r.started for r in self.runs if r.started]
        return min(times) if times else None


def fold_studies(records: list[RunRecord]) -> list[RunRecord | StudyLine]:
    """Runs outside any study as they are; a study's runs as one :class:`StudyLine`, where its newest run was."""
    out: list[RunRecord | StudyLine] = []
    lines: dict[str, StudyLine] = {}
    for r in records:
        if not r.study:
            out.append(r)
        elif r.study in lines:
            lines[r.study].runs.append(r)
        else:
            lines[r.study] = StudyLine(r.study, [r])
            out.append(lines[r.study])
    return out


def _seed_range(seeds: list[int]) -> str:
    seeds = sorted(set(seeds))
    if not seeds:
        return ""
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def _cells(item: RunRecord | StudyLine, metrics: list[str]) -> dict[str, Any]:
    """Column -> cell text (a rich Text for the status) of one line of the sheet."""
    if isinstance(item, StudyLine):
        runs = item.runs
        count: dict[str, int] = {}
        for r in runs:
            count[r.status] = count.get(r.status, 0) + 1
        status = ", ".join([f"{len(runs)} runs"] + [f"{n} {s}" for s, n in sorted(count.items()) if s != "completed"])
        variants = len({r.variant for r in runs})
        secs = sum(r.duration.total_seconds() for r in runs if r.duration is not None)
        failures = [r.failure for r in runs if r.failure]
        return {
            "id": "study", "name": f"{item.study} [{variants} variants]",
            "status": Text(status, style="red" if "failed" in count else ""),
            "seed": _seed_range([r.seed for r in runs]),
            "commit": ",".join(sorted({r.git_short for r in runs if r.git_short})),
            "started": _fmt_local(item.started), "duration": _fmt_duration(timedelta(seconds=secs)),
            **{m: "" for m in metrics},
            "failure": f"{len(failures)} failed, e.g. {failures[0]}" if failures else "",
        }
    r = item
    return {
        "id": r.id, "name": r.name + (f" [{r.variant}]" if r.variant else ""),
        "status": Text(r.status, style=STATUS_STYLE.get(r.status, "")), "seed": str(r.seed),
        "commit": r.git_short, "started": _fmt_local(r.started), "duration": _fmt_duration(r.duration),
        **{m: _fmt_number(r.metrics.get(m)) for m in metrics},
        "failure": r.failure or "",
    }


def runs_table(records: list[RunRecord], title: str | None = None, *, width: int | None = None,
               columns: list[str] | None = None, fold: bool = False) -> Table:
    """A rich table: id, name, status, seed, commit, started, duration, headline metrics, failure reason.

    ``fold``: a study's runs (an ablation's cells) become one line per study. ``columns`` picks the
    columns by name (any of :data:`SHEET_COLUMNS`, a metric, "failure"); otherwise, with ``width``
    (the terminal's), the columns that fit are kept, the most wanted first (id, name, status, the
    metrics, then seed, started, duration, commit), and the failure reason, when any line has one,
    takes the width that is left."""
    from dltricks.errors import DltricksError, did_you_mean

    metrics = headline_metrics(records)
    items: list[RunRecord | StudyLine] = fold_studies(records) if fold else list(records)
    rows = [_cells(item, metrics) for item in items]
    available = [*SHEET_COLUMNS, *metrics, "failure"]
    if columns:
        unknown = [c for c in columns if c not in available]
        if unknown:
            raise DltricksError(f"unknown column {unknown[0]!r}{did_you_mean(unknown[0], available)}; "
                                f"valid: {', '.join(available)}")
        chosen = list(columns)
    else:
        has_failure = any(row["failure"] for row in rows)
        chosen = [*SHEET_COLUMNS, *metrics] + (["failure"] if has_failure else [])
        if width is not None:
            chosen = _fit(rows, metrics, width, has_failure)
    tight = width is not None and sum(_need(rows, c) for c in chosen) > width
    sizes = {c: _need(rows, c, tight) for c in chosen}
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in chosen:
        if col == "failure":  # what is left of the line, the reason cut with an ellipsis
            left = None if width is None else max(_MIN_FAILURE, width - sum(sizes.values()) + sizes[col] - 3)
            limits: dict[str, Any] = {"max_width": left}
        else:  # the others keep the width that _fit counted for them
            limits = {"min_width": sizes[col] - 3, "max_width": sizes[col] - 3}
        table.add_column(col, justify="right" if col == "seed" or col in metrics else "left",
                         no_wrap=True, overflow="ellipsis", **limits)
    for row in rows:
        table.add_row(*(row[c] for c in chosen))
    return table


def _need(rows: list[dict[str, Any]], col: str, tight: bool = False) -> int:
    """Characters a column takes: its widest cell (in a tight line a name at most 24: the rest is cut),
    padding and a gap."""
    cells = [len(str(row[col])) for row in rows]
    return min(24 if col == "name" and tight else 10**6, max([len(col), *cells])) + 3


def _fit(rows: list[dict[str, Any]], metrics: list[str], width: int, has_failure: bool) -> list[str]:
    """The columns that fit in ``width`` characters, most wanted first, shown in the sheet's order."""

    def need(col: str) -> int:
        return _need(rows, col, tight=True)

    budget = width - (_MIN_FAILURE + 2 if has_failure else 0)
    kept: list[str] = []
    for col in [*_KEEP_FIRST, *metrics, *_KEEP_LAST]:
        if col in _KEEP_FIRST or sum(need(c) for c in kept) + need(col) <= budget:
            kept.append(col)
    order = [*SHEET_COLUMNS, *metrics]
    return sorted(kept, key=order.index) + (["failure"] if has_failure else [])


def _rows(records: list[RunRecord], recipe_keys: list[str], metric_keys: list[str],
          prefixed: bool) -> tuple[list[str], list[list[Any]]]:
    base = ["id", "name", "status", "study", "variant", "seed", "git_commit", "git_dirty", "git_diff_hash",
            "device", "host", "started", "finished", "duration_s", "failure"]
    header = base + [f"recipe.{k}" if prefixed else k for k in recipe_keys] + \
        [f"metrics.{m}" if prefixed else m for m in metric_keys]
    rows = []
    for r in records:
        flat = flatten(r.recipe)
        d = r.duration
        row = [r.id, r.name, r.status, r.study, r.variant, r.seed, r.git_commit, r.git_dirty, r.git_diff_hash,
               r.device, r.host, _iso(r.started), _iso(r.finished),
               None if d is None else round(d.total_seconds(), 3), r.failure]
        row += [flat.get(k) for k in recipe_keys]
        row += [r.metrics.get(m) for m in metric_keys]
        rows.append(row)
    return header, rows


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def to_csv(records: list[RunRecord]) -> str:
    """Every run with every recipe key (``recipe.train.lr``) and metric (``metrics.test_loss``)."""
    recipe_keys = sorted({k for r in records for k in flatten(r.recipe)})
    metric_keys = sorted({m for r in records for m in r.metrics})
    header, rows = _rows(records, recipe_keys, metric_keys, prefixed=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_cell(v) for v in row] for row in rows])
    return buf.getvalue()


def to_markdown(records: list[RunRecord]) -> str:
    """A Markdown table for notes and pull requests: the sheet's columns, the recipe keys that
    differ between the runs, and every metric."""
    metric_keys = headline_metrics(records)
    metric_keys += sorted({m for r in records for m in r.metrics} - set(metric_keys))
    varying = _varying_keys(records)
    failure = ["failure"] if any(r.failure for r in records) else []
    header = ["id", "name", "status", "seed", "commit", "started", "duration", *varying, *metric_keys, *failure]
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if h == "seed" or h in metric_keys else "---" for h in header) + " |"]
    for r in records:
        flat = flatten(r.recipe)
        cells = [r.id, r.name, r.status, str(r.seed), r.git_short, _fmt_local(r.started),
                 _fmt_duration(r.duration), *(_cell(flat.get(k)) for k in varying),
                 *(_fmt_number(r.metrics.get(m)) for m in metric_keys)]
        cells += [" ".join((r.failure or "").splitlines())] if failure else []
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


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
            "pid": r.pid, "started": _iso(r.started), "finished": _iso(r.finished),
            "duration_s": None if d is None else d.total_seconds(), "recipe": r.recipe,
            "metrics": r.metrics, "curves": r.curves, "checkpoint": r.checkpoint, "failure": r.failure,
        }))
    return json.dumps(out, indent=2, default=str) + "\n"


# --- diffs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricDelta:
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        """b - a, or None when either side lacks the metric."""
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass
class RunDiff:
    """What differs between run ``a`` and run ``b``.

    ``recipe``: dotted key -> (value in a, value in b) for keys that differ (MISSING where a
    run lacks the key). ``metrics``: every metric of either run with b - a. ``other``: seed,
    code version and device when they differ.
    """

    a: RunRecord
    b: RunRecord
    recipe: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    metrics: dict[str, MetricDelta] = field(default_factory=dict)
    other: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def diff_runs(a: RunRecord, b: RunRecord) -> RunDiff:
    """Recipe keys that differ (flattened, dotted) and metric deltas b - a."""
    fa, fb = flatten(a.recipe), flatten(b.recipe)
    recipe = {}
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, MISSING), fb.get(key, MISSING)
        if va is MISSING or vb is MISSING or va != vb or type(va) is not type(vb):
            recipe[key] = (va, vb)
    metrics = {m: MetricDelta(a.metrics.get(m), b.metrics.get(m))
               for m in sorted(set(a.metrics) | set(b.metrics))}
    other = {}
    for name, va, vb in (("seed", a.seed, b.seed), ("git", a.git_short, b.git_short),
                         ("git_diff_hash", a.git_diff_hash, b.git_diff_hash), ("device", a.device, b.device),
                         ("versions", a.versions, b.versions)):
        if va != vb:
            other[name] = (va, vb)
    return RunDiff(a=a, b=b, recipe=recipe, metrics=metrics, other=other)


def render_diff(diff: RunDiff) -> RenderableType:
    """Two tables: recipe and version changes, then metrics with b - a (green where b is better)."""
    a, b = diff.a, diff.b
    parts: list[RenderableType] = [Text.assemble(("a ", "dim"), (f"{a.id} {a.name}", "bold"),
                                                 ("  vs  b ", "dim"), (f"{b.id} {b.name}", "bold"))]
    changes = Table(title="recipe and version", title_justify="left", header_style="bold")
    for col in ("key", "a", "b"):
        changes.add_column(col)
    for key, (va, vb) in {**diff.recipe, **diff.other}.items():
        changes.add_row(key, _cell(va) if va is not MISSING else "(absent)",
                        _cell(vb) if vb is not MISSING else "(absent)")
    if not diff.recipe and not diff.other:
        changes.add_row("(same recipe, seed and code)", "", "")
    parts.append(changes)
    if diff.metrics:
        table = Table(title="metrics", title_justify="left", header_style="bold")
        table.add_column("metric")
        for col in ("a", "b", "b - a"):
            table.add_column(col, justify="right")
        for m, d in diff.metrics.items():
            delta = d.delta
            style = ""
            if delta and not math.isnan(delta):
                style = "green" if (delta > 0) == higher_is_better(m) else "red"
            table.add_row(m, _fmt_number(d.a), _fmt_number(d.b),
                          Text("" if delta is None else f"{delta:+.4g}", style=style))
        parts.append(table)
    return Group(*parts)
