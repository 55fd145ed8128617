"""The evidence table: one row per claim of the catalogue, re-tested, beside the published result it is
compared with. :mod:`dltricks.search.evidence` runs the studies; this module holds the row, decides
agreement with the paper, and writes the table (Markdown, JSON, an HTML page with a forest plot per family).

A row is an *effect* (paired seeds, a verdict from :func:`dltricks.ledger.stats.compare`) or a *cost*
(parameters, FLOPs, receptive field, bytes: measured exactly, so the verdict is the measured ratio).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dltricks.ledger.atomic import atomic_write, save_figure
from dltricks.ledger.report_docs import CSS, html_table, md, md_table, num
from dltricks.ledger.report_plots import VERDICT_COLOURS, mpl_text

# What a published result says happens, and the verdicts that agree with it.
EXPECTS = ("helps", "hurts", "equivalent", "lower", "higher", "same")


@dataclass
class EvidenceRow:
    """One line of the table: a claim (at one setting of a curve) and one variant against its baseline."""

    claim: str  # the claim's name: `dltricks evidence --only NAME`
    family: str
    tip: str  # the tip in the catalogue's words
    source: str  # the catalogue entries it comes from (trick names, or a page of the docs)
    task: str  # data and model, e.g. "mnist1d-cnn, 2000 samples, 8 epochs"
    metric: str
    kind: str  # "effect" (paired seeds) or "cost" (measured exactly)
    baseline: str  # the arm compared with, e.g. "batch norm"
    variant: str
    higher_is_better: bool = True
    setting: str = ""  # one point of a curve, e.g. "batch 2"
    baseline_mean: float = math.nan
    variant_mean: float = math.nan
    delta: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    rope: float = math.nan
    verdict: str = "not run"  # helps / hurts / equivalent / inconclusive, or for a cost lower / higher / same
    seeds: int = 0
    reason: str = ""  # why inconclusive, or why no verdict
    protocol: str = "seeds"  # "seeds", "tuned N (train.lr on val_accuracy)", "exact"
    wall_s: float = math.nan  # wall time of the row's study in the session that finished it
    compute_s: float = math.nan  # the study's runs' wall_time_s summed (the same whatever the resumes)
    study: str = ""
    report: str = ""  # the study's report, relative to the table's folder
    anchor: str = ""  # the published result, with its source
    expects: str = ""  # what the published result says: one of EXPECTS
    quick: bool = False  # --quick: tiny data, verdicts not meant
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def agreement(self) -> str:
        return agreement(self)

    @property
    def ratio(self) -> float:
        b, v = self.baseline_mean, self.variant_mean
        return v / b if b and not (math.isnan(b) or math.isnan(v)) else math.nan

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "agreement": self.agreement}


def agreement(row: EvidenceRow) -> str:
    """"agrees", "disagrees", or why it cannot say (a quick run, an undecided verdict, no paper number)."""
    if row.quick:
        return "— (quick run)"
    if not row.expects:
        return "—"
    if row.verdict in ("inconclusive", "not run", "failed"):
        return "undecided"
    return "agrees" if row.verdict == row.expects else "disagrees"


def cost_verdict(baseline: float, variant: float) -> str:
    """A cost measured exactly has no noise: its verdict is which way it moved."""
    if math.isnan(baseline) or math.isnan(variant):
        return "not run"
    if variant == baseline:
        return "same"
    return "lower" if variant < baseline else "higher"


# ---- the table -------------------------------------------------------------------------------------------

COLUMNS = ["claim", "tip", "task", "metric", "baseline → variant", "Δ [95% CI]", "verdict (seeds)", "protocol",
           "published result", "ours", "time"]


def _signed(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:+.3g}"


def effect_text(r: EvidenceRow) -> str:
    if r.kind == "cost":
        return f"×{num(r.ratio, 3)}" if not math.isnan(r.ratio) else "—"
    if math.isnan(r.delta):
        return "—"
    ci = "" if math.isnan(r.ci_low) else f" [{_signed(r.ci_low)}, {_signed(r.ci_high)}]"
    return f"{_signed(r.delta)}{ci}"


def verdict_text(r: EvidenceRow) -> str:
    if r.kind == "cost":
        return r.verdict if r.verdict in ("not run", "failed") else f"{r.verdict} (exact)"
    seeds = f" ({r.seeds} seeds)" if r.seeds else ""
    return f"{r.verdict}{seeds}"


def _time(r: EvidenceRow) -> str:
    return "—" if math.isnan(r.wall_s) else f"{r.wall_s:.0f} s"


def first_sentence(text: str) -> str:
    """The tip's first sentence: the table's column; the whole tip is in the JSON and the catalogue."""
    head, dot, rest = text.partition(". ")
    return head + "." if dot else text


def cells(r: EvidenceRow) -> list[str]:
    """A row's text, one string per column; the study is named as code (each writer links it its own way)."""
    claim = r.claim + (f" @ {r.setting}" if r.setting else "")
    arms = f"{r.baseline} {num(r.baseline_mean)} → {r.variant} {num(r.variant_mean)}"
    verdict = verdict_text(r)
    if r.reason and r.verdict in ("inconclusive", "not run", "failed"):
        verdict += f": {r.reason}"
    study = f"`{r.study}`" if r.study else ""
    return [claim, f"{first_sentence(r.tip)} ({r.source})", r.task, r.metric, arms, effect_text(r), verdict, r.protocol,
            r.anchor, r.agreement, _time(r) + (f", {study}" if study else "")]


