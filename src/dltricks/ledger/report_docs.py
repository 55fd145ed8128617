"""The ablation report as documents: Markdown and HTML with the answer first (verdicts, the table, the
forest plot), then the numbers behind each verdict, per-seed scores, failures, the study's fields and
the full recipe last (folded in HTML)."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dltricks.ledger.report_plots import VERDICT_COLOURS
from dltricks.ledger.variant_stats import VariantStats


def num(x: Any, digits: int = 4) -> str:
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


def pval(x: float) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.2g}"


_MD_SPECIAL = re.compile(r"([\\`*<>|])")


def md(text: Any) -> str:
    """Text safe inside a Markdown table cell, on one line.

    Escapes what would break the table or turn into markup/HTML; leaves `_` and `[` alone,
    which GFM does not treat as markup inside words, so names stay readable in the raw file.
    """
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).splitlines()))


def fence(text: str, lang: str = "") -> str:
    """A fenced code block whose fence is longer than any backtick run inside the text."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


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


def display_rows(rows: list[dict], extra_columns: list[str]) -> tuple[list[str], list[list[str]]]:
    """The answer's table (shared by Markdown and HTML): what changed, the effect, the verdict."""
    columns = ["variant", "changes vs baseline", "mean ± std", "n", "Δ vs baseline [95% CI]",
               "P(worse / ROPE / better)", "verdict", "seeds needed"]
    cells = []
    for r in rows:
        base = r["verdict"] == "baseline"
        ci = "" if math.isnan(r["ci_low"]) else f" [{num(r['ci_low'])}, {num(r['ci_high'])}]"
        n = str(r["n"]) if base else f"{r['n']} ({r['n_paired']} paired)"
        needed = "—" if r["seeds_needed"] is None else str(r["seeds_needed"])
        verdict = r["verdict"] + (" (fragile)" if r["fragile"] else "")
        cells.append([r["variant"], "—" if base else (r["changes"] or "—"), f"{num(r['mean'])} ± {num(r['std'])}",
                      n, "—" if base else num(r["delta"]) + ci, "—" if base else _probs(r), verdict,
                      "—" if base else needed])
    return columns, cells


def evidence_rows(rows: list[dict], extra_columns: list[str]) -> tuple[list[str], list[list[str]]]:
    """The numbers behind each verdict, and the classic tests, for the reader who checks."""
    columns = ["variant", "reason", "p beyond ROPE (Holm)", "TOST p (Holm)", "level", "sign-flip p",
               "p no difference", "p (Holm)", "test", "look"] + extra_columns
    cells = []
    for r in rows:
        if r["verdict"] == "baseline":
            cells.append([r["variant"], "the reference"] + ["—"] * 8 + [num(r[c]) for c in extra_columns])
            continue
        cells.append([r["variant"], r["reason"] or "—", f"{pval(r['p_beyond'])} ({pval(r['p_beyond_holm'])})",
                      f"{pval(r['p_equiv'])} ({pval(r['p_equiv_holm'])})", pval(r["alpha"]), pval(r["p_signflip"]),
                      pval(r["p"]), pval(r["p_holm"]), r["test"] or "—", "—" if r["look"] is None else str(r["look"])]
                     + [num(r[c]) for c in extra_columns])
    return columns, cells


RULE = ("Δ is the mean per-seed difference to the baseline over the seeds both ran (paired). The posterior of "
        "the mean difference (Student-t, flat prior) gives P(worse / inside the ROPE / better). helps / hurts: "
        "more than 1 − level/2 of it beyond the ROPE on one side; equivalent: the TOST shows it inside the "
        "ROPE; both after Holm's correction across the variants (and alpha spent over the looks with seeds = "
        "auto); inconclusive otherwise. fragile: from 6 seeds, the exact sign-flip test does not confirm it.")


def seed_table(order: Sequence[str], scores: dict[str, dict[int, float]]) -> tuple[list[str], list[list[str]]]:
    seeds = sorted({seed for name in order for seed in scores.get(name, {})})
    columns = ["variant"] + [f"seed {s}" for s in seeds]
    cells = [[name] + [num(scores.get(name, {}).get(s)) for s in seeds] for name in order]
    return columns, cells


