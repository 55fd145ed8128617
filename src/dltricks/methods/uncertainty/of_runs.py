"""``dltricks ensemble RUN RUN ...``: completed runs of one task averaged into a new run, with its own
metrics, whose recipe records its members (``eval.ensemble_runs``)."""

from __future__ import annotations

from typing import Any

from dltricks.errors import DltricksError

__all__ = ["ensemble_of_runs"]


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
