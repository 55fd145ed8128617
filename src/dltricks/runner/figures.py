"""A completed run's figures: each learning set-up draws its own into the run's folder (the MAML paper's
pre/post-update curves, the zero-shot bars, reliability diagrams are drawn with the metrics)."""

from __future__ import annotations

from dltricks.methods.registry import Setup, Trained

__all__ = ["draw_figures"]


def draw_figures(setups: list[Setup], run: Trained, metrics: dict[str, float]) -> None:
    for s in setups:
        s.figures(run, metrics)
