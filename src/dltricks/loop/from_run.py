"""Weights of earlier runs: a fine-tuning start, a distillation teacher, a model to compress.

A run is named by its ledger id (or a unique prefix); its weights are the safetensors file the run
wrote when it completed. Nothing here unpickles anything.

    rec, state = run_weights(ledger, "3f2a9c")       # {name: tensor}
    recipe, bundle, model = load_run_model(ledger, "3f2a9c", build)   # rebuilt and loaded, in eval mode

A ``recipe:NAME`` reference is resolved to a run id by the runner (:mod:`dltricks.runner.references`)
before any method is built.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from dltricks.data import DataBundle
from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.ledger.record import RunRecord
from dltricks.recipe import Recipe

__all__ = ["completed_run", "read_weights", "run_weights", "load_run_model"]

_PICKLES = {".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"}


def completed_run(ledger: Ledger, run_id: str, *, why: str = "its weights are used") -> RunRecord:
    """The ledger's record of ``run_id``, which must have completed and left its weights."""
    rec = ledger.get(run_id)
    if rec.status != "completed":
        raise DltricksError(f"run {rec.id} is {rec.status}, not completed: {why} only from a finished run "
                            f"(see `dltricks runs`)")
    if not rec.checkpoint or not Path(rec.checkpoint).is_file():
        raise DltricksError(f"run {rec.id} has no weights file (expected {rec.checkpoint or 'model.safetensors'}); "
                            "was its run folder moved or deleted?")
    return rec


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file as ``{name: tensor}``, with one clear line when it cannot be read."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise DltricksError(f"weights {path} must be a .safetensors file (pickled .pt/.pth files are never loaded)")
    if not path.is_file():
        raise DltricksError(f"weights file {path} does not exist")
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise DltricksError(f"cannot read weights {path}: {e}") from None


def run_weights(ledger: Ledger, ref: str) -> tuple[RunRecord | None, dict[str, torch.Tensor]]:
    """Weights named by a run id or by a path to a ``.safetensors`` file; the run's record when it is a run."""
    if ref.startswith("recipe:"):
        raise DltricksError(f"{ref!r} names a recipe, not a run: a recipe run (dltricks.train) trains or finds "
                            "that run first; elsewhere name a run id or a .safetensors file")
    if ref.endswith(".safetensors") or Path(ref).suffix in _PICKLES:  # a file; pickles get read_weights' refusal
        return None, read_weights(ref)
    rec = completed_run(ledger, ref)
    return rec, read_weights(rec.checkpoint)


def load_run_model(ledger: Ledger, run_id: str, build: Callable[[Recipe], tuple[DataBundle, nn.Module, Any]], *,
                   why: str = "its weights are used") -> tuple[Recipe, DataBundle, nn.Module]:
    """Rebuild a completed run's model from its stored recipe with ``build(recipe) -> (bundle, model, _)``,
    load its weights exactly (shape-checked), and return the recipe, its data and the model (in eval
    mode, on the CPU). :func:`dltricks.methods.build.model_from_run` passes the set-ups' build."""
    rec = completed_run(ledger, run_id, why=why)
    recipe = Recipe.from_dict(rec.recipe, source=f"run {rec.id}")
    if recipe.compress.active:
        raise DltricksError(f"run {rec.id} holds a compressed model (int8 or pruned layers), not the float model "
                            f"its recipe builds; load it with dltricks.compress.compressed_model(ledger, "
                            f"{rec.id!r})" + (f", or use its source run {recipe.compress.source}"
                                              if recipe.compress.source else ""))
    bundle, model, _ = build(recipe)
    state = read_weights(rec.checkpoint)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise DltricksError(f"weights of run {rec.id} do not fit the model its recipe builds "
                            f"(was the code changed since?): {first}") from None
    return recipe, bundle, model.eval()
