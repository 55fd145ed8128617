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

import csv
import html
import io
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dltricks.ledger.stats import VariantStats

VERDICT_COLOURS = {
    "helps": "#1a9850",
    "hurts": "#d73027",
    "equivalent": "#2c7fb8",
    "inconclusive": "#8c8c8c",
    "baseline": "#525252",
}
SHEET_COLUMNS = [
    "variant", "n", "n_paired", "mean", "std", "delta", "ci_low", "ci_high",
    "p", "p_holm", "verdict", "seeds_needed", "test", "seeds",
    "rope", "prob_worse", "prob_rope", "prob_better", "p_beyond", "p_beyond_holm", "p_equiv", "p_equiv_holm",
    "alpha", "p_signflip", "fragile", "look", "reason", "changes",
]
# The sheet shows the per-epoch curve that matches the metric; these are tried in order.
CURVE_PREFIXES = ("val_", "valid_", "validation_", "test_")


# --------------------------------------------------------------------------- formatting


def _num(x: Any, digits: int = 4) -> str:
    """A number for people: 4 significant digits, thousands separators for whole counts, '—' if missing."""
    if x is None:
        return "—"
    x = float(x)
    if math.isnan(x):
        return "—"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if x.is_integer() and abs(x) >= 10_000:
        return f"{int(x):,}"
    return f"{x:.{digits}g}"


def _p(x: float) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.2g}"


def _csv_value(x: Any) -> str:
    """Full precision for machines: repr of floats ('nan' for NaN), '' for None."""
    if x is None:
        return ""
    if isinstance(x, float):
        return repr(x)
    if isinstance(x, (list, tuple)):
        return " ".join(str(v) for v in x)
    return str(x)


_MD_SPECIAL = re.compile(r"([\\`*<>|])")


def _md(text: Any) -> str:
    """Text safe inside a Markdown table cell, on one line.

    Escapes what would break the table or turn into markup/HTML; leaves `_` and `[` alone,
    which GFM does not treat as markup inside words, so names stay readable in the raw file.
    """
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).splitlines()))


def _fence(text: str, lang: str = "") -> str:
    """A fenced code block whose fence is longer than any backtick run inside the text."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def _mpl_text(text: str) -> str:
    """A label matplotlib draws literally ('$' would start mathtext and can raise on odd names)."""
    return str(text).replace("$", r"\$")


# --------------------------------------------------------------------------- data


def _snapshot_scores(scores: Mapping[str, Mapping[int, float]]) -> dict[str, dict[int, float]]:
    """A private copy with NaN for None, so a study adding runs meanwhile cannot break iteration."""
    out: dict[str, dict[int, float]] = {}
    for variant, by_seed in list(scores.items()):
        out[str(variant)] = {
            int(seed): (math.nan if value is None else float(value)) for seed, value in list(by_seed.items())
        }
    return out


def _variant_order(stats: Sequence[VariantStats], *more: Mapping[str, Any] | None) -> list[str]:
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


def _pick_curve(names: set[str], metric: str) -> str | None:
    """The validation curve of ``metric`` if recorded, else any validation curve, else any curve."""
    for candidate in [p + metric for p in CURVE_PREFIXES] + [metric]:
        if candidate in names:
            return candidate
    validation = sorted(n for n in names if n.startswith(CURVE_PREFIXES))
    if validation:
        return validation[0]
    return min(names) if names else None


# --------------------------------------------------------------------------- writing


def atomic_write(path: Path, text: str) -> None:
    """Write next to the target, then rename over it: readers see the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_figure(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure as PNG beside the target, then rename over it (as :func:`atomic_write`)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c)) for c in columns])
    atomic_write(path, buffer.getvalue())
    return path


# --------------------------------------------------------------------------- plots


