"""Shape inference without computation: run a module on meta tensors (no memory, no FLOPs)."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from dltricks.nn.layers import BuildError


def output_shape(module: nn.Module, in_shape: tuple[int, ...], batch: int = 2) -> tuple[int, ...]:
    """The shape of ``module``'s output for one sample of shape ``in_shape`` (no batch dimension).

    Runs on meta tensors through :func:`torch.func.functional_call`, so the module's own weights are never
    touched or copied. A batch of 2 keeps BatchNorm's training-mode check happy on 1x1 maps."""
    meta = {name: torch.empty_like(t, device="meta")
            for name, t in itertools.chain(module.named_parameters(), module.named_buffers())}
    x = torch.empty(batch, *in_shape, device="meta")
    try:
        with torch.no_grad():
            out = torch.func.functional_call(module, meta, (x,))
    except RuntimeError as e:
        reason = str(e).splitlines()[0]
        raise BuildError(f"input of shape {tuple(in_shape)} does not fit this model: {reason}") from None
    return tuple(out.shape[1:])
