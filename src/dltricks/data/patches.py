"""Segmentation data in common: the keys every segmentation dataset has, random patches with foreground
oversampling for volumes too large to train on whole, and the bundle a segmentation loader returns.

Patch training (as in nnU-Net): each training item is a random window of ``data.patch_size`` from one
volume; a share ``data.fg_oversample`` of the windows is centred near a foreground voxel so that small,
rare structures (lesions) are seen often enough. Evaluation runs on whole volumes with a sliding window
(:func:`dltricks.loop.segmentation.sliding_window`).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field
from torch.utils.data import Dataset

from dltricks.data.bundle import DataBundle
from dltricks.data.splits import carve_val
from dltricks.errors import DltricksError
from dltricks.recipe import DataSpec

__all__ = ["PatchDataset", "SegDataSpec", "check_labels", "segmentation_bundle"]


class SegDataSpec(DataSpec):
    """Keys of every segmentation dataset (shapes, nifti, arrays)."""

    patch_size: list[int] = Field(default_factory=list,
                                  description="train on random patches of this size, one int per spatial axis; "
                                              "[] = whole images. Evaluation then uses a sliding window")
    fg_oversample: float = Field(0.33, ge=0.0, le=1.0,
                                 description="share of patches centred on a foreground voxel")
    patches_per_epoch: int = Field(0, ge=0, description="patches per training epoch; 0 = one per training image")
    sw_overlap: float = Field(0.5, ge=0.0, lt=1.0, description="overlap of sliding windows at evaluation")


class PatchDataset(Dataset):
    """Random patches ``(x (C, *patch), y (*patch))`` from volumes ``x`` (N, C, *spatial), ``y`` (N, *spatial).

    Item ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: the same run sees the same patches,
    whichever worker or order asks for them. Item ``i`` comes from volume ``i % N``; with probability
    ``fg_fraction`` (when the volume has foreground) the patch holds a foreground voxel of a class drawn
    uniformly among those present, so rare classes are not drowned by common ones.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, patch_size: tuple[int, ...] | list[int],
                 fg_fraction: float = 0.33, length: int = 0, seed: int = 0):
        dims = y.dim() - 1
        if x.dim() != dims + 2 or x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[1:]:
            raise DltricksError(f"PatchDataset: image shape {tuple(x.shape)} and label shape {tuple(y.shape)} "
                                "do not fit; expected (N, C, *spatial) and (N, *spatial)")
        if len(patch_size) != dims:
            raise DltricksError(f"data.patch_size = {list(patch_size)} must have one size per spatial axis "
                                f"({dims} for images of shape {tuple(y.shape[1:])})")
        self.patch = tuple(int(p) for p in patch_size)
        # volumes smaller than a patch are padded once (image 0, label background)
        pad = [max(0, p - s) for p, s in zip(self.patch, y.shape[1:])]
        if any(pad):
            spec = [v for p in reversed(pad) for v in (p // 2, p - p // 2)]
            x = torch.nn.functional.pad(x, spec)
            y = torch.nn.functional.pad(y, spec)
        self.x, self.y = x, y
        self.fg_fraction = fg_fraction
        self.length = length or len(y)
        self.seed = seed
        self.epoch = 0
        # flat indices of each foreground class per volume, found once
        self._fg: list[dict[int, torch.Tensor]] = []
        for v in range(len(y)):
            flat = y[v].flatten()
            present = [int(c) for c in torch.unique(flat) if c > 0]
            self._fg.append({c: torch.nonzero(flat == c).flatten() for c in present})

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def location(self, index: int) -> tuple[int, tuple[int, ...], bool]:
        """(volume, start corner, whether foreground was forced) of item ``index`` this epoch."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        v = index % len(self.y)
        spatial = self.y.shape[1:]
        forced = bool(self._fg[v]) and rng.random() < self.fg_fraction
        if forced:
            classes = sorted(self._fg[v])
            idx = self._fg[v][classes[rng.integers(len(classes))]]
            centre = np.unravel_index(int(idx[rng.integers(len(idx))]), tuple(spatial))
            # jitter so the foreground is not always at the patch centre; it stays inside the patch
            start = [c - p // 2 + int(rng.integers(-(p // 4), p // 4 + 1)) for c, p in zip(centre, self.patch)]
            # clamp to the starts whose window holds the voxel and lies inside the volume
            start = [min(max(st, c - p + 1, 0), c, s - p) for st, c, s, p in
                     zip(start, centre, spatial, self.patch)]
        else:
            start = [int(rng.integers(0, s - p + 1)) for s, p in zip(spatial, self.patch)]
        return v, tuple(start), forced

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        v, start, _ = self.location(index)
        window = tuple(slice(s, s + p) for s, p in zip(start, self.patch))
        return self.x[(v, slice(None)) + window].clone(), self.y[(v,) + window].clone()


def check_labels(y: torch.Tensor, num_classes: int, where: str) -> None:
    """Raise a one-line error naming ``where`` if ``y`` has labels outside ``0..num_classes-1``."""
    if y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= num_classes:
        bad = sorted(int(v) for v in torch.unique(y) if v < 0 or v >= num_classes)[:5]
        raise DltricksError(f"{where}: label values {bad} outside 0..{num_classes - 1} "
                            f"(data.num_classes = {num_classes}); labels must be 0 (background) to num_classes-1")


def segmentation_bundle(spec: SegDataSpec, train: tuple[torch.Tensor, torch.Tensor],
                        test: tuple[torch.Tensor, torch.Tensor], seed: int, num_classes: int,
                        class_names: list[str] | None = None) -> DataBundle:
    """The bundle a segmentation loader returns. Validation is carved here (the same split
    :func:`load_data` would make) so that, with ``data.patch_size``, patches come from training volumes only.
    """
    dims = train[1].dim() - 1
    if spec.patch_size and len(spec.patch_size) != dims:
        raise DltricksError(f"data.patch_size = {spec.patch_size} must have {dims} sizes, one per spatial axis "
                            f"of images shaped {tuple(train[1].shape[1:])}")
    if spec.patch_size and any(p < 1 for p in spec.patch_size):
        raise DltricksError(f"data.patch_size = {spec.patch_size}: sizes must be positive")
    val = None
    if spec.val_fraction > 0:
        train, val = carve_val(train, spec.val_fraction, seed, stratify=False)
    bundle = DataBundle(train=train, test=test, val=val, task="segmentation", num_classes=num_classes,
                        class_names=class_names)
    if spec.patch_size:
        bundle.train_source = PatchDataset(train[0], train[1], spec.patch_size, spec.fg_oversample,
                                           spec.patches_per_epoch, seed)
    return bundle
