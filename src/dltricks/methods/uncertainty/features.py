"""The learnt features of a network: the input of its last layer (its head), for the last-layer
Laplace approximation and the GP head."""

from __future__ import annotations

import copy

import torch
from torch import nn

from dltricks.errors import DltricksError

__all__ = ["linear_head", "collect", "backbone"]


def linear_head(model: nn.Module, why: str) -> tuple[str, nn.Linear]:
    """The name and module of the model's last weight layer, which must be a Linear map."""
    from dltricks.methods.transfer import head_name

    name = head_name(model)
    head = dict(model.named_modules())[name]
    if not isinstance(head, nn.Linear):
        raise DltricksError(f"{why} needs a model whose last layer is Linear, but its last layer {name!r} is "
                            f"{type(head).__name__}; use a classifier head (e.g. model.head = 'avg' for cnn)")
    return name, head


@torch.no_grad()
def collect(model: nn.Module, x: torch.Tensor, head: nn.Module, device: torch.device,
            batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, D) entering ``head`` and the model's outputs (N, K) on ``x``, in eval mode."""
    seen: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().float().flatten(1)))
    outs = []
    was = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            outs.append(model(x[i:i + batch_size].to(device)).float())
    finally:
        hook.remove()
        model.train(was)
    return torch.cat(seen), torch.cat(outs)


def backbone(model: nn.Module, why: str) -> tuple[nn.Module, int]:
    """A copy of ``model`` whose head is the identity (it outputs the features), and the feature width."""
    name, head = linear_head(model, why)
    body = copy.deepcopy(model)
    parent_name, _, leaf = name.rpartition(".")
    parent = body.get_submodule(parent_name) if parent_name else body
    setattr(parent, leaf, nn.Identity())
    return body, head.in_features
