"""Optimisers with weight decay that spares norm and bias parameters unless asked otherwise."""

from __future__ import annotations

import torch
from torch import nn

from dltricks.recipe import TrainSpec

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list[dict]:
    """Two groups: weights that decay, and norm/bias parameters that do not.

    Decaying a norm's scale or a bias only pulls against what normalisation already fixes, so the
    common practice (and the default here) is to exempt them.
    """
    if decay_norm_and_bias or weight_decay == 0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            (no_decay if isinstance(module, _NORMS) or name.endswith("bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainSpec, groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``groups`` (by default :func:`param_groups` of the model); a group may
    carry its own ``lr`` (layer-wise rates), the others take ``cfg.lr``."""
    groups = groups if groups is not None else param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum)
    raise ValueError(cfg.optimizer)  # unreachable: the schema admits only the four above
