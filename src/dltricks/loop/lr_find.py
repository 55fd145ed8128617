"""The LR range test (Smith 2017; fastai's ``lr_find``): train a copy of the model for a few steps while the
learning rate grows exponentially, watch the smoothed loss, and suggest a rate.

    found = lr_range_test(model, (x, y), spec=recipe.train, task=task)
    found.suggestion, found.rule        # 0.0031, "the rate at the smoothed loss's minimum, divided by 10"
    plot_lr_range(found, "lr.png")

The model itself, torch's RNG and the data order of the run are left as they were: the test trains a deep
copy, under a forked RNG, on batches drawn by a generator of its own.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dltricks.errors import DltricksError
from dltricks.loop.batches import Batches, Source
from dltricks.loop.evaluation import autocast, resolve_device
from dltricks.loop.optim import build_optimizer
from dltricks.loop.tasks import Task
from dltricks.recipe import TrainSpec

__all__ = ["LRRange", "lr_range_test", "plot_lr_range", "RULE"]

RULE = "the learning rate at the smoothed loss's minimum, divided by 10"
BETA = 0.98  # the loss's exponential smoothing (fastai's), bias-corrected
STOP = 4.0   # the ramp stops once the smoothed loss exceeds this many times its minimum


@dataclass
class LRRange:
    """One range test: the rates tried, the loss of each step (raw and smoothed) and the suggestion."""

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggestion: float = 0.0
    rule: str = RULE
    stopped: str = ""  # why the ramp ended before its last step ("" = it ran them all)


def lr_range_test(model: nn.Module, train: Source, *, spec: TrainSpec, task: Task, seed: int = 0,
                  augment=None, start: float = 1e-7, end: float = 10.0, steps: int = 100,
                  device: str | torch.device | None = None) -> LRRange:
    """Ramp the learning rate from ``start`` to ``end`` over ``steps`` optimiser steps (``spec``'s optimiser,
    batch size and precision; ``task``'s loss, after ``augment``) on a copy of ``model``."""
    if not 0 < start < end:
        raise DltricksError(f"lr range test: the ramp must go up from a rate > 0 (start {start:g}, end {end:g})")
    if steps < 5:
        raise DltricksError(f"lr range test: {steps} steps are too few to see a minimum; take 5 or more (100 is usual)")
    dev = torch.device(device) if isinstance(device, str) else device or resolve_device(spec.device)
    net = copy.deepcopy(model).to(dev).train()
    cfg = spec.model_copy(update={"lr": start})
    opt = build_optimizer(net, cfg)
    gamma = (end / start) ** (1.0 / (steps - 1))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    batches = Batches(train, spec.batch_size, seed, dev)
    out, avg, best = LRRange(), 0.0, math.inf
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        epoch = 0
        while len(out.lrs) < steps:
            for x, y in batches.epoch(epoch, batches.new_order()):
                if augment is not None:
                    x, y = augment(x, y)
                with autocast(dev, spec.precision):
                    loss = task.loss(net(x), y)
                lv = loss.item()
                if not math.isfinite(lv):
                    out.stopped = f"the loss became NaN/Inf at lr {opt.param_groups[0]['lr']:.3g}"
                    break
                avg = BETA * avg + (1 - BETA) * lv
                smooth = avg / (1 - BETA ** (len(out.lrs) + 1))
                out.lrs.append(opt.param_groups[0]["lr"])
                out.losses.append(lv)
                out.smoothed.append(smooth)
                best = min(best, smooth)
                if len(out.lrs) > 1 and smooth > STOP * best:
                    out.stopped = f"the smoothed loss passed {STOP:g} times its minimum at lr {out.lrs[-1]:.3g}"
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if len(out.lrs) >= steps:
                    break
            if out.stopped:
                break
            epoch += 1
    if len(out.lrs) < 2:
        raise DltricksError(f"lr range test: {out.stopped or 'no step ran'} before a second step; start the ramp "
                            "lower")
    out.suggestion = suggest(out.lrs, out.smoothed)
    return out


def suggest(lrs: list[float], smoothed: list[float]) -> float:
    """:data:`RULE`: the rate at the smoothed loss's minimum, over 10 (a rate well inside the region where
    the loss still falls, not at the edge where it turns)."""
    i = min(range(len(smoothed)), key=smoothed.__getitem__)
    return lrs[i] / 10.0


def plot_lr_range(found: LRRange, path: str | Path, title: str = "LR range test") -> Path:
    """The loss against the learning rate (log axis), the smoothed curve and the suggestion, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(found.lrs, found.losses, color="0.75", lw=1, label="loss per step")
    ax.plot(found.lrs, found.smoothed, color="C0", lw=2, label="smoothed loss")
    ax.axvline(found.suggestion, color="C3", ls="--", label=f"suggestion {found.suggestion:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    top = min(max(found.smoothed), STOP * min(found.smoothed) * 1.2)
    ax.set_ylim(min(found.losses) * 0.9 if min(found.losses) > 0 else None, top)
    ax.set_title(f"{title}\nsuggestion: {RULE}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