def markdown_table(rows: list[EvidenceRow], *, link: bool = True) -> str:
    """The rows as one GFM table; ``link`` makes each study's name a link to its report."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        # md() escapes '|' and '`' inside cells; the study column's own link and code marks stay
        text = [md(c) for c in cells(r)]
        text[-1] = _time(r) + (f", [{md(r.study)}]({r.report})" if link and r.report else
                               (f", `{r.study}`" if r.study else ""))
        lines.append("| " + " | ".join(text) + " |")
    return "\n".join(lines)


def summary(rows: list[EvidenceRow]) -> str:
    """One line: how many rows agree with their paper, disagree, or are undecided."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.agreement] = counts.get(r.agreement, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


# ---- the files ------------------------------------------------------------------------------------------

def family_slug(family: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in family.lower()).strip("-")


def plot_family(path: Path, family: str, rows: list[EvidenceRow]) -> Path:
    """A forest plot of a family's effect rows on one scale: the paired difference in ROPE units, signed so
    that right is better, with its 95% interval. Inside ±1 is practically equivalent."""
    from matplotlib.figure import Figure

    shown = [r for r in rows if r.kind == "effect"]
    fig = Figure(figsize=(8.5, 1.2 + 0.36 * max(1, len(shown))))
    ax = fig.add_subplot()
    ax.axvspan(-1, 1, color=VERDICT_COLOURS["equivalent"], alpha=0.15, lw=0, label="ROPE")
    ax.axvline(0.0, color="black", lw=1)
    labels = []
    several = {r.claim for r in shown if len({x.metric for x in shown if x.claim == r.claim}) > 1}
    for y, r in enumerate(reversed(shown)):
        metric = f" ({r.metric})" if r.claim in several else ""
        labels.append(mpl_text(f"{r.claim}{' @ ' + r.setting if r.setting else ''}: {r.variant}{metric}"))
        scale = (1.0 if r.higher_is_better else -1.0) / r.rope if r.rope and not math.isnan(r.rope) else math.nan
        colour = VERDICT_COLOURS.get(r.verdict, "#555")
        if math.isnan(scale) or math.isnan(r.delta):
            ax.text(0.0, y, "  not run", va="center", color=colour)
            continue
        lo, hi = sorted((r.ci_low * scale, r.ci_high * scale))
        if not math.isnan(lo):
            ax.plot([lo, hi], [y, y], color=colour, lw=2.5, solid_capstyle="butt")
        ax.plot([r.delta * scale], [y], "o", color=colour)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("paired difference / ROPE (right = better)")
    ax.set_title(mpl_text(f"{family}: effects against their baselines"))
    ax.set_xscale("symlog", linthresh=2.0)
    ax.margins(x=0.08)  # the largest effects' points stay inside the frame
    return save_figure(fig, path)