def _colours(order: Sequence[str]) -> dict[str, Any]:
    """One colour per variant, the same in every plot."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(order) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(order)}


def _plot_forest(path: Path, stats: Sequence[VariantStats], metric: str, higher_is_better: bool) -> Path:
    from matplotlib.figure import Figure

    rows = [s for s in stats if s.verdict != "baseline"]
    baseline = next((s.variant for s in stats if s.verdict == "baseline"), "baseline")
    fig = Figure(figsize=(8, 1.3 + 0.4 * max(1, len(rows))))
    ax = fig.add_subplot()
    rope = next((s.rope for s in stats if not math.isnan(s.rope)), math.nan)
    if not math.isnan(rope) and rope > 0:
        # The region of practical equivalence: an interval inside it is "equivalent".
        ax.axvspan(-rope, rope, color="#2c7fb8", alpha=0.15, lw=0, label=_mpl_text(f"ROPE ±{rope:.3g}"))
    ax.axvline(0.0, color="black", lw=1)
    if not rows:
        ax.text(0.5, 0.5, "no variant to compare with the baseline yet", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_yticks([])
    for y, s in enumerate(reversed(rows)):
        colour = VERDICT_COLOURS.get(s.verdict, "black")
        if math.isnan(s.delta):
            ax.text(0.0, y, "  no paired seed", va="center", color=colour)
            continue
        if not (math.isnan(s.ci_low) or math.isnan(s.ci_high)):
            ax.plot([s.ci_low, s.ci_high], [y, y], color=colour, lw=2.5, solid_capstyle="butt")
        ax.plot([s.delta], [y], "o", color=colour, ms=7)
    if rows:
        ax.set_yticks(range(len(rows)), [_mpl_text(s.variant) for s in reversed(rows)])
        ax.set_ylim(-0.7, len(rows) - 0.3)
    better = "right" if higher_is_better else "left"
    ax.set_xlabel(_mpl_text(f"{metric}: variant − {baseline}, paired mean and 95% CI (better to the {better})"))
    handles = [ax.plot([], [], "o", color=c, label=v)[0] for v, c in VERDICT_COLOURS.items() if v != "baseline"]
    handles += [h for h in ax.get_legend_handles_labels()[0] if h.get_label().startswith("ROPE")]
    # Outside the axes: inside, it would hide a variant's interval.
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def _plot_seeds(path: Path, order: Sequence[str], scores: dict[str, dict[int, float]], metric: str) -> Path:
    from matplotlib.figure import Figure

    colours = _colours(order)
    fig = Figure(figsize=(max(5.0, 1.1 * len(order) + 2), 4.5))
    ax = fig.add_subplot()
    seeds = sorted({seed for name in order for seed in scores.get(name, {})})
    x = list(range(len(order)))
    # One faint line per seed: a seed that is better in every variant shows as a line lying
    # high all along; the slopes are the paired differences the statistics test.
    for seed in seeds:
        ys = [scores.get(name, {}).get(seed, math.nan) for name in order]
        ax.plot(x, ys, color="0.5", alpha=0.45, lw=0.9, zorder=1)
    for i, name in enumerate(order):
        values = [v for v in scores.get(name, {}).values() if not math.isnan(v)]
        ax.scatter([i] * len(values), values, color=colours[name], s=22, zorder=2)
        if values:
            mean = sum(values) / len(values)
            ax.plot([i - 0.25, i + 0.25], [mean, mean], color=colours[name], lw=2.5, zorder=3)
    if not seeds:
        ax.text(0.5, 0.5, "no finished run yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks(x, [_mpl_text(n) for n in order], rotation=30 if len(order) > 4 else 0, ha="right"
                  if len(order) > 4 else "center")
    ax.set_xlim(-0.5, max(0.5, len(order) - 0.5))
    ax.set_ylabel(_mpl_text(metric))
    ax.set_title("per-seed scores (lines join the same seed)", fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def _mean_curve(runs: list[list[float]]) -> list[float]:
    """Per-epoch mean over the runs that reached that epoch (runs still going are shorter)."""
    length = max((len(r) for r in runs), default=0)
    out = []
    for epoch in range(length):
        values = [float(r[epoch]) for r in runs if epoch < len(r) and not math.isnan(float(r[epoch]))]
        out.append(sum(values) / len(values) if values else math.nan)
    return out


def _plot_curves(
    path: Path, order: Sequence[str], curves: Mapping[str, Mapping[int, Mapping[str, Sequence[float]]]],
    metric: str,
) -> Path | None:
    """Mean curve per variant over faint per-seed curves; a train-loss panel too when recorded."""
    names = {name for by_seed in curves.values() for run in by_seed.values() for name in run}
    main = _pick_curve(names, metric)
    if main is None:
        return None
    panels = [main] + (["train_loss"] if "train_loss" in names and main != "train_loss" else [])

    from matplotlib.figure import Figure

    colours = _colours(order)
    fig = Figure(figsize=(6.5 * len(panels), 4.3))
    for k, curve in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        for name in order:
            runs = [list(run[curve]) for run in curves.get(name, {}).values() if run.get(curve)]
            if not runs:
                continue
            for run in runs:
                ax.plot(range(1, len(run) + 1), run, color=colours[name], alpha=0.2, lw=0.8)
            mean = _mean_curve(runs)
            ax.plot(range(1, len(mean) + 1), mean, color=colours[name], lw=2,
                    label=_mpl_text(f"{name} (n={len(runs)})"))
        ax.set_xlabel("epoch")
        ax.set_ylabel(_mpl_text(curve))
        ax.grid(alpha=0.3)
        if k == 0 and ax.get_legend_handles_labels()[0]:  # same colours in every panel: one legend
            ax.legend(fontsize="small", frameon=False)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- documents


def _header_parts(header: Mapping[str, str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(one-line fields, multi-line fields): short ones go in a list, long ones (environment) in blocks.
    The recipe is not a header field: it goes last, folded."""
    short, long = [], []
    for key, value in header.items():
        if key == "recipe":
            continue
        value = "" if value is None else str(value)
        (long if "\n" in value.strip() else short).append((str(key), value))
    return short, long


