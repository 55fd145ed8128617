"""A run's final metrics and their names before training: each learning set-up's own
(:meth:`~dltricks.methods.registry.Setup.metrics`), then cost, time and threads.

    metric_names(Recipe.load("mnist1d-da"))   # [..., "test_target_accuracy", "oracle_val_target_accuracy", ...]
"""

from __future__ import annotations

from pathlib import Path

import torch

from dltricks.data import DataBundle
from dltricks.ledger import Ledger
from dltricks.loop.tasks import Task
from dltricks.loop.training import History
from dltricks.methods.build import build_with
from dltricks.methods.registry import Setup, Trained
from dltricks.recipe import Recipe

__all__ = ["RUN_METRICS", "metric_names", "final_metrics", "forward_flops"]

# what every run records besides its set-ups' metrics ("flops" where the counter can trace the model)
RUN_METRICS = ("train_loss", "epochs", "wall_time_s", "params", "threads")


def metric_names(recipe: Recipe) -> list[str]:
    """The metrics a run of ``recipe`` records (the keys of its ledger row), known before training, from
    the freshly built model. Sweeps check the metric they compare against this list."""
    bundle, model, task, setups = build_with(recipe)
    names: list[str] = []
    for s in setups:
        names += [k for k in s.metric_names(model, task) if k not in names]
    if recipe.compress.active:
        from dltricks.compress import measure

        names += ["size_bytes", *(f"latency_b{b}_ms" for b in measure.BATCHES)]
    # The FLOP counter traces every float model (not an int8 one). Tracing here to be sure would import
    # torch._dynamo into a study's coordinator, which only waits for its workers: a second on its critical path.
    if recipe.compress.quantize == "none":
        names.append("flops")
    return names + [k for k in RUN_METRICS if k not in names]


def final_metrics(model: torch.nn.Module, bundle: DataBundle, task: Task, history: History, recipe: Recipe,
                  device: torch.device, setups: list[Setup], run_dir: Path | None = None,
                  ledger: Ledger | None = None, progress: bool = False) -> dict[str, float]:
    """Every set-up's metrics of the final (or best) weights, in their merge order (the predictive
    distribution's ``test_ece`` replaces the plain model's, say), plus cost and time."""
    run = Trained(recipe, bundle, model, task, history, device, run_dir=run_dir, ledger=ledger, progress=progress)
    out: dict[str, float] = {}
    for s in setups:
        out.update(s.metrics(run))
    out["train_loss"] = history.curves["train_loss"][-1]
    out["epochs"] = float(history.epochs)
    out["wall_time_s"] = history.wall_time
    out["params"] = float(sum(p.numel() for p in model.parameters()))
    flops = forward_flops(model, bundle)
    if flops is not None:
        out["flops"] = flops
    return out


def forward_flops(model: torch.nn.Module, bundle: DataBundle) -> float | None:
    """FLOPs of one forward pass per sample of what the net sees in training, counted on meta tensors
    (milliseconds); None for a model the counter cannot trace (an int8 one, say). Recorded with each run,
    so that a study's report need not count them again."""
    from dltricks.analysis import cost
    from dltricks.analysis.inspect import net_input_shape

    try:
        return float(cost(model, net_input_shape(bundle), latency=False).flops)
    except Exception:  # noqa: BLE001 - "where known": a model the counter cannot trace just has no FLOPs
        return None
