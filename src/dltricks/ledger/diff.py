"""Two runs side by side: the recipe keys, code version and device that differ, and every metric with
b - a, coloured by whether b is better (:func:`dltricks.direction.higher_is_better`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from dltricks.direction import higher_is_better
from dltricks.ledger.record import RunRecord
from dltricks.ledger.writers import cell, flatten, fmt_number

__all__ = ["MISSING", "MetricDelta", "RunDiff", "diff_runs", "render_diff"]


class _Missing:
    """A key one side of a diff does not have (distinct from a value of None)."""

    def __repr__(self) -> str:
        return "(absent)"


MISSING: Any = _Missing()


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
        changes.add_row(Text(key), Text(cell(va) if va is not MISSING else "(absent)"),
                        Text(cell(vb) if vb is not MISSING else "(absent)"))
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
            table.add_row(Text(m), fmt_number(d.a), fmt_number(d.b),
                          Text("" if delta is None else f"{delta:+.4g}", style=style))
        parts.append(table)
    return Group(*parts)
