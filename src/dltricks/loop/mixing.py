"""Mixup and CutMix: train on pairs of samples mixed together, labels mixed in the same proportion.

- **mixup** (``data.mixup_alpha``): ``x = lam x_i + (1 - lam) x_j`` and the same blend of the one-hot labels,
  ``lam ~ Beta(alpha, alpha)``; any input (signals, images, volumes, feature tables).
- **CutMix** (``data.cutmix_alpha``): a box of sample ``j`` pasted into sample ``i``, in 1D, 2D or 3D (the box
  spans every spatial axis, each side ``(1 - lam) ** (1 / dims)`` of the input's, clipped at the border); the
  labels are mixed by the share of the input the box covers. For segmentation the box of the mask is pasted
  with the box of the image, so every pixel keeps its own label.

One ``lam`` and one box per batch (as timm's ``Mixup``), drawn from torch's RNG (checkpointed with the loop:
a resumed run mixes what an uninterrupted one would). With both alphas set, each batch is mixed by one of the
two, chosen with even odds. Classification targets become class probabilities ``(N, C)``, which
``F.cross_entropy`` takes as they are.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from dltricks.errors import DltricksError

__all__ = ["Mixing", "cutmix_box", "mixing_for", "then"]

Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def cutmix_box(spatial: tuple[int, ...], lam: float, gen: torch.Generator | None = None
               ) -> tuple[tuple[slice, ...], float]:
    """A box covering about ``1 - lam`` of an input of ``spatial`` size (``(L,)``, ``(H, W)`` or ``(D, H, W)``):
    its slices and the share of the input it really covers (less where the border clips it)."""
    ratio = (1.0 - lam) ** (1.0 / len(spatial))
    slices, covered = [], 1.0
    for size in spatial:
        side = int(round(size * ratio))
        centre = int(torch.randint(size, (1,), generator=gen))
        lo, hi = max(centre - side // 2, 0), min(centre + side - side // 2, size)
        slices.append(slice(lo, hi))
        covered *= (hi - lo) / size
    return tuple(slices), covered


class Mixing:
    """``(x, y) -> (x, y)`` on a training batch: mixup or CutMix as configured. ``num_classes`` makes the
    mixed class probabilities; ``segmentation`` pastes label maps instead (CutMix only)."""

    def __init__(self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, *, num_classes: int = 0,
                 segmentation: bool = False) -> None:
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.num_classes, self.segmentation = num_classes, segmentation

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(x) < 2:
            return x, y
        cut = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or bool(torch.rand(()) < 0.5))
        alpha = self.cutmix_alpha if cut else self.mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(len(x)).to(x.device)
        if cut:
            box, covered = cutmix_box(tuple(x.shape[2:]), lam)
            x = x.clone()
            x[(slice(None), slice(None), *box)] = x[perm][(slice(None), slice(None), *box)]
            if self.segmentation:  # the mask's box moves with the image's
                y = y.clone()
                y[(slice(None), *box)] = y[perm][(slice(None), *box)]
                return x, y
            lam = 1.0 - covered
        else:
            x = lam * x + (1.0 - lam) * x[perm]
        return x, self.soft(y, perm, lam)

    def soft(self, y: torch.Tensor, perm: torch.Tensor, lam: float) -> torch.Tensor:
        """``lam`` of each sample's label and ``1 - lam`` of its partner's, as class probabilities (N, C)."""
        p = y if torch.is_floating_point(y) else F.one_hot(y, self.num_classes).float()
        return lam * p + (1.0 - lam) * p[perm]


def mixing_for(mixup_alpha: float, cutmix_alpha: float, *, task: str, classifies: bool, num_classes: int,
               in_shape: tuple[int, ...]) -> Mixing | None:
    """The data section's mixing for a bundle of ``task`` ("classification" or "segmentation") whose loss is
    ``classifies`` (plain class cross-entropy) and whose samples are ``in_shape`` (C, *spatial); None when
    both alphas are 0. Refused, in one line, where mixing has no meaning."""
    if not mixup_alpha and not cutmix_alpha:
        return None
    keys = " and ".join(k for k, a in (("data.mixup_alpha", mixup_alpha), ("data.cutmix_alpha", cutmix_alpha)) if a)
    if task == "segmentation":
        if mixup_alpha:
            raise DltricksError("data.mixup_alpha: mixup blends two images, so each pixel would belong to two "
                                "masks at once, which a label map cannot say; for segmentation use "
                                "data.cutmix_alpha (the mask's box is pasted with the image's)")
        return Mixing(0.0, cutmix_alpha, segmentation=True)
    if not classifies:
        raise DltricksError(f"{keys} mix class labels: they work for classification (and CutMix for "
                            "segmentation), not for this recipe's targets or metric loss; set them to 0")
    if cutmix_alpha and len(in_shape) < 2:
        raise DltricksError(f"data.cutmix_alpha pastes a box along the input's spatial axes; inputs of shape "
                            f"{tuple(in_shape)} have none (use data.mixup_alpha for feature tables)")
    return Mixing(mixup_alpha, cutmix_alpha, num_classes=num_classes)


def then(first: Augment | None, second: Augment | None) -> Augment | None:
    """``first`` (the per-sample augmentation) and then ``second`` (the mixing), or whichever is set."""
    if first is None or second is None:
        return first or second
    return lambda x, y: second(*first(x, y))
