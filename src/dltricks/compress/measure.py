"""What a compressed model costs and scores, measured the same way for every variant and side by side.

- size: bytes of the weights file on disk (what a user ships), not a count of parameters;
- latency: median forward time at batch 1 and batch 64 on one CPU thread (see
  :func:`dltricks.analysis.cost.measure_latency`), with the models timed in interleaved rounds so
  that a busy machine slows all of them alike and the ratios stay meaningful;
- accuracy: the test metrics of :func:`dltricks.loop.training.evaluate`, and for classification a paired
  bootstrap over test samples of the accuracy change against the source model.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dltricks.analysis.cost import measure_latency
from dltricks.data import DataBundle
from dltricks.loop.tasks import Task
from dltricks.loop.training import evaluate

__all__ = ["BATCHES", "correct_per_sample", "latencies", "paired_bootstrap", "size_bytes", "test_metrics"]

BATCHES = (1, 64)


def size_bytes(path: str | Path) -> int:
    """Size of a weights file on disk."""
    return Path(path).stat().st_size


def latencies(models: Mapping[str, nn.Module], in_shape: Sequence[int], batches: Sequence[int] = BATCHES,
              rounds: int = 5, budget_s: float = 0.15, threads: int = 1) -> dict[str, dict[int, float]]:
    """``{name: {batch: median ms}}``. Each round times every model at every batch once (up to 10 passes
    within ``budget_s``); the order of models turns by one each round; the median over rounds is kept."""
    names = list(models)
    samples: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batches} for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            for b in batches:
                ms, _, _ = measure_latency(models[name], tuple(in_shape), b, repeats=10, budget_s=budget_s,
                                           threads=threads)
                samples[name][b].append(ms)
    return {n: {b: statistics.median(v) for b, v in per.items()} for n, per in samples.items()}


def test_metrics(model: nn.Module, bundle: DataBundle, task: Task, batch_size: int = 256) -> dict[str, float]:
    """``test_*`` metrics on the CPU (int8 kernels exist only there)."""
    return {f"test_{k}": v for k, v in evaluate(model, bundle.test, task, batch_size=batch_size,
                                                 device=torch.device("cpu")).items()}


@torch.no_grad()
def correct_per_sample(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], batch_size: int = 256
                       ) -> np.ndarray | None:
    """Boolean array: was each test sample classified correctly? None unless ``data`` is ``(x, labels)``."""
    if not isinstance(data, tuple) or data[1].dim() != 1 or torch.is_floating_point(data[1]):
        return None
    x, y = data
    was = model.training
    model.eval()
    preds = torch.cat([model(x[i:i + batch_size].cpu()).argmax(1) for i in range(0, len(x), batch_size)])
    model.train(was)
    return (preds == y.cpu()).numpy()


def paired_bootstrap(base: np.ndarray, other: np.ndarray, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """Accuracy of ``other`` minus ``base`` on the same test samples, with a percentile bootstrap CI
    (samples resampled with replacement, both models on the same draw)."""
    diff = other.astype(np.float64) - base.astype(np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(n_boot, len(diff)))
    means = diff[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(diff.mean()), float(lo), float(hi)
