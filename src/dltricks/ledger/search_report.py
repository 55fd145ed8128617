"""The report of a tuning or architecture search: a trial sheet (CSV) and an HTML page with plots.

``write_search_report`` writes into one folder:

- ``trials.csv``      one row per trial: state, objective values, configuration, cost, failure;
- ``report.html``     the header (study, space, best, the re-run verdict), the sheet and the plots;
- ``history.png``     every complete trial's score and the best so far, trial by trial;
- ``importance.png``  fANOVA importance of each key (when there were enough trials);
- ``parallel.png``    parallel coordinates: one line per trial across the keys, coloured by its score;
- ``front.png``       the first objective against the second (or against FLOPs), the Pareto front marked.

Every file is replaced atomically, so the report can be rewritten while workers still run.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dltricks.ledger.atomic import atomic_write, save_figure
from dltricks.ledger.writers import csv_table

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.7em; text-align: left; }
dl.header dt { font-weight: bold; float: left; clear: left; width: 10em; }
dl.header dd { margin-left: 11em; }
img { max-width: 100%; display: block; margin: 1em 0; }
tr.best td { font-weight: bold; }
.pruned, .failed { color: #8c8c8c; }
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _complete(trials: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [t for t in trials if t["values"] and all(math.isfinite(v) for v in t["values"])]


# ---- plots ---------------------------------------------------------------------------------------

def _figure(w: float = 7.0, h: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    return fig, fig.add_subplot()


def _plot_history(path: Path, trials, metric: str, maximize: bool) -> Path:
    fig, ax = _figure()
    done = sorted(_complete(trials), key=lambda t: t["trial"])
    xs = [t["trial"] for t in done]
    ys = [t["values"][0] for t in done]
    ax.scatter(xs, ys, s=18, color="#4575b4", label="trial", zorder=3)
    best, line = None, []
    for y in ys:
        best = y if best is None or (y > best if maximize else y < best) else best
        line.append(best)
    ax.step(xs, line, where="post", color="#d73027", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by trial")
    ax.legend(loc="best")
    return save_figure(fig, path)


def _plot_importance(path: Path, importances: Mapping[str, float], metric: str) -> Path:
    fig, ax = _figure(7.0, 0.5 + 0.4 * len(importances))
    items = sorted(importances.items(), key=lambda kv: kv[1])
    ax.barh([k for k, _ in items], [v for _, v in items], color="#4575b4")
    ax.set_xlabel(f"fANOVA importance for {metric}")
    return save_figure(fig, path)


def _axis_values(trials, key: str) -> tuple[list[float], list[tuple[float, str]]]:
    """A key's values on a [0, 1] axis and the axis's labels as (position, text): numbers scaled (log
    where all are positive and span a decade) and labelled at their ends, choices by their index."""
    raw = [t["config"].get(key) for t in trials]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw):
        xs = [float(v) for v in raw]
        log = min(xs) > 0 and max(xs) / min(xs) >= 10
        scaled = [math.log10(v) for v in xs] if log else xs
        lo, hi = min(scaled), max(scaled)
        ends = [(0.0, _fmt(min(xs)))] + ([(1.0, _fmt(max(xs)))] if hi > lo else [])
        return [(x - lo) / (hi - lo) if hi > lo else 0.5 for x in scaled], ends if hi > lo else [(0.5, _fmt(xs[0]))]
    labels = sorted({json.dumps(v) for v in raw})
    n = max(len(labels) - 1, 1)
    pos = [i / n if len(labels) > 1 else 0.5 for i in range(len(labels))]
    return [pos[labels.index(json.dumps(v))] for v in raw], list(zip(pos, labels))


def _plot_parallel(path: Path, trials, keys: Sequence[str], metric: str, maximize: bool) -> Path:
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    done = _complete(trials)
    fig, ax = _figure(max(7.0, 1.6 * (len(keys) + 1)), 4.5)
    scores = [t["values"][0] for t in done]
    norm = Normalize(min(scores), max(scores) if max(scores) > min(scores) else min(scores) + 1e-9)
    cmap = colormaps["viridis" if maximize else "viridis_r"]
    columns = [_axis_values(done, k) for k in keys]
    lo, hi = min(scores), max(scores)
    score_axis = [(s - lo) / (hi - lo) if hi > lo else 0.5 for s in scores]
    for t in sorted(range(len(done)), key=lambda i: scores[i] if maximize else -scores[i]):  # best drawn last
        ys = [c[0][t] for c in columns] + [score_axis[t]]
        ax.plot(range(len(keys) + 1), ys, color=cmap(norm(scores[t])), alpha=0.8, lw=1.2)
    for j, (_, ticks) in enumerate(columns):
        ax.axvline(j, color="#999", lw=0.8)
        for y, label in ticks:
            ax.text(j, y, f" {label}", fontsize=7, va="center")
    ax.axvline(len(keys), color="#999", lw=0.8)
    ax.set_xticks(range(len(keys) + 1), [*keys, metric], rotation=20, ha="right")
    ax.set_yticks([])
    ax.set_title("parallel coordinates (scaled per axis; colour: score)")
    return save_figure(fig, path)


def _plot_front(path: Path, trials, x_name: str, x_of, y_name: str, directions: Sequence[str],
                pareto: set[int]) -> Path:
    fig, ax = _figure()
    pts = [(x_of(t), t["values"][0], t["trial"]) for t in _complete(trials) if x_of(t) is not None]
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18, color="#8c8c8c", label="trial")
    front = sorted((p for p in pts if p[2] in pareto), key=lambda p: p[0])
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], "o-", color="#d73027", label="Pareto front")
    ax.set_xlabel(f"{x_name} ({'higher' if directions[1] == 'maximize' else 'lower'} is better)")
    ax.set_ylabel(f"{y_name} ({'higher' if directions[0] == 'maximize' else 'lower'} is better)")
    if pts and min(p[0] for p in pts) > 0:
        ax.set_xscale("log")
    ax.legend(loc="best")
    ax.set_title(f"{y_name} against {x_name}")
    return save_figure(fig, path)


def _front_of(points: list[tuple[float, float, int]], directions: Sequence[str]) -> set[int]:
    sign = [1.0 if d == "maximize" else -1.0 for d in directions]
    out = set()
    for y, x, n in points:
        if not any(sign[0] * y2 >= sign[0] * y and sign[1] * x2 >= sign[1] * x and (y2, x2) != (y, x)
                   for y2, x2, _ in points):
            out.add(n)
    return out


# ---- the page -------------------------------------------------------------------------------------

def write_search_report(out: str | Path, *, title: str, header: Mapping[str, str], objectives: Sequence[str],
                        directions: Sequence[str], trials: Sequence[Mapping[str, Any]], keys: Sequence[str],
                        importances: Mapping[str, float], pareto: Sequence[int]) -> dict[str, Path]:
    """Write the sheet, the plots and the HTML page into ``out``; return their paths by name.

    ``trials``: dicts with ``trial`` (number), ``state``, ``values`` (one per objective, or None),
    ``config`` ({key: value}), ``cost`` ({"params", "flops"}, may be empty) and ``failure``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    metric, maximize = objectives[0], directions[0] == "maximize"
    done = _complete(trials)
    if done:
        paths["history"] = _plot_history(out / "history.png", trials, metric, maximize)
        if len(done) >= 2 and keys:
            paths["parallel"] = _plot_parallel(out / "parallel.png", trials, keys, metric, maximize)
    if importances:
        paths["importance"] = _plot_importance(out / "importance.png", importances, metric)
    if len(objectives) > 1 and done:
        paths["front"] = _plot_front(out / "front.png", trials, objectives[1], lambda t: t["values"][1], metric,
                                     directions, set(pareto))
    elif done and any(t.get("cost", {}).get("flops") for t in done):
        pts = [(t["values"][0], t["cost"]["flops"], t["trial"]) for t in done if t.get("cost", {}).get("flops")]
        front = _front_of(pts, [directions[0], "minimize"])
        paths["front"] = _plot_front(out / "front.png", trials, "FLOPs", lambda t: t.get("cost", {}).get("flops"),
                                     metric, [directions[0], "minimize"], front)

    costs = sorted({k for t in trials for k in t.get("cost", {})})
    columns = ["trial", "state", *objectives, *keys, *costs, "failure"]

    def row(t: Mapping[str, Any]) -> list[Any]:
        values = t["values"] or [math.nan] * len(objectives)
        return [t["trial"], t["state"], *values, *(json.dumps(t["config"].get(k)) if isinstance(
            t["config"].get(k), list) else t["config"].get(k, "") for k in keys),
            *(t.get("cost", {}).get(c, "") for c in costs), t.get("failure", "")]

    ordered = sorted(trials, key=lambda t: t["trial"])
    paths["csv"] = out / "trials.csv"
    atomic_write(paths["csv"], csv_table(columns, [row(t) for t in ordered]))

    e = html.escape
    best_trial = header.get("best", "").split(":")[0].removeprefix("t")
    parts = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{e(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>", '<dl class="header">']
    parts += [f"<dt>{e(k)}</dt><dd>{e(str(v))}</dd>" for k, v in header.items()]
    parts.append("</dl>")
    for key in ("history", "front", "importance", "parallel"):
        if key in paths:
            parts.append(f'<img src="{e(paths[key].name)}" alt="{e(key)}">')
    parts.append("<h2>Trials</h2><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in columns) + "</tr>")
    for t in ordered:
        cls = "best" if str(t["trial"]) == best_trial else t["state"]
        parts.append(f'<tr class="{cls}">' + "".join(f"<td>{e(_fmt(v))}</td>" for v in row(t)) + "</tr>")
    parts.append("</table></body></html>")
    paths["html"] = out / "report.html"
    atomic_write(paths["html"], "\n".join(parts))
    return paths
