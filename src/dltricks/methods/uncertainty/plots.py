"""Matplotlib PNGs of a predictive: the reliability diagram, and mean +- intervals over a 1D input."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["reliability_diagram", "interval_plot"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def reliability_diagram(rel: dict[str, list[float]], path: Path, title: str, ece: float, ece_adaptive: float) -> Path:
    """Bars of accuracy per equal-width confidence bin against the diagonal of perfect calibration,
    with the share of predictions per bin below."""
    plt = _plt()
    edges = rel["edges"]
    width = edges[1] - edges[0]
    centres = [a + width / 2 for a in edges[:-1]]
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    acc = [0.0 if a != a else a for a in rel["accuracy"]]
    conf = [c if c == c else m for c, m in zip(rel["confidence"], centres)]
    ax.bar(centres, acc, width=width * 0.95, color="#4c72b0", edgecolor="black", linewidth=0.4, label="accuracy")
    ax.bar(centres, [c - a for c, a in zip(conf, acc)], bottom=acc, width=width * 0.95, color="#dd8452",
           alpha=0.5, label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}\nECE {ece:.3f} (equal-width)  adaptive {ece_adaptive:.3f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    n = max(sum(rel["count"]), 1)
    hist.bar(centres, [c / n for c in rel["count"]], width=width * 0.95, color="grey")
    hist.set_xlabel("confidence")
    hist.set_ylabel("share")
    hist.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def interval_plot(x_grid: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor, train: tuple[torch.Tensor, torch.Tensor],
                  test: tuple[torch.Tensor, torch.Tensor], path: Path, title: str) -> Path:
    """The predictive mean and its central 50/90/95% intervals over a 1D input grid, with the
    training and test points; all (N,) in the input's and target's units."""
    from scipy.stats import norm

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    order = x_grid.argsort()
    xg, m, s = x_grid[order].numpy(), mean[order].numpy(), sd[order].numpy()
    for level, alpha in ((0.95, 0.15), (0.9, 0.2), (0.5, 0.3)):
        z = norm.ppf(0.5 + level / 2)
        ax.fill_between(xg, m - z * s, m + z * s, color="#4c72b0", alpha=alpha, linewidth=0,
                        label=f"{round(level * 100)}% interval")
    ax.plot(xg, m, color="#4c72b0", linewidth=1.5, label="predictive mean")
    ax.scatter(test[0].numpy(), test[1].numpy(), s=4, color="grey", alpha=0.5, label="test")
    ax.scatter(train[0].numpy(), train[1].numpy(), s=6, color="black", label="train")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
