"""Deep ensembles (Lakshminarayanan et al. 2017): several networks from different random
initialisations and data orders, their predictions averaged.

Two ways to get one:

- ``eval.ensemble = N`` in a recipe: the run trains its own model (member 0, the recipe's seed) and
  N - 1 more with seeds ``seed + 1000 k`` on the same data split; the members' weights are saved as
  ``members/member{k}.safetensors`` beside the run, and the run's metrics are the ensemble's;
- ``dltricks ensemble RUN RUN ...`` (:mod:`~dltricks.methods.uncertainty.of_runs`): completed runs of
  one task become a new run, with its own metrics, whose recipe records its members (``eval.ensemble_runs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["member_seed", "train_members"]


def member_seed(seed: int, k: int) -> int:
    """Seed of member ``k`` (member 0 is the run itself): far apart, so the members of two ablation
    seeds never coincide."""
    return seed + 1000 * k


def train_members(recipe: Any, bundle: Any, task: Any, device: torch.device, n: int, *, ledger: Any = None,
                  run_dir: Path | None = None, progress: bool = False) -> list[nn.Module]:
    """Train members 1..n-1 of ``recipe`` (fresh init and data order per member, same split).

    Beside a run, each member checkpoints in ``members/member{k}/`` as it trains, and its weights are kept
    once it is done: a run interrupted while it trains member k resumes with members 1..k-1 as saved and
    member k from its checkpoint, with the same result as a run never stopped."""
    import shutil

    from dltricks.loop.checkpoint import find_checkpoint, load_weights, save_weights
    from dltricks.loop.training import TrainingInterrupted, fit
    from dltricks.methods.base import build_method
    from dltricks.methods.build import make_augment
    from dltricks.nn import build_model

    members = []
    augment = make_augment(recipe, bundle)
    folder = run_dir / "members" if run_dir is not None else None
    for k in range(1, n):
        seed = member_seed(recipe.seed, k)
        torch.manual_seed(seed)
        model = build_model(recipe.model, bundle.in_shape, bundle.num_classes)
        weights = folder / f"member{k}.safetensors" if folder is not None else None
        if weights is not None and weights.is_file():  # trained before an interruption: as it was saved
            members.append(load_weights(weights, model).eval())
            continue
        ckpt = folder / f"member{k}" if folder is not None else None
        method = build_method(recipe, bundle, model, task, ledger, augmented=augment is not None, quiet=not progress)
        try:
            fit(model, bundle.train_source or bundle.train, bundle.val, spec=recipe.train, seed=seed,
                device=str(device), progress=progress, task=task, augment=augment, method=method,
                checkpoint_dir=ckpt, resume=ckpt is not None and find_checkpoint(ckpt / "checkpoint") is not None)
        except TrainingInterrupted as e:  # the run's own curves stand; the run resumes where it points
            stopped = TrainingInterrupted(find_checkpoint(run_dir / "checkpoint") if run_dir else None, None,
                                          epoch=e.epoch, step=e.step, epochs=e.epochs, steps=e.steps)
            stopped.where = f"in ensemble member {k} of {n - 1}, {e.where}" if e.where else \
                f"in ensemble member {k} of {n - 1}"
            raise stopped from None
        if folder is not None:
            folder.mkdir(exist_ok=True)
            save_weights(weights, model)
            shutil.rmtree(ckpt, ignore_errors=True)
        members.append(model.eval())
    return members
