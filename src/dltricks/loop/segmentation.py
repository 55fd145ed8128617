"""Semantic segmentation: CE / Dice / CE+Dice losses, Dice, IoU and HD95 metrics, sliding-window inference.

Shapes: logits (N, K, *spatial) with K classes (0 = background), labels (N, *spatial) int64.

    task = make_segmentation_task(recipe, bundle)
    loss = task.loss(model(x), y)
    meter = task.meter(); meter.update(task.predict(model, x), y, loss); meter.compute()
    # -> {"loss", "dice", "iou", "edge_dice", "dice_1", ..., "hd95"}

Dice is computed per case and class, as in medical benchmarks (the Decathlon, nnU-Net): a case where a
class is absent and not predicted says nothing about that class and is skipped; one where it is absent
but predicted scores 0. ``dice`` and ``iou`` average the foreground classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dltricks.errors import DltricksError

__all__ = ["Segmentation", "SegmentationMeter", "confusion", "dice_loss", "hausdorff95", "make_segmentation_task",
           "sliding_window", "soft_dice"]


# ---- losses -------------------------------------------------------------------------------------

def soft_dice(logits: torch.Tensor, y: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """(K,) soft Dice per class of softmax(logits) against labels, pooled over the batch ("batch Dice"):
    pooling keeps the loss defined on patches where a class is absent."""
    k = logits.shape[1]
    p = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(y, k).movedim(-1, 1).to(p.dtype)
    dims = (0, *range(2, logits.dim()))
    inter = (p * onehot).sum(dims)
    return (2 * inter + smooth) / (p.sum(dims) + onehot.sum(dims) + smooth)


def dice_loss(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None,
              include_background: bool = False) -> torch.Tensor:
    """1 - (weighted) mean soft Dice (Milletari et al. 2016). It scores overlap, not pixels, so a small
    lesion counts as much as a large organ: the remedy for class imbalance that pixel-wise CE lacks."""
    d = soft_dice(logits, y)
    if not include_background:
        d = d[1:]
        weights = weights[1:] if weights is not None else None
    if weights is None:
        return 1 - d.mean()
    return 1 - (d * weights).sum() / weights.sum().clamp_min(1e-12)


# ---- metrics ------------------------------------------------------------------------------------

def confusion(pred: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """(N, K, K) confusion matrix per case, [true, predicted], from label maps (N, *spatial)."""
    n = y.shape[0]
    idx = (y.flatten(1) * k + pred.flatten(1)) + torch.arange(n, device=y.device).unsqueeze(1) * k * k
    return torch.bincount(idx.flatten(), minlength=n * k * k).view(n, k, k)


def hausdorff95(pred: np.ndarray, ref: np.ndarray) -> float:
    """95th-percentile symmetric Hausdorff distance in voxels between boolean masks (any rank).

    The larger of the two directed 95th percentiles of surface-to-surface distances (as MONAI computes
    it). NaN when both masks are empty; the image diagonal when only one is (the worst possible miss).
    """
    from scipy import ndimage

    if not pred.any() and not ref.any():
        return math.nan
    if not pred.any() or not ref.any():
        return float(np.linalg.norm(pred.shape))
    surface_p = pred ^ ndimage.binary_erosion(pred)
    surface_r = ref ^ ndimage.binary_erosion(ref)
    to_ref = ndimage.distance_transform_edt(~surface_r)   # distance of every voxel to ref's surface
    to_pred = ndimage.distance_transform_edt(~surface_p)
    return float(max(np.percentile(to_ref[surface_p], 95), np.percentile(to_pred[surface_r], 95)))


class SegmentationMeter:
    """Accumulates per-case confusion matrices (on the device, no sync per batch) and, when asked,
    per-case HD95 (on the CPU, with scipy)."""

    def __init__(self, num_classes: int, hd95: bool = False):
        self.k = num_classes
        self.hd95 = hd95
        self.loss_sum: torch.Tensor | float = 0.0
        self.n = 0
        self.conf: list[torch.Tensor] = []
        self.edge_conf: list[torch.Tensor] = []  # the same, within EDGE of the border only
        self.hd: list[float] = []

    @torch.no_grad()
    def update(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        """logits (N, K, *spatial), y (N, *spatial), loss: the batch mean."""
        self.loss_sum = self.loss_sum + loss.detach().float() * len(y)
        self.n += len(y)
        pred = logits.argmax(1)
        self.conf.append(confusion(pred, y, self.k))
        band = edge_band(y.shape[1:], y.device)
        self.edge_conf.append(confusion(pred[:, band], y[:, band], self.k))
        if self.hd95:
            p, t = pred.cpu().numpy(), y.cpu().numpy()
            for i in range(len(t)):
                for c in range(1, self.k):
                    self.hd.append(hausdorff95(p[i] == c, t[i] == c))

    def compute(self) -> dict[str, float]:
        if self.n == 0:
            return {}
        dice_cases, iou_cases = _dice_iou(torch.cat(self.conf))
        out = {"loss": float(self.loss_sum) / self.n}
        dice_k = _mean_over_cases(dice_cases)
        iou_k = _mean_over_cases(iou_cases)
        out["dice"] = float(dice_k[1:].mean())
        out["iou"] = float(iou_k[1:].mean())
        # Dice of the pixels near the border, where padding decides what a convolution sees
        out["edge_dice"] = float(_mean_over_cases(_dice_iou(torch.cat(self.edge_conf))[0])[1:].mean())
        for c in range(1, self.k):
            out[f"dice_{c}"] = float(dice_k[c])
        hd = [h for h in self.hd if not math.isnan(h)]
        if hd:
            out["hd95"] = float(np.mean(hd))
        return out


EDGE = 1 / 8  # the border band of edge_dice: this share of each side


def edge_band(spatial: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """(*spatial) bool mask of the positions within ``EDGE`` of a side (at least one) of the border."""
    mask = torch.zeros(spatial, dtype=torch.bool, device=device)
    for axis, n in enumerate(spatial):
        w = max(1, round(n * EDGE))
        index = [slice(None)] * len(spatial)
        for part in (slice(0, w), slice(n - w, n)):
            index[axis] = part
            mask[tuple(index)] = True
    return mask


def _dice_iou(conf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cases, K) Dice and IoU from (cases, K, K) confusion matrices; NaN where a class is absent and not
    predicted."""
    conf = conf.double().cpu()
    tp = torch.diagonal(conf, dim1=1, dim2=2)
    fp = conf.sum(1) - tp
    fn = conf.sum(2) - tp
    return 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)


