"""Dimension-generic constructors: one name for the 1D, 2D and 3D flavour of a torch layer.

Every constructor takes ``dims`` (1, 2 or 3: the number of spatial axes of an (N, C, *spatial) tensor), so a
block written once runs on signals, images and volumes.
"""

from __future__ import annotations

from torch import nn

from dltricks.errors import DltricksError

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_IN = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVGPOOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_ADAPTIVE_AVG = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
_ADAPTIVE_MAX = {1: nn.AdaptiveMaxPool1d, 2: nn.AdaptiveMaxPool2d, 3: nn.AdaptiveMaxPool3d}
_DROPOUT = {1: nn.Dropout1d, 2: nn.Dropout2d, 3: nn.Dropout3d}

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "silu": nn.SiLU,
               "elu": nn.ELU, "tanh": nn.Tanh, "none": nn.Identity}
NORMS = ("batch", "group", "layer", "instance", "none")
POOLS = ("max", "avg")


class BuildError(DltricksError, ValueError):
    """A model or block that cannot be built as asked (bad name, sizes that do not fit).

    A :class:`DltricksError`, so the CLI prints it as one line; also a ``ValueError`` for callers that
    treat bad arguments the Python way."""


def _pick(table: dict, dims: int, what: str):
    if dims not in table:
        raise BuildError(f"{what}: dims must be 1, 2 or 3, got {dims}")
    return table[dims]


def conv(dims: int, *args, **kwargs) -> nn.Module:
    return _pick(_CONV, dims, "conv")(*args, **kwargs)


def conv_transpose(dims: int, *args, **kwargs) -> nn.Module:
    return _pick(_CONV_T, dims, "conv_transpose")(*args, **kwargs)


def max_pool(dims: int, *args, **kwargs) -> nn.Module:
    return _pick(_MAXPOOL, dims, "max_pool")(*args, **kwargs)


def avg_pool(dims: int, *args, **kwargs) -> nn.Module:
    return _pick(_AVGPOOL, dims, "avg_pool")(*args, **kwargs)


def pool(kind: str, dims: int, kernel_size: int = 2, stride: int | None = None, **kwargs) -> nn.Module:
    """``max`` or ``avg`` pooling by name."""
    if kind == "max":
        return max_pool(dims, kernel_size, stride, **kwargs)
    if kind == "avg":
        return avg_pool(dims, kernel_size, stride, **kwargs)
    raise BuildError(f"unknown pooling {kind!r}; valid: {', '.join(POOLS)}")


def adaptive_avg_pool(dims: int, size) -> nn.Module:
    return _pick(_ADAPTIVE_AVG, dims, "adaptive_avg_pool")(size)


def adaptive_max_pool(dims: int, size) -> nn.Module:
    return _pick(_ADAPTIVE_MAX, dims, "adaptive_max_pool")(size)


def spatial_dropout(dims: int, p: float) -> nn.Module:
    """Drops whole channels: neighbouring activations are correlated, so dropping single ones does little."""
    return _pick(_DROPOUT, dims, "spatial_dropout")(p)


def dropout(dims: int, p: float, spatial: bool = True) -> nn.Module:
    """Dropout over (N, C, *spatial): whole channels (``spatial=True``) or single activations; identity at 0."""
    if not 0.0 <= p < 1.0:
        raise BuildError(f"dropout must be in [0, 1), got {p}")
    if p == 0:
        return nn.Identity()
    return spatial_dropout(dims, p) if spatial else nn.Dropout(p)


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise BuildError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def norm(name: str, channels: int, dims: int, groups: int = 8) -> nn.Module:
    """A normalisation over (N, C, *spatial).

    ``group`` uses up to ``groups`` groups that divide ``channels`` (GroupNorm does not depend on the
    batch size, so it is the choice for batches under ~16); ``layer`` normalises over C and all
    positions (GroupNorm with one group); ``instance`` over each channel's positions.
    """
    if name == "batch":
        return _pick(_BN, dims, "norm")(channels)
    if name == "group":
        g = max(d for d in range(1, min(groups, channels) + 1) if channels % d == 0)
        return nn.GroupNorm(g, channels)
    if name == "layer":
        return nn.GroupNorm(1, channels)
    if name == "instance":
        return _pick(_IN, dims, "norm")(channels, affine=True)
    if name == "none":
        return nn.Identity()
    raise BuildError(f"unknown norm {name!r}; valid: {', '.join(NORMS)}")


def conv_out_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a conv or pooling along one axis (floor mode), as torch computes it."""
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