def md_table(columns: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(md(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in cells]
    return "\n".join(lines)


def _recipe_text(header: Mapping[str, str], recipe: str) -> str:
    return recipe or str(header.get("recipe") or "")


def markdown(
    title: str, header: Mapping[str, str], sheet: tuple[list[str], list[list[str]]],
    seeds: tuple[list[str], list[list[str]]], stats: Sequence[VariantStats], metric: str,
    higher_is_better: bool, failures: list[dict], plots: dict[str, Path], *,
    evidence: tuple[list[str], list[list[str]]], notes: Sequence[str], recipe: str,
) -> str:
    short, long = _header_parts(header)
    out = [f"# {md(title)}", ""]
    out += [f"> **{md(n)}**" for n in notes] + ([""] if notes else [])
    out += ["## Results", ""]
    out += [f"- **{verdict}**: {', '.join(md(v) for v in names) or '—'}" for verdict, names in
            _summary(stats).items()]
    out += ["", md_table(*sheet), ""]
    if "forest" in plots:
        out += [f"![forest]({plots['forest'].name})", ""]
    out += [RULE, "", "## The numbers behind each verdict", "", md_table(*evidence)]
    out += ["", "## Scores by seed", "", md_table(*seeds)]
    if failures:
        out += ["", "## Failed runs", ""]
        out.append(md_table(["variant", "seed", "reason"],
                             [[str(f.get("variant", "")), str(f.get("seed", "")), str(f.get("reason", ""))]
                              for f in failures]))
    others = {k: p for k, p in plots.items() if k != "forest"}
    if others:
        out += ["", "## Plots", ""]
        out += [f"![{key}]({p.name})" for key, p in others.items()]
    out += ["", "## Study", ""]
    keys = [k for k, _ in short]
    out += [f"- **{md(k)}**: {md(v)}" for k, v in short]
    if "metric" not in keys:
        out.append(f"- **metric**: {md(metric)} ({'higher' if higher_is_better else 'lower'} is better)")
    for key, value in long:
        out += ["", f"**{md(key)}**", "", fence(value)]
    text = _recipe_text(header, recipe)
    if text:
        out += ["", "## Full resolved recipe", "", fence(text, "toml")]
    return "\n".join(out) + "\n"


CSS = """
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


def html_table(columns: list[str], cells: list[list[str]], verdict_column: int | None = None,
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


def html_page(
    title: str, header: Mapping[str, str], sheet: tuple[list[str], list[list[str]]],
    seeds: tuple[list[str], list[list[str]]], stats: Sequence[VariantStats], metric: str,
    higher_is_better: bool, failures: list[dict], plots: dict[str, Path], *,
    evidence: tuple[list[str], list[list[str]]], notes: Sequence[str], recipe: str,
) -> str:
    e = html.escape
    short, long = _header_parts(header)
    # The answer first (fits a 1280x800 screen): summary, table, forest plot. Details after it.
    out = ["<!doctype html>", '<html><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
           f"<style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    out += [f'<p class="note">{e(n)}</p>' for n in notes]
    out.append('<ul class="summary" id="summary">')
    for verdict, names in _summary(stats).items():
        colour = VERDICT_COLOURS[verdict]
        out.append(f'<li><b style="color:{colour}">{e(verdict)}</b>: {e(", ".join(names)) or "—"}</li>')
    out.append("</ul>")
    out.append(html_table(*sheet, verdict_column=sheet[0].index("verdict"), css_class="results", left=(1,)))
    if "forest" in plots:
        out.append(f'<img src="{e(plots["forest"].name)}" class="forest" alt="forest">')
    out.append(f'<p class="rule">{e(RULE)}</p>')
    out += ["<h2>The numbers behind each verdict</h2>",
            html_table(*evidence, css_class="evidence", left=(1,))]
    out += ["<h2>Scores by seed</h2>", html_table(*seeds)]
    for key, p in plots.items():
        if key != "forest":
            out.append(f'<img src="{e(p.name)}" alt="{e(key)}">')
    if failures:
        out.append("<h2>Failed runs</h2>")
        out.append(html_table(["variant", "seed", "reason"],
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
