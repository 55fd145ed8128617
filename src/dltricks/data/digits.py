"""scikit-learn's bundled 8x8 handwritten digits (1797 images), as (N, 1, 8, 8) images in [0, 1]."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from dltricks.data.bundle import DataBundle
from dltricks.data.registry import register_dataset
from dltricks.recipe import DataSpec


class DigitsSpec(DataSpec):
    name: str = "digits"
    shift_keys: ClassVar[tuple[str, ...] | None] = ()  # a [data.target] of corruptions only
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0, description="fixes the train/test split across runs")


@register_dataset("digits", DigitsSpec)
def load_digits(spec: DigitsSpec, seed: int) -> DataBundle:
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(range(len(y)), test_size=spec.test_fraction,
                                           random_state=spec.split_seed, stratify=d.target)
    return DataBundle(train=(x[idx_train], y[idx_train]), test=(x[idx_test], y[idx_test]),
                      num_classes=10, class_names=[str(i) for i in range(10)])
