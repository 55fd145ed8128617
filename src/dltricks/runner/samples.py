"""Per-sample test results a run leaves for the study report's bootstrap over test samples
(:mod:`dltricks.ledger.sample_bootstrap`): one bool per test sample, ``test_correct.npy``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from dltricks.data import DataBundle
from dltricks.ledger.sample_bootstrap import CORRECT_FILE
from dltricks.loop.tasks import Classification, Task


@torch.no_grad()
def save_correct(model: nn.Module, bundle: DataBundle, task: Task, device: torch.device, run_dir: Path,
                 batch_size: int = 256) -> Path | None:
    """Write which test samples ``task.predict`` classifies correctly; None (and nothing written) unless the
    task is plain classification on a test split of tensors ``(x (N, ...), labels (N,))``."""
    test = bundle.test
    if not isinstance(task, Classification) or not isinstance(test, tuple) or len(test) != 2:
        return None
    x, y = test
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or y.dim() != 1 or y.is_floating_point():
        return None
    was = model.training
    model.eval()
    try:
        preds = [task.predict(model, x[i:i + batch_size].to(device)).argmax(1).cpu()
                 for i in range(0, len(x), batch_size)]
    finally:
        model.train(was)
    path = run_dir / CORRECT_FILE
    np.save(path, (torch.cat(preds) == y.cpu()).numpy(), allow_pickle=False)
    return path
