"""A recipe's ``train`` keys as the keyword arguments of :func:`~dltricks.loop.training.fit`."""

from __future__ import annotations

from typing import Any

__all__ = ["fit_options"]


def fit_options(recipe: Any) -> dict:
    """The recipe's ``train`` keys as keywords of :func:`~dltricks.loop.training.fit` (all but the seed,
    device, data and the run's own paths)."""
    t = recipe.train
    options = t.model_dump(exclude={"epochs", "batch_size", "lr", "optimizer", "schedule", "grad_clip",
                                    "label_smoothing", "device"})
    return dict(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, optimizer=t.optimizer, schedule=t.schedule,
                grad_clip=t.grad_clip, label_smoothing=t.label_smoothing, **options)