def _mean_over_cases(per_case: torch.Tensor) -> torch.Tensor:
    """(K,) mean over cases ignoring NaN; a class never present nor predicted scores 1 (nothing missed)."""
    valid = ~per_case.isnan()
    total = torch.where(valid, per_case, torch.zeros_like(per_case)).sum(0)
    count = valid.sum(0)
    return torch.where(count > 0, total / count.clamp_min(1), torch.ones_like(total))


# ---- inference ----------------------------------------------------------------------------------

def _gaussian_weight(patch: tuple[int, ...], sigma_scale: float = 1 / 8) -> torch.Tensor:
    """(*patch) importance map: a gaussian centred on the window, so that predictions near a window's
    border (which saw less context) count less where windows overlap (nnU-Net's blending)."""
    axes = []
    for p in patch:
        c = torch.arange(p, dtype=torch.float32) - (p - 1) / 2
        axes.append(torch.exp(-0.5 * (c / max(p * sigma_scale, 1e-6)) ** 2))
    w = axes[0]
    for a in axes[1:]:
        w = w.unsqueeze(-1) * a
    w = w / w.max()
    return w.clamp_min(w[w > 0].min().item() if (w > 0).any() else 1e-6)


def _starts(size: int, patch: int, overlap: float) -> list[int]:
    step = max(1, int(patch * (1 - overlap)))
    starts = list(range(0, size - patch + 1, step))
    if starts[-1] != size - patch:
        starts.append(size - patch)  # the last window ends on the border
    return starts