def plot_families(folder: Path, rows: list[EvidenceRow]) -> dict[str, Path]:
    """``forest-FAMILY.png`` in ``folder`` for every family with an effect row: ``{family: path}``."""
    families = list(dict.fromkeys(r.family for r in rows))
    return {f: plot_family(folder / f"forest-{family_slug(f)}.png", f, [r for r in rows if r.family == f])
            for f in families if any(r.kind == "effect" for r in rows if r.family == f)}


def write_table(folder: Path, rows: list[EvidenceRow], *, header: dict[str, str], link: bool = True
                ) -> dict[str, Path]:
    """``evidence.md``, ``evidence.json``, ``evidence.html`` and ``forest-FAMILY.png`` in ``folder``; with
    ``link`` the Markdown links each study's report."""
    folder.mkdir(parents=True, exist_ok=True)
    plots = plot_families(folder, rows)
    paths = {"markdown": folder / "evidence.md", "json": folder / "evidence.json", "html": folder / "evidence.html"}
    head = [f"- **{md(k)}**: {md(v)}" for k, v in header.items()]
    text = ["# Evidence: the catalogue's tips re-tested", "", *head, f"- **against the papers**: {summary(rows)}",
            "", markdown_table(rows, link=link), ""]
    text += [f"![{md(f)}]({p.name})" for f, p in plots.items()]
    atomic_write(paths["markdown"], "\n".join(text) + "\n")
    atomic_write(paths["json"], json.dumps({"header": header, "rows": [r.to_json() for r in rows]}, indent=1,
                                           default=str) + "\n")
    atomic_write(paths["html"], html_page(rows, header, plots))
    return {**paths, **{f"forest {f}": p for f, p in plots.items()}}


def html_page(rows: list[EvidenceRow], header: dict[str, str], plots: dict[str, Path]) -> str:
    e = html.escape
    table = html_table(COLUMNS, [cells(r) for r in rows], verdict_column=COLUMNS.index("verdict (seeds)"),
                       css_class="results", left=(1, 2, 8))
    for r in rows:  # each study's name links its report
        if r.report and r.study:
            table = table.replace(f", `{e(r.study)}`</td>", f', <a href="{e(r.report)}">{e(r.study)}</a></td>', 1)
    out = ["<!doctype html>", '<html><head><meta charset="utf-8">', "<title>dltricks evidence</title>",
           f"<style>{CSS}</style></head><body>", "<h1>Evidence: the catalogue's tips re-tested</h1>",
           f"<p>{e(summary(rows))}</p>", table, '<dl class="header">']
    out += [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in header.items()]
    out.append("</dl>")
    for family, p in plots.items():
        out += [f"<h2>{e(family)}</h2>", f'<img src="{e(p.name)}" alt="forest plot: {e(family)}">']
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def read_rows(path: Path) -> list[EvidenceRow]:
    """The rows of an ``evidence.json`` (plain JSON: never unpickled)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    names = set(EvidenceRow.__dataclass_fields__)
    return [EvidenceRow(**{k: v for k, v in r.items() if k in names}) for r in data.get("rows", [])]


def write_docs(folder: Path, rows: list[EvidenceRow], header: dict[str, str] | None = None) -> list[Path]:
    """The docs' generated content: ``header.md`` (how and when the table was made), ``table.md`` (every row),
    ``claims/NAME.md`` (one claim's rows, for the page of its trick) and the forest plots. Studies are
    named, not linked: their reports live in the ledger."""
    (folder / "claims").mkdir(parents=True, exist_ok=True)
    plots = plot_families(folder, rows)
    written = list(plots.values())
    images = [f"![{md(f)}]({folder.name}/{p.name})" for f, p in plots.items()]  # relative to the page beside it
    path = folder / "forests.md"
    atomic_write(path, "\n".join(images) + "\n")
    written.append(path)
    path = folder / "header.md"
    lines = [f"- **{md(k)}**: {md(v)}" for k, v in (header or {}).items() if k != "ledger"]
    atomic_write(path, "\n".join([*lines, f"- **against the papers**: {summary(rows)}"]) + "\n")
    written.append(path)
    path = folder / "table.md"
    atomic_write(path, markdown_table(rows, link=False) + "\n")
    written.append(path)
    for name in dict.fromkeys(r.claim for r in rows):
        path = folder / "claims" / f"{name}.md"
        atomic_write(path, markdown_table([r for r in rows if r.claim == name], link=False) + "\n")
        written.append(path)
    return written
