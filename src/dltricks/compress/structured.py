"""Structured channel pruning that removes channels for real, with Torch-Pruning's dependency graph
(Fang et al. 2023, DepGraph): pruning a conv's output channels also cuts its norm, the next layer's
input channels and every layer coupled to them (residual sums, concatenations), so the smaller model
is an ordinary dense model that is faster on any hardware.

The plan (which channels of which layer, in order) is kept as plain data, so that a saved model is
rebuilt by replaying it on a freshly built one (:func:`replay`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dltricks.errors import DltricksError

__all__ = ["Plan", "channel_prune", "replay"]

# [[layer name, out-channel pruning?, [channel indices]], ...] in the order they were pruned
Plan = list[list]


def _classifier(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """Layers whose output is the model's output (their channels are the classes): never pruned."""
    with torch.no_grad():
        n_out = model(example).shape[1]
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    last = layers[-1:] if layers else []
    return [m for m in last if getattr(m, "out_features", getattr(m, "out_channels", None)) == n_out]


def channel_prune(model: nn.Module, example: torch.Tensor, amount: float, *, scope: str = "layer",
                  steps: int = 1, finetune: Callable[[nn.Module, int], None] | None = None) -> Plan:
    """Remove the ``amount`` share of channels with the smallest L2 norm from every prunable group
    (``scope="layer"``) or ranked across the model (``"global"``), in ``steps`` steps with ``finetune``
    after each. ``example`` is one input batch ``(1, C, *spatial)``. Returns the plan for :func:`replay`."""
    import torch_pruning as tp

    if not 0.0 < amount < 1.0:
        raise DltricksError(f"channel pruning fraction {amount!r} is out of range; give a share in (0, 1)")
    model.eval()
    try:
        pruner = tp.pruner.MagnitudePruner(
            model, example, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=amount,
            iterative_steps=steps, global_pruning=scope == "global",
            ignored_layers=_classifier(model, example))
    except Exception as e:  # a graph Torch-Pruning cannot follow
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        raise DltricksError(f"structured pruning cannot handle this model ({type(e).__name__}: {first}); "
                            "try --prune-mode unstructured") from None
    before = _channels(model)
    for step in range(steps):
        pruner.step()
        if finetune is not None:
            finetune(model, step)
    if _channels(model) == before:
        raise DltricksError("structured pruning found no channels it could remove in this model (every layer is "
                            "coupled to the output); try --prune-mode unstructured")
    return [[name, bool(out), [int(i) for i in idxs]] for name, out, idxs in pruner.pruning_history()]


def replay(model: nn.Module, example: torch.Tensor, plan: Plan) -> nn.Module:
    """Apply a stored plan to a freshly built model of the same recipe (in place): the same channels go."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model.eval(), example_inputs=example)
    try:
        graph.load_pruning_history([[name, out, list(idxs)] for name, out, idxs in plan])
    except (AttributeError, IndexError, ValueError) as e:
        raise DltricksError(f"the stored channel-pruning plan does not fit this model (was the code changed?): "
                            f"{e}") from None
    return model


def _channels(model: nn.Module) -> int:
    return sum(getattr(m, "out_channels", getattr(m, "out_features", 0)) for m in model.modules()
               if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)))
