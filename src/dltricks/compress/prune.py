"""Unstructured magnitude pruning with :mod:`torch.nn.utils.prune`: layer-wise or global, one shot or
iterative with fine-tuning, and lottery-ticket rewinding.

Masked weights are zeros in a dense tensor: the model is exactly as large and as slow as before
(pytorch #36214). Only sparse storage (:mod:`dltricks.compress.sparse`) or removing whole channels
(:mod:`dltricks.compress.structured`) turns zeros into bytes and milliseconds saved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.nn.utils import prune

from dltricks.errors import DltricksError

__all__ = ["PRUNABLE", "make_permanent", "magnitude_prune", "prunable", "prune_iteratively", "rewind", "sparsity"]

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(layer, "weight")`` for every Linear and Conv layer."""
    return [(m, "weight") for m in model.modules() if isinstance(m, PRUNABLE)]


def check_fraction(amount: float) -> float:
    if not 0.0 < amount < 1.0:
        raise DltricksError(f"pruning fraction {amount!r} is out of range; give a share of weights in (0, 1), "
                            "e.g. 0.5")
    return float(amount)


def magnitude_prune(model: nn.Module, amount: float, scope: str = "layer") -> nn.Module:
    """Mask the ``amount`` share of the smallest-magnitude weights still unmasked, in every layer alike
    (``scope="layer"``) or ranked across all layers (``"global"``). Repeated calls compound, as
    :mod:`torch.nn.utils.prune` does: 0.5 twice leaves 25% of the weights."""
    check_fraction(amount)
    params = prunable(model)
    if not params:
        raise DltricksError("unstructured pruning acts on Linear and Conv layers and this model has none")
    if scope == "global":
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    elif scope == "layer":
        for module, name in params:
            prune.l1_unstructured(module, name, amount=amount)
    else:
        raise DltricksError(f"pruning scope {scope!r} is not one of: global, layer")
    return model


def step_amount(target: float, steps: int) -> float:
    """The share pruned per step so that ``steps`` compounding steps leave ``1 - target`` of the weights."""
    return 1.0 - (1.0 - target) ** (1.0 / steps)


def rewind(model: nn.Module, init: Mapping[str, torch.Tensor]) -> None:
    """Lottery ticket (Frankle & Carbin 2019): every weight that survives the mask goes back to its value
    at initialisation (``init``, the unpruned model's state dict); the masks stay."""
    state = model.state_dict()
    with torch.no_grad():
        for key, value in init.items():
            target = key if key in state else key + "_orig"  # a pruned weight lives as weight_orig * mask
            if target in state:
                state[target].copy_(value)


def prune_iteratively(model: nn.Module, target: float, steps: int = 1, scope: str = "layer",
                      finetune: Callable[[nn.Module, int], None] | None = None,
                      init: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """Prune to ``target`` sparsity in ``steps`` compounding steps; after each, rewind to ``init`` when
    given (lottery ticket) and call ``finetune(model, step)``. Masks stay on (call :func:`make_permanent`)."""
    check_fraction(target)
    per_step = step_amount(target, steps)
    for step in range(steps):
        magnitude_prune(model, per_step, scope)
        if init is not None:
            rewind(model, init)
        if finetune is not None:
            finetune(model, step)
    return model


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold the masks into the weights (zeros stay zeros) and drop the pruning hooks."""
    for module in model.modules():
        names = [h._tensor_name for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]
        for name in names:
            prune.remove(module, name)
    return model


def sparsity(model: nn.Module) -> float:
    """Share of exact zeros among the weights of Linear and Conv layers (CSR layers count their dense size)."""
    from dltricks.compress.sparse import SparseLinear

    total = zeros = 0
    for module, name in prunable(model):
        w = getattr(module, name)
        total += w.numel()
        zeros += int((w == 0).sum())
    for module in model.modules():
        if isinstance(module, SparseLinear):
            n = module.shape[0] * module.shape[1]
            total += n
            zeros += n - int((module.values != 0).sum())
    return zeros / total if total else 0.0
