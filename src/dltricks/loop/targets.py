"""Regression and multi-task targets: one model output per regression target and K per classification
target, one loss per target, metrics per target in the target's own units.

``y`` is (N, T) float32, one column per :class:`~dltricks.data.registry.Target` (class ids as floats);
the model's output (N, sum of outputs) is split into one slice per target, which is exactly one linear
head per task on the shared backbone. With ``normalize`` each regression target is z-scored by its
training mean and std inside the loss, so the model predicts standardised values; metrics convert back.

Metrics: with one target ``loss`` and ``mae, rmse, r2`` (or ``accuracy``); with several,
``<target>_<metric>`` for each and the weighted total ``loss``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dltricks.errors import DltricksError

_LOSSES = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss}


@dataclass
class Targets:
    """The task of a bundle with ``targets``: ``task_losses`` per target, their weighted sum as ``loss``."""

    targets: list  # list[Target]
    regression_loss: str = "mse"
    weights: list[float] = field(default_factory=list)
    mean: torch.Tensor | None = None  # (T,) per column (0 for classification columns)
    std: torch.Tensor | None = None
    label_smoothing: float = 0.0
    higher_is_better: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = len(self.targets)
        if self.weights and len(self.weights) != t:
            names = ", ".join(x.name for x in self.targets)
            raise DltricksError(f"train.task_weights has {len(self.weights)} values but the data has {t} "
                                f"targets ({names})")
        self.w = list(self.weights) or [1.0] * t
        self.mean = self.mean if self.mean is not None else torch.zeros(t)
        self.std = self.std if self.std is not None else torch.ones(t)
        self.slices, start = [], 0
        for tg in self.targets:
            self.slices.append(slice(start, start + tg.outputs))
            start += tg.outputs
        self.higher_is_better = {"loss": False, "accuracy": True, "r2": True, "mae": False, "rmse": False}
        self.multi = t > 1

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.targets]

    def task_losses(self, out: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """One unweighted loss per target; regression on standardised targets when normalising."""
        out = out.float()
        losses = []
        for j, (tg, sl) in enumerate(zip(self.targets, self.slices)):
            if tg.kind == "classification":
                losses.append(F.cross_entropy(out[:, sl], y[:, j].long(), label_smoothing=self.label_smoothing))
            else:
                m, s = self.mean[j].to(out.device), self.std[j].to(out.device)
                losses.append(_LOSSES[self.regression_loss](out[:, sl.start], (y[:, j] - m) / s))
        return losses

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return sum(w * loss for w, loss in zip(self.w, self.task_losses(out, y)))

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    def meter(self) -> TargetsMeter:
        return TargetsMeter(self)


class TargetsMeter:
    """Per-target sums over batches; regression metrics in the targets' original units."""

    def __init__(self, task: Targets) -> None:
        self.task = task
        self.n = 0
        self.loss_sum = 0.0
        self.pred: list[list[torch.Tensor]] = [[] for _ in task.targets]
        self.true: list[list[torch.Tensor]] = [[] for _ in task.targets]

    @torch.no_grad()
    def update(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        t = self.task
        self.loss_sum += float(loss) * len(y)
        self.n += len(y)
        for j, (tg, sl) in enumerate(zip(t.targets, t.slices)):
            if tg.kind == "classification":
                self.pred[j].append(out[:, sl].argmax(1).float().cpu())
            else:
                self.pred[j].append(out[:, sl.start].float().cpu() * t.std[j] + t.mean[j])
            self.true[j].append(y[:, j].float().cpu())

    def compute(self) -> dict[str, float]:
        if self.n == 0:
            return {}
        out = {"loss": self.loss_sum / self.n}
        for j, tg in enumerate(self.task.targets):
            p, y = torch.cat(self.pred[j]), torch.cat(self.true[j])
            pre = f"{tg.name}_" if self.task.multi else ""
            if tg.kind == "classification":
                out[pre + "accuracy"] = (p == y).float().mean().item()
            else:
                err = p - y
                ss = ((y - y.mean()) ** 2).sum().item()
                out[pre + "mae"] = err.abs().mean().item()
                out[pre + "rmse"] = err.pow(2).mean().sqrt().item()
                out[pre + "r2"] = 1.0 - err.pow(2).sum().item() / ss if ss > 0 else 0.0
        return out


def target_stats(y: torch.Tensor, targets: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (T,) of the regression columns of training ``y``; 0 and 1 for class columns."""
    mean, std = torch.zeros(len(targets)), torch.ones(len(targets))
    for j, tg in enumerate(targets):
        if tg.kind == "regression":
            mean[j] = y[:, j].float().mean()
            s = y[:, j].float().std()
            std[j] = s if s > 0 else 1.0
    return mean, std


def make_targets_task(recipe, bundle) -> Targets:
    t = recipe.train
    if t.loss != "ce":
        raise DltricksError(f"train.loss = {t.loss!r} is for segmentation; targets use train.regression_loss")
    mean = std = None
    if t.normalize_targets:
        mean, std = target_stats(bundle.train[1], bundle.targets)
    return Targets(bundle.targets, t.regression_loss, t.task_weights, mean, std, t.label_smoothing)
