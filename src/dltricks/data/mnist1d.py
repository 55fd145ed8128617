"""MNIST-1D (Greydanus 2020): ten 1D templates, randomly scaled, sheared, shifted and noised.

Generated offline with the ``mnist1d`` package's ``make_dataset`` (never its download path) and
cached as ``.npz`` keyed by the generator's arguments.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from dltricks.data.bundle import DataBundle
from dltricks.data.registry import register_dataset
from dltricks.errors import DltricksError
from dltricks.recipe import DataSpec


class Mnist1dSpec(DataSpec):
    name: str = "mnist1d"
    # generator keys a [data.target] may change to make a shifted domain (dltricks.data.domains)
    shift_keys: ClassVar[tuple[str, ...] | None] = (
        "num_samples", "train_split", "template_len", "padding", "scale_coeff", "max_translation",
        "corr_noise_scale", "iid_noise_scale", "shear_scale", "data_seed")
    num_samples: int = Field(5000, ge=20, description="train + test samples (10 classes)")
    train_split: float = Field(0.8, gt=0.0, lt=1.0)
    train_limit: int = Field(0, ge=0, description="keep only the first N training samples; 0 = all")
    template_len: int = Field(12, ge=2)
    padding: tuple[int, int] = (36, 60)
    scale_coeff: float = Field(0.4, ge=0.0)
    max_translation: int = Field(48, ge=0)
    corr_noise_scale: float = Field(0.25, ge=0.0)
    iid_noise_scale: float = Field(2e-2, ge=0.0)
    shear_scale: float = Field(0.75, ge=0.0)
    shuffle_seq: bool = False
    final_seq_length: int = Field(40, ge=4)
    data_seed: int = Field(42, description="the generator's seed; 42 gives the published dataset")


def cache_dir() -> Path:
    return Path(os.environ.get("DLTRICKS_CACHE", Path.home() / ".cache" / "dltricks"))


def _generator_args(spec: Mnist1dSpec) -> dict:
    """Every argument of ``mnist1d.data.get_dataset_args`` but its download URL, set from the recipe.
    Built here without importing ``mnist1d`` (which loads matplotlib and requests, seconds on a busy
    machine), so that a cache hit costs nothing; the generator is imported only to make new data."""
    return dict(num_samples=spec.num_samples, train_split=spec.train_split, template_len=spec.template_len,
                padding=list(spec.padding), scale_coeff=spec.scale_coeff, max_translation=spec.max_translation,
                corr_noise_scale=spec.corr_noise_scale, iid_noise_scale=spec.iid_noise_scale,
                shear_scale=spec.shear_scale, shuffle_seq=spec.shuffle_seq,
                final_seq_length=spec.final_seq_length, seed=spec.data_seed)


def generate(spec: Mnist1dSpec) -> dict[str, np.ndarray]:
    """The arrays ``x, y, x_test, y_test``, from the on-disk cache when present."""
    args = _generator_args(spec)
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"mnist1d-{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):
            pass  # a corrupt cache is regenerated, not trusted
    from mnist1d.data import get_dataset_args, make_dataset
    from mnist1d.utils import ObjectView

    unknown = set(get_dataset_args(as_dict=True)) - set(args) - {"url"}
    if unknown:  # a newer mnist1d with arguments this module does not set: its defaults would go unrecorded
        raise DltricksError(f"the installed mnist1d has generator arguments dltricks does not know: "
                            f"{', '.join(sorted(unknown))}")
    state = np.random.get_state()  # make_dataset seeds numpy's global RNG; leave the caller's intact
    try:
        d = make_dataset(ObjectView(args))
    finally:
        np.random.set_state(state)
    arrays = {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: parallel workers never read half a file
    return arrays


@register_dataset("mnist1d", Mnist1dSpec)
def load_mnist1d(spec: Mnist1dSpec, seed: int) -> DataBundle:
    a = generate(spec)
    x = torch.from_numpy(a["x"]).float().unsqueeze(1)  # (N, 1, L)
    y = torch.from_numpy(a["y"]).long()
    if spec.train_limit:
        x, y = x[: spec.train_limit], y[: spec.train_limit]
    x_test = torch.from_numpy(a["x_test"]).float().unsqueeze(1)
    y_test = torch.from_numpy(a["y_test"]).long()
    return DataBundle(train=(x, y), test=(x_test, y_test), num_classes=10,
                      class_names=[str(i) for i in range(10)])
