"""The sheet on a terminal: a line per run, or per study with a line per variant under it.

At any width the name (with its variant), the status, the main metric and a study's variants stay whole:
a name too long for what is left wraps at its dashes, the gaps between columns narrow, and the columns
that still do not fit (seed, started, duration, commit, further metrics) are named under the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from dltricks.errors import DltricksError, did_you_mean
from dltricks.ledger.record import RunRecord
from dltricks.ledger.writers import fmt_duration, fmt_local, fmt_number

__all__ = ["HEADLINE_METRICS", "KNOWN_METRICS", "SHEET_COLUMNS", "StudyLine", "VariantLine", "fold_studies",
           "headline_metrics", "runs_table"]

# Shown in the terminal table and Markdown when any run has them, in this order; the first is the main one.
HEADLINE_METRICS = ("test_accuracy", "test_dice", "test_iou", "test_mae", "test_loss")
MAX_HEADLINE = 4
MAX_VARIANTS = 12  # lines under a folded study
STATUS_STYLE = {"running": "cyan", "completed": "green", "failed": "red", "interrupted": "yellow"}
SHEET_COLUMNS = ("id", "name", "status", "seed", "commit", "started", "duration")
# By name only (--columns): the CSV's columns of the same name.
EXTRA_COLUMNS = ("study", "variant", "device", "host")
# Metrics dltricks' own runs record: asked for by name, such a column shows (empty) even when no selected
# run has it yet, as when the ledger holds one interrupted run; any other name must be a recorded metric.
_SCORES = ("accuracy", "loss", "dice", "iou", "hd95", "mae", "mse", "rmse", "r2", "ece", "nll", "brier",
           "ood_auroc", "target_accuracy", "zsl_accuracy", "gzsl_h")
KNOWN_METRICS = (*(f"{split}_{m}" for split in ("test", "val") for m in _SCORES),
                 "train_loss", "train_accuracy", "epochs", "wall_time_s", "params", "flops", "threads")
# When the terminal is narrow: what stays whatever the width, then what is added while it fits, in this order.
_ESSENTIAL = ("id", "name", "status")
_OPTIONAL = ("seed", "duration", "started", "commit")
_MIN_FAILURE = 16  # the failure reason takes what width is left, at least this much
_MIN_FAILURE_TIGHT = 8  # ... unless a variant's name needs the room
_MIN_NAME = 12
_INDENT = "  "  # a study's variants, under it
# Cell padding that makes the gap between columns 3, 2 or 1 characters (the box adds one between columns).
_PADDING = {3: (0, 1), 2: (0, 1, 0, 0), 1: (0, 0)}
_EDGES = 2  # the box's blank edge left and right


@dataclass(frozen=True)
class StudyLine:
    """One line of the sheet standing for every run of a study (an ablation or a sweep)."""

    study: str
    runs: list[RunRecord]

    @property
    def started(self) -> datetime | None:
        times = [r.started for r in self.runs if r.started]
        return min(times) if times else None


@dataclass(frozen=True)
class VariantLine:
    """The runs of one variant of a folded study: a line under its :class:`StudyLine`."""

    variant: str
    runs: list[RunRecord]


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


@dataclass(frozen=True)
class MoreLine:
    """Stands for the variants of a folded study beyond the first few (a tuning study's many trials)."""

    count: int


def _variants(study: StudyLine) -> list[VariantLine | MoreLine]:
    """The study's variants in the order they first ran (the baseline first, as a study starts it); past
    :data:`MAX_VARIANTS`, one line says how many more (``--study`` lists them all)."""
    groups: dict[str, list[RunRecord]] = {}
    for r in sorted(study.runs, key=lambda r: r.started):
        groups.setdefault(r.variant or "", []).append(r)
    lines: list[VariantLine | MoreLine] = [VariantLine(v, runs) for v, runs in groups.items()]
    if len(lines) > MAX_VARIANTS:
        lines = [*lines[:MAX_VARIANTS - 1], MoreLine(len(lines) - MAX_VARIANTS + 1)]
    return lines


def headline_metrics(records: list[RunRecord]) -> list[str]:
    """The metric columns worth a glance: the known headline ones present, else other test_* ones."""
    present = {k for r in records for k in r.metrics}
    chosen = [m for m in HEADLINE_METRICS if m in present]
    chosen += sorted(m for m in present if m.startswith("test_") and m not in chosen)
    return chosen[:MAX_HEADLINE]


def _seed_range(seeds: list[int]) -> str:
    seeds = sorted(set(seeds))
    if not seeds:
        return ""
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def _joined(values: list[str | None]) -> str:
    return ",".join(sorted({v for v in values if v}))


def _group_cells(runs: list[RunRecord], metrics: list[str]) -> dict[str, Any]:
    """The cells several runs share: counts by status, seeds, summed duration, mean metrics, a failure."""
    count: dict[str, int] = {}
    for r in runs:
        count[r.status] = count.get(r.status, 0) + 1
    status = ", ".join([f"{len(runs)} runs"] + [f"{n} {s}" for s, n in sorted(count.items()) if s != "completed"])
    secs = sum(r.duration.total_seconds() for r in runs if r.duration is not None)
    failures = [r.failure for r in runs if r.failure]
    means = {}
    for m in metrics:
        values = [r.metrics[m] for r in runs if m in r.metrics]
        means[m] = Text(fmt_number(sum(values) / len(values)) if values else "")
    return {
        "status": Text(status, style="red" if "failed" in count else ""),
        "seed": Text(_seed_range([r.seed for r in runs])), "commit": Text(_joined([r.git_short for r in runs])),
        "duration": Text(fmt_duration(timedelta(seconds=secs))),
        "device": Text(_joined([r.device for r in runs])), "host": Text(_joined([r.host for r in runs])),
        "failure": Text(f"{len(failures)} failed, e.g. {failures[0]}" if failures else ""), **means,
    }


def _cells(item: RunRecord | StudyLine | VariantLine | MoreLine, metrics: list[str]) -> dict[str, Text]:
    """Column -> cell of one line of the sheet (plain text: a ``[baseline]`` is never read as markup)."""
    if isinstance(item, MoreLine):
        blank = dict.fromkeys([*SHEET_COLUMNS, *EXTRA_COLUMNS, *metrics, "failure"], "")
        return {**{k: Text(v) for k, v in blank.items()}, "name": Text(f"{_INDENT}... and {item.count} more")}
    if isinstance(item, StudyLine):
        variants = len({r.variant for r in item.runs})
        return {**_group_cells(item.runs, metrics), "id": Text("study"),
                "name": Text(f"{item.study} [{variants} variants]"), "started": Text(fmt_local(item.started)),
                "study": Text(item.study), "variant": Text(f"{variants} variants"),
                **{m: Text("") for m in metrics}}
    if isinstance(item, VariantLine):
        return {**_group_cells(item.runs, metrics), "id": Text(""), "name": Text(_INDENT + (item.variant or "-")),
                "started": Text(fmt_local(min(r.started for r in item.runs))), "commit": Text(""),
                "study": Text(item.runs[0].study or ""), "variant": Text(item.variant)}
    r = item
    return {
        "id": Text(r.id), "name": Text(r.name + (f" [{r.variant}]" if r.variant else "")),
        "status": Text(r.status, style=STATUS_STYLE.get(r.status, "")), "seed": Text(str(r.seed)),
        "commit": Text(r.git_short), "started": Text(fmt_local(r.started)), "duration": Text(fmt_duration(r.duration)),
        "study": Text(r.study or ""), "variant": Text(r.variant or ""), "device": Text(r.device),
        "host": Text(r.host), **{m: Text(fmt_number(r.metrics.get(m))) for m in metrics},
        "failure": Text(" ".join((r.failure or "").splitlines())),
    }


def _check_columns(columns: list[str], records: list[RunRecord]) -> list[str]:
    """The metric columns among ``columns``; one clear error for a name that is none of the valid ones."""
    recorded = sorted({m for r in records for m in r.metrics})
    fixed = [*SHEET_COLUMNS, *EXTRA_COLUMNS, "failure"]
    for c in columns:
        if c not in fixed and c not in recorded and c not in KNOWN_METRICS:
            hint = did_you_mean(c, [*fixed, *recorded, *KNOWN_METRICS])
            some = ", ".join(recorded[:8] or KNOWN_METRICS[:3]) + (", ..." if len(recorded) > 8 else "")
            raise DltricksError(f"unknown column {c!r}{hint}; valid: {', '.join(fixed)}, or a metric ({some})")
    return [c for c in columns if c not in fixed]


def runs_table(records: list[RunRecord], title: str | None = None, *, width: int | None = None,
               columns: list[str] | None = None, fold: bool = False) -> Table:
    """A rich table: id, name, status, seed, commit, started, duration, headline metrics, failure reason.

    ``fold``: a study's runs (an ablation's cells) become one line for the study and one per variant
    (the variant's mean metrics over its runs). ``columns`` picks the columns by name (any of
    :data:`SHEET_COLUMNS`, study, variant, device, host, a metric, "failure"). ``width`` (the terminal's):
    the name, status, main metric and failure reason are always kept, other columns while they fit,
    and the names of those left out are printed under the table."""
    asked = _check_columns(columns, records) if columns else []
    metrics = headline_metrics(records)
    metrics += [m for m in asked if m not in metrics]
    items: list[RunRecord | StudyLine | VariantLine | MoreLine] = []
    for item in (fold_studies(records) if fold else records):
        items += [item, *_variants(item)] if isinstance(item, StudyLine) else [item]
    rows = [_cells(item, metrics) for item in items]
    has_failure = any(row["failure"].plain for row in rows)
    hidden: list[str] = []
    if columns:
        chosen = list(columns)
    else:
        shown = headline_metrics(records)
        chosen = [*SHEET_COLUMNS, *shown] + (["failure"] if has_failure else [])
        if width is not None and _total(rows, chosen, 3) > width:
            chosen, hidden = _fit(rows, shown, width, has_failure)
    gap, sizes, headers = _widths(rows, chosen, width, metrics)
    caption = None
    if hidden:
        caption = Text(f"not shown at {width} columns: {', '.join(hidden)} (pick with --columns; "
                       "--format csv has every column)", style="dim")
    table = Table(title=title, caption=caption, caption_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=_PADDING[gap])
    for col in chosen:
        table.add_column(headers[col], justify="right" if col == "seed" or col in metrics else "left", width=sizes[col],
                         no_wrap=col != "name", overflow="fold" if col == "name" else "ellipsis")
    wrap = "name" in chosen and sizes["name"] < _need(rows, "name")
    for row in rows:
        if wrap:
            row = {**row, "name": _wrap(row["name"], sizes["name"])}
        table.add_row(*(row[c] for c in chosen))
    return table


def _need(rows: list[dict[str, Any]], col: str) -> int:
    """Characters a column's widest cell (or its header) takes."""
    return max([len(col), *(len(row[col].plain) for row in rows)])


def _total(rows: list[dict[str, Any]], cols: list[str], gap: int) -> int:
    """The width of a line: the columns, the gaps between them and the box's edge on either side."""
    return sum(_need(rows, c) for c in cols) + gap * (len(cols) - 1) + _EDGES


def _fit(rows: list[dict[str, Any]], metrics: list[str], width: int, has_failure: bool) -> tuple[list[str], list[str]]:
    """(columns shown, columns left out) for a terminal ``width`` wide: the essential ones (name, status,
    main metric, failure) whatever it costs, then the others while they fit at full width with gaps of
    at least 2, in the sheet's order."""
    failure = ["failure"] if has_failure else []
    kept = [*_ESSENTIAL, *metrics[:1]]
    order = [*SHEET_COLUMNS, *metrics]
    for col in [*metrics[1:], *_OPTIONAL]:
        trial = sorted([*kept, col], key=order.index)
        need = _total(rows, trial, 2) + (_MIN_FAILURE + 2 if has_failure else 0)
        if need <= width:
            kept = trial
    chosen = sorted(kept, key=order.index) + failure
    return chosen, [c for c in order if c not in chosen]


def _widths(rows: list[dict[str, Any]], chosen: list[str], width: int | None,
            metrics: list[str]) -> tuple[int, dict[str, int], dict[str, Text]]:
    """(gap between columns, width of each column, headers): every column its widest cell, with the
    widest gap that lets the line fit. When none does, in this order until it fits: the gap is 1, metric
    headers break after their underscores (``test_`` over ``accuracy``), the name wraps down to its
    longest variant, the failure reason is cut down to 8 characters, and the name wraps further."""
    sizes = {c: _need(rows, c) for c in chosen}
    headers = {c: Text(c) for c in chosen}
    if width is None:
        return 3, sizes, headers
    has_failure = "failure" in chosen
    if has_failure:
        sizes["failure"] = min(sizes["failure"], _MIN_FAILURE)

    def over(gap: int) -> int:
        return sum(sizes.values()) + gap * (len(chosen) - 1) + _EDGES - width

    gap = next((g for g in (3, 2, 1) if over(g) <= 0), 1)
    if over(gap) > 0:
        for m in (c for c in chosen if c in metrics):
            pieces = _BREAK_HEADER.split(m)
            sizes[m] = max([*(len(p) for p in pieces), *(len(row[m].plain) for row in rows)])
            headers[m] = Text("\n".join(pieces))
    if "name" in chosen:
        names = [row["name"].plain for row in rows]
        whole = max([_MIN_NAME, *(len(t) for n in names for t in _tokens(n) if t.startswith("[")),
                     *(len(n) for n in names if n.startswith(_INDENT))])  # variants stay on one line
        sizes["name"] -= max(0, min(over(gap), sizes["name"] - whole))
    if has_failure:
        sizes["failure"] -= max(0, min(over(gap), sizes["failure"] - _MIN_FAILURE_TIGHT))
    if "name" in chosen:
        sizes["name"] -= max(0, min(over(gap), sizes["name"] - _MIN_NAME))
    if has_failure:  # the failure reason: what is left, cut with an ellipsis
        sizes["failure"] = min(_need(rows, "failure"), sizes["failure"] - min(over(gap), 0))
    return gap, sizes, headers


def _tokens(name: str) -> list[str]:
    """The words of a name; a ``[variant]`` or ``[3 variants]`` in brackets is one word."""
    return re.findall(r"\[[^\]]*\]|\S+", name)


_BREAK_HEADER = re.compile(r"(?<=_)")  # test_ | accuracy
_BREAK_WORD = re.compile(r"(?<=[-_/])")  # inside a word too long for a line: after a dash, underscore or slash


def _wrap(text: Text, width: int) -> Text:
    """``text`` in lines of at most ``width`` characters, so that a name too long for a line reads whole:
    broken at spaces (``mnist1d-cnn`` / ``[+label_smoothing]``), a word longer than a line after its
    dashes and underscores, and only then wherever the line ends. A study's variant keeps its indent."""
    indent = _INDENT if text.plain.startswith(_INDENT) else ""
    lines: list[str] = []
    line = indent
    for word in _tokens(text.plain):
        sep = " " if line.strip() else ""
        if len(line) + len(sep) + len(word) <= width:
            line += sep + word
            continue
        if line.strip():
            lines.append(line)
            line = indent if len(indent) + len(word) <= width else ""
            if len(line) + len(word) <= width:
                line += word
                continue
        for part in _BREAK_WORD.split(word):  # the word alone is too long: break it inside
            while len(line) + len(part) > width:
                if line.strip():
                    lines.append(line)
                    line = ""
                if len(part) > width:
                    lines.append(part[:width])
                    part = part[width:]
            line += part
    lines.append(line)
    return Text("\n".join(lines), style=text.style)
