"""Costs measured exactly, without training: parameters, FLOPs of one forward pass per sample (PyTorch's
flop counter) and the receptive field (:mod:`dltricks.analysis.receptive_field`) of each arm's model."""

from __future__ import annotations

import math

from dltricks.recipe import Recipe

COSTS = ("params", "flops", "receptive_field")


def model_costs(recipe: Recipe) -> dict[str, float]:
    """``{"params", "flops", "receptive_field"}`` of the recipe's model; the receptive field is the product of
    its sides (a length in 1D), NaN where the model has none (an MLP)."""
    from dltricks.analysis import cost
    from dltricks.analysis.inspect import data_info
    from dltricks.analysis.receptive_field import receptive_field
    from dltricks.nn import build_model

    info = data_info(recipe)
    model = build_model(recipe.model, info.in_shape, info.num_classes)
    c = cost(model, info.in_shape, latency=False)
    try:
        rf = float(math.prod(receptive_field(model, info.in_shape).size))
    except Exception:  # noqa: BLE001 - a model the tracer cannot follow has no receptive field to report
        rf = math.nan
    return {"params": float(c.params), "flops": float(c.flops), "receptive_field": rf}