def sliding_window(model: nn.Module, x: torch.Tensor, patch_size: tuple[int, ...] | list[int],
                   overlap: float = 0.5, blend: Literal["gaussian", "constant"] = "gaussian",
                   batch_size: int = 4) -> torch.Tensor:
    """Logits (N, K, *spatial) for images (N, C, *spatial) too large for one pass: the model runs on
    overlapping windows of ``patch_size`` and their logits are averaged, weighted by ``blend``.

    Inputs smaller than a window are zero-padded and the padding is cut off again.
    """
    import itertools

    patch = tuple(int(p) for p in patch_size)
    spatial = x.shape[2:]
    if len(patch) != len(spatial):
        raise DltricksError(f"patch size {list(patch)} must have one size per spatial axis of {tuple(spatial)}")
    pad = [max(0, p - s) for p, s in zip(patch, spatial)]
    if any(pad):
        x = F.pad(x, [v for p in reversed(pad) for v in (p // 2, p - p // 2)])
    padded = x.shape[2:]
    weight = (_gaussian_weight(patch) if blend == "gaussian" else torch.ones(patch)).to(x.device)
    corners = list(itertools.product(*[_starts(s, p, overlap) for s, p in zip(padded, patch)]))
    jobs = [(n, c) for n in range(x.shape[0]) for c in corners]
    out = norm = None
    for i in range(0, len(jobs), batch_size):
        chunk = jobs[i:i + batch_size]
        windows = [tuple(slice(s, s + p) for s, p in zip(c, patch)) for _, c in chunk]
        logits = model(torch.stack([x[(n, slice(None)) + w] for (n, _), w in zip(chunk, windows)])).float()
        if out is None:
            out = torch.zeros(x.shape[0], logits.shape[1], *padded, device=x.device)
            norm = torch.zeros(x.shape[0], 1, *padded, device=x.device)
        for (n, _), w, lg in zip(chunk, windows, logits):
            out[(n, slice(None)) + w] += lg * weight
            norm[(n, slice(None)) + w] += weight
    out = out / norm
    if any(pad):
        out = out[(slice(None), slice(None)) + tuple(slice(p // 2, p // 2 + s) for p, s in zip(pad, spatial))]
    return out


# ---- the task -----------------------------------------------------------------------------------

# HD95 needs two distance transforms per case and class on the CPU; above this many voxels per case
# (64^3, 512^2) it would cost more than the epoch it measures, so recipes get it only below.
HD95_MAX_VOXELS = 2**18


@dataclass
class Segmentation:
    """Segmentation into ``num_classes`` classes (0 = background).

    ``objective``: ``ce``, ``dice`` or ``ce_dice`` (their sum, the nnU-Net default); ``class_weights``
    weight both terms; ``patch_size`` switches :meth:`predict` to a sliding window with ``overlap``;
    ``hd95`` adds the 95th-percentile Hausdorff distance to the metrics (CPU, scipy).
    """

    num_classes: int
    objective: Literal["ce", "dice", "ce_dice"] = "ce_dice"
    class_weights: list[float] = field(default_factory=list)
    label_smoothing: float = 0.0
    patch_size: tuple[int, ...] | None = None
    overlap: float = 0.5
    sw_batch_size: int = 4
    blend: Literal["gaussian", "constant"] = "gaussian"
    hd95: bool = False
    higher_is_better: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.class_weights and len(self.class_weights) != self.num_classes:
            raise DltricksError(f"train.class_weights has {len(self.class_weights)} values for "
                                f"{self.num_classes} classes; give one per class, background first, or []")
        self._w = torch.tensor(self.class_weights, dtype=torch.float32) if self.class_weights else None
        if not self.higher_is_better:
            self.higher_is_better = {"loss": False, "dice": True, "iou": True, "hd95": False,
                                     **{f"dice_{c}": True for c in range(1, self.num_classes)}}

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Scalar loss of logits (N, K, *spatial) against labels (N, *spatial)."""
        w = self._w.to(logits.device) if self._w is not None else None
        total = logits.new_zeros((), dtype=torch.float32)
        if self.objective in ("ce", "ce_dice"):
            total = total + F.cross_entropy(logits.float(), y, weight=w, label_smoothing=self.label_smoothing)
        if self.objective in ("dice", "ce_dice"):
            total = total + dice_loss(logits, y, w)
        return total

    def meter(self) -> SegmentationMeter:
        return SegmentationMeter(self.num_classes, hd95=self.hd95)

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, *spatial): a sliding window when trained on patches and ``x`` is not one patch."""
        if self.patch_size is None or tuple(x.shape[2:]) == tuple(self.patch_size):
            return model(x)
        return sliding_window(model, x, self.patch_size, self.overlap, self.blend, self.sw_batch_size)


def make_segmentation_task(recipe, bundle) -> Segmentation:
    """The Segmentation task for a recipe and its loaded data (``bundle.task == "segmentation"``)."""
    if bundle.task != "segmentation":
        raise DltricksError(f"data.name = {recipe.data.name!r} is a {bundle.task} dataset, not segmentation")
    patch = tuple(getattr(recipe.data, "patch_size", None) or ()) or None
    spatial = tuple(bundle.train[1].shape[1:])
    task = Segmentation(num_classes=bundle.num_classes, objective=recipe.train.loss,
                        class_weights=list(recipe.train.class_weights),
                        label_smoothing=recipe.train.label_smoothing, patch_size=patch,
                        overlap=getattr(recipe.data, "sw_overlap", 0.5),
                        hd95=math.prod(spatial) <= HD95_MAX_VOXELS)
    return task
