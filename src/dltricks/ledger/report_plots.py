"""The ablation report's plots: the forest plot (paired differences, CIs and the ROPE band), every
seed's score per variant, and the mean learning curves. Drawn on matplotlib.figure.Figure, never
pyplot, so a caller's backend and global figure state are left alone."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dltricks.ledger.atomic import save_figure
from dltricks.ledger.variant_stats import VariantStats

VERDICT_COLOURS = {
    "helps": "#1a9850",
    "hurts": "#d73027",
    "equivalent": "#2c7fb8",
    "inconclusive": "#8c8c8c",
    "baseline": "#525252",
}
# The sheet shows the per-epoch curve that matches the metric; these are tried in order.
CURVE_PREFIXES = ("val_", "valid_", "validation_", "test_")


def mpl_text(text: str) -> str:
    """A label matplotlib draws literally ('$' would start mathtext and can raise on odd names)."""
    return str(text).replace("$", r"\$")


def pick_curve(names: set[str], metric: str) -> str | None:
    """The validation curve of ``metric`` if recorded, else any validation curve, else any curve."""
    for candidate in [p + metric for p in CURVE_PREFIXES] + [metric]:
        if candidate in names:
            return candidate
    validation = sorted(n for n in names if n.startswith(CURVE_PREFIXES))
    if validation:
        return validation[0]
    return min(names) if names else None


def _colours(order: Sequence[str]) -> dict[str, Any]:
    """One colour per variant, the same in every plot."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(order) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(order)}


def plot_forest(path: Path, stats: Sequence[VariantStats], metric: str, higher_is_better: bool) -> Path:
    from matplotlib.figure import Figure

    rows = [s for s in stats if s.verdict != "baseline"]
    baseline = next((s.variant for s in stats if s.verdict == "baseline"), "baseline")
    fig = Figure(figsize=(8, 1.3 + 0.4 * max(1, len(rows))))
    ax = fig.add_subplot()
    rope = next((s.rope for s in stats if not math.isnan(s.rope)), math.nan)
    if not math.isnan(rope) and rope > 0:
        # The region of practical equivalence: an interval inside it is "equivalent".
        ax.axvspan(-rope, rope, color="#2c7fb8", alpha=0.15, lw=0, label=mpl_text(f"ROPE ±{rope:.3g}"))
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
        ax.set_yticks(range(len(rows)), [mpl_text(s.variant) for s in reversed(rows)])
        ax.set_ylim(-0.7, len(rows) - 0.3)
    better = "right" if higher_is_better else "left"
    ax.set_xlabel(mpl_text(f"{metric}: variant − {baseline}, paired mean and 95% CI (better to the {better})"))
    handles = [ax.plot([], [], "o", color=c, label=v)[0] for v, c in VERDICT_COLOURS.items() if v != "baseline"]
    handles += [h for h in ax.get_legend_handles_labels()[0] if h.get_label().startswith("ROPE")]
    # Outside the axes: inside, it would hide a variant's interval.
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def plot_seeds(path: Path, order: Sequence[str], scores: dict[str, dict[int, float]], metric: str) -> Path:
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
    ax.set_xticks(x, [mpl_text(n) for n in order], rotation=30 if len(order) > 4 else 0, ha="right"
                  if len(order) > 4 else "center")
    ax.set_xlim(-0.5, max(0.5, len(order) - 0.5))
    ax.set_ylabel(mpl_text(metric))
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


def plot_curves(
    path: Path, order: Sequence[str], curves: Mapping[str, Mapping[int, Mapping[str, Sequence[float]]]],
    metric: str,
) -> Path | None:
    """Mean curve per variant over faint per-seed curves; a train-loss panel too when recorded."""
    names = {name for by_seed in curves.values() for run in by_seed.values() for name in run}
    main = pick_curve(names, metric)
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
                    label=mpl_text(f"{name} (n={len(runs)})"))
        ax.set_xlabel("epoch")
        ax.set_ylabel(mpl_text(curve))
        ax.grid(alpha=0.3)
        if k == 0 and ax.get_legend_handles_labels()[0]:  # same colours in every panel: one legend
            ax.legend(fontsize="small", frameon=False)
    return save_figure(fig, path)
