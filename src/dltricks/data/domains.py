"""Target domains: ``[data.target]``, a second configuration of the same dataset, shifted.

The target's training inputs become ``bundle.target_unlabelled`` without their labels (a domain
adaptation method sees only them); its own validation and test splits (``bundle.target_val``,
``bundle.target_test``) are labelled and used only for ``test_target_*`` metrics and the clearly
named ``oracle_*`` curves. Model selection and early stopping stay on the source validation split.

Two ways to shift, which combine:

- the dataset's generator keys (``Mnist1dSpec.shift_keys``: noise scales, shear, scale, translation,
  ...): the target is generated again with those keys changed. Unless the target names its own
  ``data_seed``, it gets the source's plus 1, so that its samples are fresh draws, not the source's
  samples transformed;
- corruptions of every target input (``noise``, ``blur``, ``rotate``, ``invert``), for signals,
  images and volumes (1D/2D/3D), fixed by ``corruption_seed``. For a dataset without a generator
  (digits) the target is the same images corrupted, as MNIST-M is MNIST with other backgrounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from dltricks.data.bundle import DataBundle
from dltricks.errors import DltricksError
from dltricks.recipe import DataSpec, DomainSpec

__all__ = ["add_target", "corrupt"]


def add_target(bundle: DataBundle, spec: DataSpec, seed: int,
               load: Callable[[DataSpec, int], DataBundle]) -> DataBundle:
    """Fill ``bundle.target_*`` from ``spec.target``; ``load`` is the dataset's loader."""
    from dltricks.data.splits import carve_val
    from dltricks.data.subsets import keep_classes

    if bundle.task != "classification" or bundle.train[1].dim() != 1:
        raise DltricksError(f"data.target needs a classification dataset; {spec.name!r} here is {bundle.task}")
    t: DomainSpec = spec.target
    extra = dict(t.model_extra or {})
    if extra and "data_seed" in type(spec).model_fields and "data_seed" not in extra:
        extra["data_seed"] = spec.data_seed + 1  # type: ignore[attr-defined]
    tspec = type(spec).model_validate({**spec.model_dump(exclude={"target"}), **extra,
                                       "classes": [], "labels_per_class": 0})
    tb = load(tspec, seed)
    if spec.classes:
        keep_classes(tb, spec.classes)
    train = tb.train
    val = tb.val
    if val is None and spec.val_fraction > 0:
        # not stratified: the target's training labels play no part in any choice
        train, val = carve_val(train, spec.val_fraction, seed, stratify=False, key="data.val_fraction (target)")
    if tuple(train[0].shape[1:]) != bundle.in_shape:
        raise DltricksError(f"data.target gives inputs of shape {tuple(train[0].shape[1:])} but the source's "
                            f"are {bundle.in_shape}; a target domain must fit the same model")
    g = torch.Generator().manual_seed(30_011 + t.corruption_seed)
    bundle.target_unlabelled = corrupt(train[0], t, g).clone()  # labels dropped here, never kept
    bundle.target_val = (corrupt(val[0], t, g), val[1]) if val is not None else None
    bundle.target_test = (corrupt(tb.test[0], t, g), tb.test[1])
    return bundle


def corrupt(x: torch.Tensor, t: DomainSpec, g: torch.Generator) -> torch.Tensor:
    """``x`` (N, C, *spatial) with the target's corruptions: rotate, blur, invert, then noise."""
    dims = x.dim() - 2
    if dims < 1 and (t.blur or t.rotate):
        raise DltricksError("data.target.blur and rotate need signals, images or volumes (N, C, *spatial)")
    if t.rotate:
        if dims == 1:
            raise DltricksError("data.target.rotate needs 2D or 3D data; for 1D signals use the generator "
                                "keys (e.g. shear_scale) or noise, blur, invert")
        x = _rotate(x, t.rotate)
    if t.blur:
        x = _blur(x, t.blur)
    if t.invert:
        flat = x.flatten(1)
        view = (-1, *[1] * (x.dim() - 1))
        x = flat.amax(1).view(view) + flat.amin(1).view(view) - x
    if t.noise:
        x = x + t.noise * torch.randn(x.shape, generator=g)
    return x


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable gaussian blur over every spatial axis, reflecting at the borders."""
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    for axis in range(2, x.dim()):
        moved = x.movedim(axis, -1)
        shape = moved.shape
        flat = moved.reshape(-1, 1, shape[-1])
        pad = min(r, shape[-1] - 1)
        flat = F.pad(flat, (pad, pad), mode="reflect") if pad > 0 else flat
        kk = k[r - pad: r + pad + 1] if pad < r else k
        flat = F.conv1d(flat, (kk / kk.sum()).view(1, 1, -1))
        x = flat.reshape(shape).movedim(-1, axis)
    assert x.shape[1] == c
    return x


def _rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """A fixed rotation in the last two spatial axes (in-plane for volumes), bilinear, zero fill."""
    a = math.radians(degrees)
    n, dims = x.shape[0], x.dim() - 2
    h, w = x.shape[-2], x.shape[-1]
    # rotation in pixel units, conjugated into affine_grid's normalised coordinates (rigid on non-squares)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    half = torch.diag(torch.tensor([w / 2, h / 2], dtype=torch.float64))
    m = torch.linalg.inv(half) @ rot @ half
    theta = torch.zeros(1, 2, 3, dtype=torch.float64)
    theta[0, :, :2] = m
    planes = x.movedim(2, 1).reshape(-1, x.shape[1], h, w) if dims == 3 else x
    grid = F.affine_grid(theta.float().expand(len(planes), 2, 3), list(planes.shape), align_corners=False)
    out = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if dims == 3:
        out = out.reshape(n, x.shape[2], x.shape[1], h, w).movedim(1, 2)
    return out
