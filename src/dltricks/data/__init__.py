"""Datasets (MNIST-1D, digits, synthetic shapes, user files) and augmentation. Each dataset registers itself."""

from dltricks.data import digits, files, medical, mnist1d, shapes  # noqa: F401  (register)
from dltricks.data import multitask  # noqa: F401  (register)
from dltricks.data.registry import DataBundle, Target, datasets, load_data, register_dataset

__all__ = ["DataBundle", "Target", "datasets", "load_data", "register_dataset"]