def _summary(stats: Sequence[VariantStats]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {"helps": [], "hurts": [], "equivalent": [], "inconclusive": []}
    for s in stats:
        if s.verdict in groups:
            groups[s.verdict].append(s.variant + (" (fragile)" if s.fragile else ""))
    return groups


def _probs(r: dict) -> str:
    if math.isnan(r["prob_rope"]):
        return "—"
    return f"{r['prob_worse']:.2f} / {r['prob_rope']:.2f} / {r['prob_better']:.2f}"


def _display_rows(rows: list[dict], extra_columns: list[str]) -> tuple[list[str], list[list[str]]]:
    """The answer's table (shared by Markdown and HTML): what changed, the effect, the verdict."""
    columns = ["variant", "changes vs baseline", "mean ± std", "n", "Δ vs baseline [95% CI]",
               "P(worse / ROPE / better)", "verdict", "seeds needed"]
    cells = []
    for r in rows:
        base = r["verdict"] == "baseline"
        ci = "" if math.isnan(r["ci_low"]) else f" [{_num(r['ci_low'])}, {_num(r['ci_high'])}]"
        n = str(r["n"]) if base else f"{r['n']} ({r['n_paired']} paired)"
        needed = "—" if r["seeds_needed"] is None else str(r["seeds_needed"])
        verdict = r["verdict"] + (" (fragile)" if r["fragile"] else "")
        cells.append([r["variant"], "—" if base else (r["changes"] or "—"), f"{_num(r['mean'])} ± {_num(r['std'])}",
                      n, "—" if base else _num(r["delta"]) + ci, "—" if base else _probs(r), verdict,
                      "—" if base else needed])
    return columns, cells


def _evidence_rows(rows: list[dict], extra_columns: list[str]) -> tuple[list[str], list[list[str]]]:
    """The numbers behind each verdict, and the classic tests, for the reader who checks."""
    columns = ["variant", "reason", "p beyond ROPE (Holm)", "TOST p (Holm)", "level", "sign-flip p",
               "p no difference", "p (Holm)", "test", "look"] + extra_columns
    cells = []
    for r in rows:
        if r["verdict"] == "baseline":
            cells.append([r["variant"], "the reference"] + ["—"] * 8 + [_num(r[c]) for c in extra_columns])
            continue
        cells.append([r["variant"], r["reason"] or "—", f"{_p(r['p_beyond'])} ({_p(r['p_beyond_holm'])})",
                      f"{_p(r['p_equiv'])} ({_p(r['p_equiv_holm'])})", _p(r["alpha"]), _p(r["p_signflip"]),
                      _p(r["p"]), _p(r["p_holm"]), r["test"] or "—", "—" if r["look"] is None else str(r["look"])]
                     + [_num(r[c]) for c in extra_columns])
    return columns, cells


RULE = ("Δ is the mean per-seed difference to the baseline over the seeds both ran (paired). The posterior of "
        "the mean difference (Student-t, flat prior) gives P(worse / inside the ROPE / better). helps / hurts: "
        "more than 1 − level/2 of it beyond the ROPE on one side; equivalent: the TOST shows it inside the "
        "ROPE; both after Holm's correction across the variants (and alpha spent over the looks with seeds = "
        "auto); inconclusive otherwise. fragile: from 6 seeds, the exact sign-flip test does not confirm it.")


def _seed_table(order: Sequence[str], scores: dict[str, dict[int, float]]) -> tuple[list[str], list[list[str]]]:
    seeds = sorted({seed for name in order for seed in scores.get(name, {})})
    columns = ["variant"] + [f"seed {s}" for s in seeds]
    cells = [[name] + [_num(scores.get(name, {}).get(s)) for s in seeds] for name in order]
    return columns, cells


def _md_table(columns: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in cells]
    return "\n".join(lines)


def _recipe_text(header: Mapping[str, str], recipe: str) -> str:
    return recipe or str(header.get("recipe") or "")


def _markdown(
    title: str, header: Mapping[str, str], sheet: tuple[list[str], list[list[str]]],
    seeds: tuple[list[str], list[list[str]]], stats: Sequence[VariantStats], metric: str,
    higher_is_better: bool, failures: list[dict], plots: dict[str, Path], *,
    evidence: tuple[list[str], list[list[str]]], notes: Sequence[str], recipe: str,
) -> str:
    short, long = _header_parts(header)
    out = [f"# {_md(title)}", ""]
    out += [f"> **{_md(n)}**" for n in notes] + ([""] if notes else [])
    out += ["## Results", ""]
    out += [f"- **{verdict}**: {', '.join(_md(v) for v in names) or '—'}" for verdict, names in
            _summary(stats).items()]
    out += ["", _md_table(*sheet), ""]
    if "forest" in plots:
        out += [f"![forest]({plots['forest'].name})", ""]
    out += [RULE, "", "## The numbers behind each verdict", "", _md_table(*evidence)]
    out += ["", "## Scores by seed", "", _md_table(*seeds)]
    if failures:
        out += ["", "## Failed runs", ""]
        out.append(_md_table(["variant", "seed", "reason"],
                             [[str(f.get("variant", "")), str(f.get("seed", "")), str(f.get("reason", ""))]
                              for f in failures]))
    others = {k: p for k, p in plots.items() if k != "forest"}
    if others:
        out += ["", "## Plots", ""]
        out += [f"![{key}]({p.name})" for key, p in others.items()]
    out += ["", "## Study", ""]
    keys = [k for k, _ in short]
    out += [f"- **{_md(k)}**: {_md(v)}" for k, v in short]
    if "metric" not in keys:
        out.append(f"- **metric**: {_md(metric)} ({'higher' if higher_is_better else 'lower'} is better)")
    for key, value in long:
        out += ["", f"**{_md(key)}**", "", _fence(value)]
    text = _recipe_text(header, recipe)
    if text:
        out += ["", "## Full resolved recipe", "", _fence(text, "toml")]
    return "\n".join(out) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 0.8em 1.2em; color: #222; font-size: 14px; }
h1 { font-size: 1.35em; margin: 0.2em 0 0.4em; } h2 { font-size: 1.1em; margin: 1.2em 0 0.4em; }
table { border-collapse: collapse; margin: 0.4em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
td.changes { text-align: left; font-family: ui-monospace, monospace; font-size: 0.9em; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; }
.verdict { font-weight: 600; color: white; text-align: center; }
.summary { margin: 0.3em 0; padding: 0; list-style: none; display: flex; flex-wrap: wrap; gap: 0.4em 1.4em; }
.note { background: #fff3cd; border-left: 4px solid #e0a800; padding: 0.3em 0.6em; margin: 0.3em 0; }
.rule { color: #555; font-size: 0.85em; max-width: 80em; margin: 0.3em 0; }
img { max-width: 100%; display: block; margin: 0.5em 0; } img.forest { max-height: 330px; }
dl.header dt { font-weight: 600; } dl.header dd { margin: 0 0 0.4em 1.5em; }
"""


def _html_table(columns: list[str], cells: list[list[str]], verdict_column: int | None = None,
                css_class: str = "", left: Sequence[int] = ()) -> str:
    e = html.escape
    out = [f'<table class="{e(css_class)}">' if css_class else "<table>",
           "<tr>" + "".join(f"<th>{e(c)}</th>" for c in columns) + "</tr>"]
    for row in cells:
        tds = []
        for i, cell in enumerate(row):
            if i == verdict_column:
                colour = VERDICT_COLOURS.get(cell.split(" (")[0], "#555")
                tds.append(f'<td class="verdict" style="background:{colour}">{e(cell)}</td>')
            elif i in left:
                tds.append(f'<td class="changes">{e(cell)}</td>')
            else:
                tds.append(f"<td>{e(cell)}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _html(
    title: str, header: Mapping[str, str], sheet: tuple[list[str], list[list[str]]],
    seeds: tuple[list[str], list[list[str]]], stats: Sequence[VariantStats], metric: str,
    higher_is_better: bool, failures: list[dict], plots: dict[str, Path], *,
    evidence: tuple[list[str], list[list[str]]], notes: Sequence[str], recipe: str,
) -> str:
    e = html.escape
    short, long = _header_parts(header)
    # The answer first (fits a 1280x800 screen): summary, table, forest plot. Details after it.
    out = ["<!doctype html>", '<html><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    out += [f'<p class="note">{e(n)}</p>' for n in notes]
    out.append('<ul class="summary" id="summary">')
    for verdict, names in _summary(stats).items():
        colour = VERDICT_COLOURS[verdict]
        out.append(f'<li><b style="color:{colour}">{e(verdict)}</b>: {e(", ".join(names)) or "—"}</li>')
    out.append("</ul>")
    out.append(_html_table(*sheet, verdict_column=sheet[0].index("verdict"), css_class="results", left=(1,)))
    if "forest" in plots:
        out.append(f'<img src="{e(plots["forest"].name)}" class="forest" alt="forest">')
    out.append(f'<p class="rule">{e(RULE)}</p>')
    out += ["<h2>The numbers behind each verdict</h2>",
            _html_table(*evidence, css_class="evidence", left=(1,))]
    out += ["<h2>Scores by seed</h2>", _html_table(*seeds)]
    for key, p in plots.items():
        if key != "forest":
            out.append(f'<img src="{e(p.name)}" alt="{e(key)}">')
    if failures:
        out.append("<h2>Failed runs</h2>")
        out.append(_html_table(["variant", "seed", "reason"],
                               [[str(f.get("variant", "")), str(f.get("seed", "")), str(f.get("reason", ""))]
                                for f in failures], left=(2,)))
    out += ["<h2>Study</h2>", '<dl class="header">']
    out += [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in short]
    if "metric" not in [k for k, _ in short]:
        out.append(f"<dt>metric</dt><dd>{e(metric)} ({'higher' if higher_is_better else 'lower'} is better)</dd>")
    out.append("</dl>")
    for key, value in long:
        out += [f"<h3>{e(key)}</h3>", f"<pre>{e(value)}</pre>"]
    text = _recipe_text(header, recipe)
    if text:
        out += ['<details id="recipe"><summary>Full resolved recipe</summary>', f"<pre>{e(text)}</pre>", "</details>"]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- entry point


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

    order = _variant_order(stats, scores, curves)
    plots: dict[str, Path] = {
        "forest": _plot_forest(out / "forest.png", stats, metric, higher_is_better),
        "seeds": _plot_seeds(out / "seeds.png", order, scores, metric),
    }
    curve_path = _plot_curves(out / "curves.png", order, curves, metric) if curves else None
    if curve_path is not None:
        plots["curves"] = curve_path
    for i, (caption, src) in enumerate((run_figures or {}).items()):
        if Path(src).is_file():  # a run folder may have been cleaned away since
            plots[caption] = out / f"run-{i}-{Path(src).name}"
            shutil.copyfile(src, plots[caption])

    extra_columns = _extra_columns(extras)
    rows = _sheet_rows(stats, extras, changes)
    sheet = _display_rows(rows, extra_columns)
    seed_table = _seed_table(order, scores)
    paths = {"csv": _write_csv(out / "report.csv", rows, SHEET_COLUMNS + extra_columns)}
    args = (title, header, sheet, seed_table, stats, metric, higher_is_better, failures, plots)
    more = {"evidence": _evidence_rows(rows, extra_columns), "notes": list(notes), "recipe": recipe}
    paths["md"] = out / "report.md"
    atomic_write(paths["md"], _markdown(*args, **more))
    paths["html"] = out / "report.html"
    atomic_write(paths["html"], _html(*args, **more))
    return {**paths, **plots}
