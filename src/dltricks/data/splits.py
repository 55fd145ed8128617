"""Train/validation splits: carved from train, stratified by class, fixed by seed."""

from __future__ import annotations

import torch

from dltricks.errors import DltricksError


def carve_val(train: tuple[torch.Tensor, torch.Tensor], fraction: float, seed: int,
              stratify: bool = True, key: str = "data.val_fraction",
              ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Split ``(x, y)`` into ``(train, val)`` with ``fraction`` of each class in val.

    Stratifying keeps the class balance of a small validation set honest; the seed fixes the split
    so that every run of a recipe sees the same one. ``key`` names the recipe key in errors.
    """
    x, y = train
    n = len(y)
    g = torch.Generator().manual_seed(10_007 + seed)
    if stratify and y.dim() == 1:
        val_idx = []
        for c in torch.unique(y):
            idx = torch.nonzero(y == c).flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            k = int(round(len(idx) * fraction))
            val_idx.append(idx[:k])
        val = torch.cat(val_idx)
    else:
        val = torch.randperm(n, generator=g)[: int(round(n * fraction))]
    if len(val) == 0 or len(val) == n:
        part = "validation" if key.endswith("val_fraction") else "the held-out split"
        raise DltricksError(f"{key} = {fraction} leaves {len(val)} of {n} samples for {part}; "
                            "choose a fraction that keeps some in both")
    mask = torch.ones(n, dtype=torch.bool)
    mask[val] = False
    val = torch.sort(val).values
    return (x[mask], y[mask]), (x[val], y[val])
