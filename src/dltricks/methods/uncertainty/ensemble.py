"""Deep ensembles (Lakshminarayanan et al. 2017): several networks from different random
initialisations and data orders, their predictions averaged.

Two ways to get one:

- ``eval.ensemble = N`` in a recipe: the run trains its own model (member 0, the recipe's seed) and
  N - 1 more with seeds ``seed + 1000 k`` on the same data split; the members' weights are saved as
  ``members/member{k}.safetensors`` beside the run, and the run's metrics are the ensemble's;
- ``dltricks ensemble RUN RUN ...`` (:func:`ensemble_of_runs`): completed runs of one task become a new
  run, with its own metrics, whose recipe records its members (``eval.ensemble_runs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from dltricks.errors import DltricksError

__all__ = ["member_seed", "train_members", "ensemble_of_runs"]


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
    from dltricks.loop.options import fit_options
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
            fit(model, bundle.train_source or bundle.train, bundle.val, **fit_options(recipe), seed=seed,
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


def _task_signature(recipe: Any, bundle: Any) -> tuple:
    return (recipe.to_dict()["data"], bundle.num_classes, bundle.task)


def ensemble_of_runs(ledger: Any, run_ids: list[str], *, progress: bool = False) -> tuple[str, dict[str, float]]:
    """Record a new run that averages the completed runs ``run_ids`` (all on the same data and classes)
    and return its id and metrics."""
    from dltricks.loop.training import resolve_device
    from dltricks.methods.build import make_task, model_from_run
    from dltricks.recipe import Recipe

    if len(run_ids) < 2:
        raise DltricksError(f"an ensemble needs at least 2 runs, got {len(run_ids)}")
    recs = [ledger.get(r) for r in run_ids]
    ids = [r.id for r in recs]
    if len(set(ids)) < len(ids):
        raise DltricksError(f"run {next(i for i in ids if ids.count(i) > 1)} is named twice; an ensemble "
                            "needs distinct runs")
    first = None
    models = []
    for rec in recs:
        recipe, bundle, model = model_from_run(ledger, rec.id, why="an ensemble is built")
        sig = _task_signature(recipe, bundle)
        if first is None:
            first = (rec.id, recipe, bundle, sig)
        elif sig != first[3]:
            if sig[1] != first[3][1]:
                why = f"{first[3][1]} vs {sig[1]} classes"
            else:
                diff = sorted(k for k in set(sig[0]) | set(first[3][0]) if sig[0].get(k) != first[3][0].get(k))
                why = f"data keys differ: {', '.join('data.' + k for k in diff)}"
            raise DltricksError(f"runs {first[0]} and {rec.id} are on different tasks ({why}); an ensemble "
                                "averages runs of the same data and classes")
        models.append(model)
    _, recipe, bundle, _ = first
    recipe = Recipe.from_dict({**recipe.to_dict(), "name": f"ensemble-{recipe.name}"}, source="ensemble")
    recipe = recipe.patch({"eval.ensemble_runs": ids, "eval.ensemble": 1, "eval.mc_samples": 0,
                           "eval.laplace": "off", "eval.gp_head": False})
    device = resolve_device(recipe.train.device)
    run_id = ledger.start_run(name=recipe.name, recipe=recipe.to_dict(), seed=recipe.seed, device=str(device),
                              variant="ensemble")
    run_dir = ledger.run_dir(run_id)
    (run_dir / "recipe.toml").write_text(recipe.to_toml())
    try:
        from dltricks.methods.uncertainty.evaluate import evaluate_uncertainty

        task = make_task(recipe, bundle)
        metrics = evaluate_uncertainty(recipe, bundle, models[0], task, device, run_dir=run_dir, ledger=ledger,
                                       progress=progress, members=models[1:])
        metrics["members"] = float(len(models))
        metrics["params"] = float(sum(p.numel() for m in models for p in m.parameters()))
    except Exception as e:
        ledger.finish(run_id, "failed", failure=f"{type(e).__name__}: {e}")
        raise
    ledger.finish(run_id, "completed", metrics=metrics)
    return run_id, metrics
