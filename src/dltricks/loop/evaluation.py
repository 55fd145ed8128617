"""Where the loop runs and how it scores: the device, mixed precision, and :func:`evaluate`."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from dltricks.errors import DltricksError
from dltricks.loop.batches import Batches, Source
from dltricks.loop.tasks import Classification, Task

__all__ = ["autocast", "eval_batch_size", "evaluate", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA, else Apple MPS, else CPU) or a device this machine has; anything else is one line."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DltricksError(f"train.device = {name!r} but no CUDA device is available; use auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DltricksError(f"train.device = {name!r} but this machine has {torch.cuda.device_count()} CUDA "
                            f"device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}; use auto, cuda or cpu")
    mps = getattr(torch.backends, "mps", None)
    if dev.type == "mps" and not (mps is not None and mps.is_available()):
        raise DltricksError(f"train.device = {name!r} but no Apple MPS device is available; use auto or cpu")
    return dev


_FP32 = contextlib.nullcontext()  # reusable: full precision costs no context object per step


def autocast(dev: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in: nothing for fp32, else autocast to bf16 or fp16 (CUDA only)."""
    if precision == "fp32":
        return _FP32
    if precision == "fp16" and dev.type != "cuda":
        raise DltricksError("train.precision = 'fp16' needs CUDA (it relies on loss scaling); use bf16 on CPU")
    return torch.autocast(dev.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@torch.no_grad()
def evaluate(model: nn.Module, data: Source, task: Task | None = None, *, batch_size: int = 256,
             device: str | torch.device = "auto", precision: str = "fp32") -> dict[str, float]:
    """Metrics of ``model`` on ``data`` (``loss``, ``accuracy``, ``ece`` for classification)."""
    task = task or Classification()
    dev = resolve_device(device) if isinstance(device, str) else device
    was_training = model.training
    model.eval()
    meter = task.meter()
    batches = Batches(data, batch_size, 0, dev, fold_single=False)
    with autocast(dev, precision):
        for x, y in batches.epoch(0, torch.arange(batches.n)):
            logits = task.predict(model, x)
            meter.update(logits.float(), y, task.loss(logits, y))
    model.train(was_training)
    return meter.compute()


def eval_batch_size(train_batch_size: int) -> int:
    """Evaluation holds no gradients, so it can take larger batches; scaled from the training batch so
    that a 3D segmentation recipe with batch 2 does not try 256 volumes at once."""
    return 4 * train_batch_size
