"""The advisor's rules about the data: regression targets on very different scales, and input features on
very different scales (a table read as it is)."""

from __future__ import annotations

from typing import Any

import torch

from dltricks.analysis.advice import Advice, Context, rule

__all__ = ["MAX_FEATURE_SCALE_RATIO", "MAX_TARGET_SCALE_RATIO", "feature_scales", "target_scales"]

MAX_TARGET_SCALE_RATIO = 10.0  # targets whose spreads differ by 10x make one loss term dominate
# inputs whose spreads differ by 100x: the first layer's large-scale weights dominate at a default
# initialisation and learning rate (LeCun et al. 1998, Efficient BackProp, sec. 4.3)
MAX_FEATURE_SCALE_RATIO = 100.0
_SCALE_SAMPLES = 2048  # enough rows to tell a 100x spread apart; keeps large volumes cheap


def target_scales(y: Any) -> dict[str, float]:
    """Spread (std) of each regression target: ``y`` a dict or tuple of tensors, or an (N, T) float tensor.
    Integer targets (class labels, label maps) have no scale and are left out."""
    if isinstance(y, dict):
        items = list(y.items())
    elif isinstance(y, (list, tuple)):
        items = [(str(i), t) for i, t in enumerate(y)]
    elif isinstance(y, torch.Tensor) and y.is_floating_point() and y.dim() == 2 and y.shape[1] > 1:
        items = [(str(i), y[:, i]) for i in range(y.shape[1])]
    else:
        return {}
    out = {}
    for k, t in items:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() > 1:
            out[str(k)] = float(t.float().std())
    return out


_TARGET_NORM_KEYS = ("train.normalize_targets", "data.normalize_targets", "method.normalize_targets",
                     "train.target_norm", "data.standardize_targets")


@rule("target_scales")
def _target_scales(ctx: Context) -> Advice | None:
    bundle = ctx.info.bundle
    y = bundle.train[1] if bundle is not None and getattr(bundle, "train", None) is not None else None
    scales = {k: v for k, v in target_scales(y).items() if v > 0}
    named = getattr(bundle, "targets", None)
    if named and isinstance(y, torch.Tensor) and len(named) == len(scales):  # class ids have no scale
        scales = {t.name: v for t, v in zip(named, scales.values()) if t.kind == "regression"}
    if len(scales) < 2:
        return None
    lo, hi = min(scales.values()), max(scales.values())
    if hi / lo < MAX_TARGET_SCALE_RATIO:
        return None
    flat = ctx.recipe.flat()
    key = next((k for k in _TARGET_NORM_KEYS if k in flat), None)
    if key and flat[key] is True:  # already normalised
        return None
    shown = ", ".join(f"{k}: {v:.3g}" for k, v in scales.items())
    return Advice(
        "target_scales", "Targets on very different scales: normalise them",
        "With several targets, each loss term scales with its target's spread; one on a scale 10x larger "
        "dominates the gradient and the others are barely learnt. Standardise each target (zero mean, unit "
        "variance) or weight the losses by their uncertainty.",
        f"target spreads differ {hi / lo:.0f}x ({shown})" + ("" if key else "; no recipe key normalises "
                                                                         "targets, so fix it in the data"),
        {key: True} if key else {},
        "Kendall et al. 2018, Multi-task learning using uncertainty to weigh losses (arXiv:1705.07115)")


def feature_scales(x: Any) -> list[float]:
    """Spread (std) of each input feature of ``x`` (N, F), or of each channel of (N, C, *spatial), over up
    to the first 2048 samples; [] where ``x`` is not a float batch of that shape."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2 or len(x) < 2:
        return []
    x = x[:_SCALE_SAMPLES].double()
    return x.transpose(0, 1).reshape(x.shape[1], -1).std(1, unbiased=False).tolist()


@rule("feature_scales")
def _feature_scales(ctx: Context) -> Advice | None:
    bundle = ctx.info.bundle
    if bundle is None or getattr(bundle, "standardizer", None) is not None:
        return None  # no data loaded, or already standardised with the training split's statistics
    train = getattr(bundle, "train", None)
    spreads = feature_scales(train[0] if train is not None else None)
    positive = [(i, v) for i, v in enumerate(spreads) if v > 0]  # a constant column has no scale
    if len(positive) < 2:
        return None
    (i_lo, lo), (i_hi, hi) = min(positive, key=lambda t: t[1]), max(positive, key=lambda t: t[1])
    if hi / lo <= MAX_FEATURE_SCALE_RATIO:
        return None
    what = "feature" if train[0].dim() == 2 else "channel"
    names = getattr(bundle, "feature_names", None) or []

    def name(i: int) -> str:
        return f"{what} {names[i]!r}" if i < len(names) else f"{what} {i}"

    return Advice(
        "feature_scales", "Input features on very different scales: standardise them",
        "A feature in the hundreds next to one near 0.01 makes the first layer's gradient follow the large one "
        "and the loss surface ill-conditioned: training is slow or stalls at chance. Scale every feature to "
        "mean 0, std 1 with the training split's statistics.",
        f"input {what} spreads differ {hi / lo:.0f}x (std {lo:.3g} for {name(i_lo)}, {hi:.3g} for "
        f"{name(i_hi)}) > {MAX_FEATURE_SCALE_RATIO:.0f}x, and data.standardize is off",
        {"data.standardize": True},
        "LeCun, Bottou, Orr & Muller 1998, Efficient BackProp (Neural Networks: Tricks of the Trade), sec. 4.3")
