"""Tables as text, in one place: CSV and Markdown from a header and rows, and the cell formats the sheet
uses (numbers, durations, local times). The sheet of runs and the compression report both write
through these, so a table of results looks the same wherever it comes from."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

__all__ = ["cell", "csv_table", "flatten", "fmt_duration", "fmt_local", "fmt_number", "iso", "markdown_table"]


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


def cell(v: Any) -> str:
    """A value as table text: None empty, lists and dicts as JSON, anything else as ``str``."""
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


def fmt_number(x: float | None) -> str:
    """4 significant digits; empty for None; ``nan`` and ``inf`` spelled out."""
    if x is None:
        return ""
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.4g}"


def fmt_duration(d: timedelta | None) -> str:
    """``42s``, ``3m05s``, ``2h07m``; empty for None."""
    if d is None:
        return ""
    s = round(d.total_seconds())
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fmt_local(t: datetime | None) -> str:
    """``2026-12-06 20:40`` in the machine's time zone; empty for None."""
    return "" if t is None else t.astimezone().strftime("%Y-%m-%d %H:%M")


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def csv_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """RFC 4180 CSV with ``\\n`` line ends; each value through :func:`cell`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[cell(v) for v in row] for row in rows])
    return buf.getvalue()


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, right: Iterable[str] = ()) -> str:
    """A GitHub Markdown table: columns named in ``right`` right-aligned (numbers), ``|`` escaped, line
    breaks inside a cell turned into spaces so that a row stays one line."""
    right = set(right)

    def text(v: Any) -> str:
        return " ".join(cell(v).splitlines()).replace("|", "\\|")

    lines = ["| " + " | ".join(text(h) for h in header) + " |",
             "| " + " | ".join("---:" if h in right else "---" for h in header) + " |"]
    lines += ["| " + " | ".join(text(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
