"""Datasets (MNIST-1D, digits, synthetic shapes; the user's tables, images, sounds and data functions) and
augmentation. Each dataset registers itself."""

from dltricks.data import (  # noqa: F401  (register)
    audio,
    digits,
    files,
    function,
    images,
    medical,
    mnist1d,
    multitask,  # noqa: F401  (register)
    shapes,
    sinusoid,
    toy1d,  # noqa: F401  (register)
    zsl1d,
)
from dltricks.data.bundle import DataBundle, Target
from dltricks.data.registry import datasets, load_data, register_dataset

__all__ = ["DataBundle", "Target", "datasets", "load_data", "register_dataset"]
