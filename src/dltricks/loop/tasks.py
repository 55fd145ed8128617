"""A task says how to score a model: its loss, its metrics and how to predict. The loop knows no more.

Classification lives here; segmentation in :mod:`dltricks.loop.segmentation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from dltricks.direction import higher_is_better  # noqa: F401  (callers import it from here too)


class Meter(Protocol):
    def update(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None: ...
    def compute(self) -> dict[str, float]: ...


class Task(Protocol):
    """What the loop needs: ``loss(logits, y)``, a fresh ``meter()`` per epoch and split, and
    ``predict(model, x)`` for evaluation (a sliding window for large volumes, say)."""

    higher_is_better: dict[str, bool]

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...
    def meter(self) -> Meter: ...
    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Classification:
    """Cross-entropy with optional label smoothing and class weights; accuracy and ECE."""

    label_smoothing: float = 0.0
    class_weights: list[float] = field(default_factory=list)
    ece_bins: int = 15
    higher_is_better: dict[str, bool] = field(
        default_factory=lambda: {"loss": False, "accuracy": True, "ece": False})

    def __post_init__(self) -> None:
        self._w = torch.tensor(self.class_weights, dtype=torch.float32) if self.class_weights else None

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = self._w.to(logits.device) if self._w is not None else None
        return F.cross_entropy(logits.float(), y, weight=w, label_smoothing=self.label_smoothing)

    def meter(self):
        from dltricks.loop.metrics import ClassificationMeter

        return ClassificationMeter(self.ece_bins)

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)
