"""Shapes of cheap ops on meta tensors without torch's Python meta functions.

Activations and norms cost ~5 ms each through those functions, which would make a ResNet-50 trace take
seconds; their output shapes are known from the input, so :func:`fast_meta` makes them directly.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["fast_meta"]

_SHAPE_KEEPING = {"relu", "gelu", "silu", "sigmoid", "tanh", "leaky_relu", "hardtanh", "elu", "hardswish",
                  "hardsigmoid", "mish", "clone"}
_SAME_SHAPE_BINARY = {"add", "sub", "mul", "div"}


def fast_meta(func, args, kwargs) -> Any:
    """The result of a shape-preserving op on meta tensors without running torch's Python meta functions
    (activations and norms are ~5 ms each there, which would make a ResNet-50 trace take seconds).
    None where the op must really run."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or x.device.type != "meta":
        return None
    name = func._overloadpacket.__name__
    base = name.rstrip("_")
    inplace = name.endswith("_") and not name.startswith("_")
    if base in _SHAPE_KEEPING and not any(isinstance(a, torch.Tensor) for a in args[1:]) and not kwargs:
        return x if inplace else torch.empty_like(x)
    if base in _SAME_SHAPE_BINARY and len(args) >= 2 and isinstance(args[1], torch.Tensor) \
            and args[1].shape == x.shape and args[1].dtype == x.dtype and args[1].device == x.device \
            and not kwargs and all(not isinstance(a, torch.Tensor) for a in args[2:]):
        return x if inplace else torch.empty_like(x)
    if name in ("native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit"):
        c = x.shape[1] if x.dim() > 1 else 0
        return torch.empty_like(x), x.new_empty((c,)), x.new_empty((c,))
    if name == "native_group_norm":
        n, groups = args[3], args[6]
        return torch.empty_like(x), x.new_empty((n, groups)), x.new_empty((n, groups))
    if name == "native_layer_norm":
        k = len(args[1])
        stat = tuple(x.shape[: x.dim() - k]) + (1,) * k
        return torch.empty_like(x), x.new_empty(stat), x.new_empty(stat)
    return None
