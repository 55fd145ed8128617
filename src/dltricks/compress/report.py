"""The compression report: one table (CSV, Markdown, HTML) and a Pareto plot of accuracy against size on
disk and latency at batch 1 and 64. Every number was measured in the same session, side by side."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from dltricks.analysis.cost import human
from dltricks.ledger.writers import csv_table, markdown_table
from dltricks.recipe import Recipe

__all__ = ["COLUMNS", "format_rows", "pareto_front", "write_report"]

COLUMNS = ["variant", "run", "size_bytes", "size_ratio", "latency_b1_ms", "speedup_b1", "latency_b64_ms",
           "speedup_b64", "test_accuracy", "test_accuracy_delta", "delta_ci_low", "delta_ci_high", "sparsity"]
SHOWN = ["variant", "run", "size", "smaller", "b1 ms", "faster", "b64 ms", "faster", "metric",
         "Δ pt (95% CI)", "zeros"]

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 70em; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; } th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #ddd; }
th { text-align: left; background: #f4f4f4; } td { font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: 1em 0; } .note { color: #555; }
"""


def _f(x: Any, fmt: str) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def format_rows(rows: list[dict[str, Any]], metric: str = "test_accuracy") -> list[list[str]]:
    """The table as text cells, in :data:`SHOWN` order."""
    out = []
    for r in rows:
        delta = ""
        if "test_accuracy_delta" in r:
            delta = (f"{100 * r['test_accuracy_delta']:+.1f} [{100 * r['delta_ci_low']:+.1f},"
                     f"{100 * r['delta_ci_high']:+.1f}]")
        out.append([r["variant"], r.get("run", "")[:6], human(r["size_bytes"], "B"),
                    _f(r.get("size_ratio"), ".2f") + "x",
                    _f(r.get("latency_b1_ms"), ".3f"), _f(r.get("speedup_b1"), ".2f") + "x",
                    _f(r.get("latency_b64_ms"), ".3f"), _f(r.get("speedup_b64"), ".2f") + "x",
                    _f(r.get(metric), ".4f"), delta, _f(r.get("sparsity"), ".0%")])
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower cost (x) and higher score (y), sorted by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _plot(path: Path, rows: list[dict[str, Any]], metric: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("size_bytes", "size on disk (KiB)", 1 / 1024), ("latency_b1_ms", "latency, batch 1 (ms)", 1.0),
              ("latency_b64_ms", "latency, batch 64 (ms)", 1.0)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for ax, (key, title, scale) in zip(axes, panels):
        pts = [(r[key] * scale, r.get(metric, float("nan"))) for r in rows]
        for (x, y), r in zip(pts, rows):
            ax.scatter([x], [y], s=50, color="#d73027" if r["variant"] == "source" else "#4575b4", zorder=3)
            ax.annotate(r["variant"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = pareto_front([p for p in pts if not math.isnan(p[1])])
        fx, fy = [pts[i][0] for i in front], [pts[i][1] for i in front]
        ax.step(fx, fy, where="post", color="#999", linestyle="--", label="Pareto front")
        ax.set_xlabel(title)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{metric} against size and latency (up and left is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def write_report(folder: str | Path, result: Any, *, recipe: Recipe, metric: str = "test_accuracy"
                 ) -> dict[str, Path]:
    """Write ``compress.csv``, ``compress.md``, ``compress.html`` and ``pareto.png`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = result.rows
    paths = {"csv": folder / "compress.csv", "md": folder / "compress.md", "html": folder / "compress.html",
             "pareto": folder / "pareto.png"}
    columns = COLUMNS + ([metric] if metric not in COLUMNS else [])
    paths["csv"].write_text(csv_table(columns, [[r.get(c) for c in columns] for r in rows]))
    cells = format_rows(rows, metric)
    shown = [c if c != "metric" else metric for c in SHOWN]
    note = ("Size is the weights file on disk. Latency is the median forward time on one CPU thread, all "
            "models timed in interleaved rounds; speed-ups are ratios to the source measured in the same "
            "rounds. Δ is the test accuracy change against the source on the same samples, with a paired "
            "bootstrap 95% CI: an interval that contains 0 shows no evidence of a drop.")
    numbers = [c for c in shown if c not in ("variant", "run")]
    md = [f"# Compression of run {result.source} ({recipe.name})", "", markdown_table(shown, cells, right=numbers),
          note]
    if result.failures:
        md += ["", "## Failed variants", ""] + [f"- {f['variant']} (run {f['run']}): {f['reason']}"
                                               for f in result.failures]
    paths["md"].write_text("\n".join(md) + "\n")
    _plot(paths["pareto"], rows, metric)
    e = html.escape
    out = ["<!doctype html>", '<html><head><meta charset="utf-8">',
           f"<title>compression of {e(result.source)}</title>", f"<style>{_CSS}</style></head><body>",
           f"<h1>Compression of run {e(result.source)} ({e(recipe.name)})</h1>", "<table>",
           "<tr>" + "".join(f"<th>{e(c)}</th>" for c in shown) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in cells]
    out += ["</table>", f'<p class="note">{e(note)}</p>', '<img src="pareto.png" alt="Pareto plot">']
    if result.failures:
        out.append("<h2>Failed variants</h2><ul>")
        out += [f"<li>{e(f['variant'])} (run {e(f['run'])}): {e(f['reason'])}</li>" for f in result.failures]
        out.append("</ul>")
    out.append("</body></html>")
    paths["html"].write_text("\n".join(out) + "\n")
    return paths
