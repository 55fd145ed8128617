"""A recipe end to end: data, model, method, loop, final metrics, figures, and a run in the ledger.

    result = train(Recipe.load("mnist1d-cnn"))
    result.metrics["test_accuracy"]

Everything that can be checked before the first step is (:func:`~dltricks.runner.build.prepare`), before
the ledger records a run: a recipe refused there leaves no row. A failure once training started marks the
run failed with the reason.

Started by torchrun as one of several ranks (``dltricks train RECIPE --nproc N``), rank 0 records the one run
(ledger, checkpoints, curves, figures) and hands its id to the others, which train beside it and write nothing.
"""

from __future__ import annotations

import shutil
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dltricks.compress import compress_trained
from dltricks.data.standardize import save_standardizer
from dltricks.errors import DltricksError, RunFailed
from dltricks.ledger import Ledger
from dltricks.loop import distributed
from dltricks.loop.checkpoint import find_checkpoint, save_weights
from dltricks.loop.training import History, TrainingInterrupted, fit, resolve_device
from dltricks.methods.build import build, make_augment, make_task
from dltricks.methods.registry import Trained
from dltricks.recipe import Recipe, UserModelSpec
from dltricks.runner.build import Prepared, prepare, use_threads
from dltricks.runner.figures import draw_figures
from dltricks.runner.metrics import final_metrics, metric_names
from dltricks.runner.samples import save_correct

# build, make_task, make_augment and metric_names are imported from here by sweeps and tests
__all__ = ["RunResult", "train", "build", "make_task", "make_augment", "metric_names"]


@dataclass
class RunResult:
    run_id: str
    status: str
    metrics: dict[str, float]
    history: History
    recipe: Recipe
    run_dir: Path


@contextmanager
def _recorded(ledger: Ledger, run_id: str, run_dir: Path, history: list[History]) -> Iterator[None]:
    """Mark the run interrupted (resumable) or failed, with the reason, when the block stops it."""
    try:
        yield
    except TrainingInterrupted as e:
        # no history of its own: it stopped after the run's training (in an ensemble member)
        h = e.history if e.history is not None else (history[0] if history else None)
        ledger.update(run_id, status="interrupted", checkpoint=str(e.checkpoint) if e.checkpoint else None,
                      **({"curves": h.curves} if h is not None else {}))
        e.run_id = run_id  # type: ignore[attr-defined]
        raise
    except KeyboardInterrupt:
        ledger.finish(run_id, "interrupted", failure="stopped at once (a second Ctrl-C, or one before "
                      "training began); resume continues from the last checkpoint, if any")
        raise
    except RunFailed as e:
        ledger.finish(run_id, "failed", failure=str(e))
        raise RunFailed(f"run {run_id} failed: {e}") from None
    except DltricksError as e:
        ledger.finish(run_id, "failed", failure=str(e))
        raise
    except Exception as e:  # a crash inside a model or a library: recorded, then reported as a failed run
        ledger.finish(run_id, "failed", failure=f"{type(e).__name__}: {e}")
        (run_dir / "traceback.txt").write_text(traceback.format_exc())
        raise RunFailed(f"run {run_id} crashed: {type(e).__name__}: {e} (traceback in "
                        f"{run_dir / 'traceback.txt'})") from e


def train(recipe: Recipe | str, *, ledger: Ledger | None = None, progress: bool = True,
          resume: str | None = None, study: str | None = None, variant: str | None = None,
          run_id: str | None = None, keep_checkpoint: bool = False, on_epoch=None) -> RunResult:
    """Run a recipe and record it. ``resume=RUN_ID`` continues an interrupted run from its checkpoint.
    A completed run keeps its weights (``model.safetensors``); its resume checkpoint (weights, optimiser
    and RNG states, as large again as the model or more) is deleted unless ``keep_checkpoint``.
    ``on_epoch(epoch, row)`` is :func:`~dltricks.loop.training.fit`'s per-epoch hook (a tuner's pruner).

    Raises :class:`~dltricks.errors.DltricksError` before any run is recorded for a recipe that cannot
    start, :class:`RunFailed` (the run is marked failed with the reason) or
    :class:`~dltricks.loop.training.TrainingInterrupted` (marked interrupted, resumable).
    """
    d = distributed.setup(recipe.train.device if isinstance(recipe, Recipe) else "auto")
    ledger = ledger or _open_ledger(d)
    history: list[History] = []
    if d is not None and not d.main:
        return _follow(recipe, ledger, resume, d, on_epoch)
    if resume:
        rec = ledger.get(resume)
        if rec.status != "completed":
            distributed.check_world(ledger.run_dir(rec.id) / "checkpoint", d)
        if rec.status == "completed":
            raise DltricksError(f"run {rec.id} is already completed; nothing to resume")
        recipe = Recipe.from_dict(rec.recipe, source=f"run {rec.id}")
        run_id = rec.id
        ledger.update(run_id, status="running", failure=None)
        run_dir = ledger.run_dir(run_id)
        with _recorded(ledger, run_id, run_dir, history):  # an existing run: its failure is recorded
            ready = prepare(recipe, ledger, train, progress=progress)
        device = resolve_device(recipe.train.device)
    else:
        if not isinstance(recipe, (Recipe, str)):
            from dltricks.nn.models.imported import not_a_recipe

            raise not_a_recipe(recipe, "train")
        recipe = Recipe.load(recipe) if isinstance(recipe, str) else recipe
        ready = prepare(recipe, ledger, train, progress=progress)  # refused here: no run is recorded
        device = resolve_device(recipe.train.device)
        run_id = ledger.start_run(name=recipe.name, recipe=recipe.to_dict(), seed=recipe.seed,
                                  device=distributed.describe(device, d), study=study, variant=variant, run_id=run_id,
                                  cwd=code_folder(recipe))
        run_dir = ledger.run_dir(run_id)
    (run_dir / "recipe.toml").write_text(recipe.to_toml())
    # a run stopped before its first checkpoint has nothing to continue: it starts again (same seed, same run)
    resume_from_checkpoint = bool(resume) and find_checkpoint(run_dir / "checkpoint") is not None
    distributed.broadcast((run_id, resume_from_checkpoint), d)  # the other ranks wait for it in _follow
    distributed.announce(run_id, d)
    threads_before = torch.get_num_threads()  # the caller's setting: the cap for "auto", restored after
    try:
        with _recorded(ledger, run_id, run_dir, history):
            model, metrics, weights = _fit_and_score(ready, recipe, ledger, device, run_dir, history,
                                                     progress=progress, resume=resume_from_checkpoint,
                                                     on_epoch=on_epoch, threads_before=threads_before)
    finally:
        torch.set_num_threads(threads_before)
    weights = weights or save_weights(run_dir / "model.safetensors", model)
    save_standardizer(ready.bundle, run_dir)  # what serves the weights must scale inputs the same way
    draw_figures(ready.setups, Trained(ready.recipe, ready.bundle, model, ready.task, history[0], device,
                                       run_dir=run_dir, ledger=ledger, progress=progress), metrics)
    ledger.finish(run_id, "completed", metrics=metrics, curves=history[0].curves, checkpoint=str(weights))
    if not keep_checkpoint:
        for path in run_dir.glob("checkpoint*"):  # the checkpoint and any .old copy of a cut-short swap
            shutil.rmtree(path, ignore_errors=True)
    return RunResult(run_id, "completed", metrics, history[0], recipe, run_dir)


def epoch_hooks(recipe: Recipe, run_dir: Path, on_epoch: Callable | None) -> tuple[Callable | None, Any]:
    """``fit``'s per-epoch hook: the caller's, plus TensorBoard scalars with ``train.tensorboard`` (its
    writer is returned, to be closed; None without)."""
    if not recipe.train.tensorboard:
        return on_epoch, None
    from dltricks.ledger.export.tensorboard import EpochScalars

    board = EpochScalars(run_dir / "tensorboard", recipe.to_dict())

    def both(epoch: int, row: dict[str, float]) -> None:
        board(epoch, row)
        if on_epoch is not None:
            on_epoch(epoch, row)

    return both, board


def code_folder(recipe: Recipe) -> Path | None:
    """Whose git state the run records: the user's model's folder when it is in a git repository (that
    file defines the network), else None (the current directory)."""
    if isinstance(recipe.model, UserModelSpec) and recipe.model.module_dir:
        folder = Path(recipe.model.module_dir)
        if any((p / ".git").exists() for p in (folder, *folder.parents)):
            return folder
    return None


def _open_ledger(d: distributed.Dist | None) -> Ledger:
    """The default ledger; on several ranks rank 0 opens (and may create) it before the others read it."""
    if d is not None and not d.main:
        distributed.barrier(d)
    ledger = Ledger()
    if d is not None and d.main:
        distributed.barrier(d)
    return ledger


def _follow(recipe: Recipe | str, ledger: Ledger, resume: str | None, d: distributed.Dist, on_epoch) -> RunResult:
    """A rank other than 0: the same preparation and training as rank 0, reading the ledger but writing
    nothing (rank 0 records the run, its checkpoints and figures)."""
    if resume:
        rec = ledger.get(resume)
        if rec.status != "completed":
            distributed.check_world(ledger.run_dir(rec.id) / "checkpoint", d)
        recipe = Recipe.from_dict(rec.recipe, source=f"run {rec.id}")
    recipe = Recipe.load(recipe) if isinstance(recipe, str) else recipe
    ready = prepare(recipe, ledger, train, progress=False)
    device = resolve_device(recipe.train.device)
    run_id, resume_from_checkpoint = distributed.broadcast(None, d)
    run_dir = ledger.run_dir(run_id)
    if ready.method.outer_loop() is not None:
        raise DltricksError("this learning set-up runs its own outer loop on one process; train it without --nproc")
    use_threads(recipe, ready.model, ready.bundle, device, cap=torch.get_num_threads())
    with distributed.peers_watched():
        h = fit(ready.model, ready.bundle.train_source or ready.bundle.train, ready.bundle.val,
                spec=ready.recipe.train, seed=recipe.seed, progress=False, task=ready.task, augment=ready.augment,
                checkpoint_dir=run_dir, resume=resume_from_checkpoint, fingerprint=recipe.digest(),
                method=ready.method, on_epoch=on_epoch)
    return RunResult(run_id, "follower", {}, h, recipe, run_dir)


def _fit_and_score(ready: Prepared, recipe: Recipe, ledger: Ledger, device: torch.device, run_dir: Path,
                   history: list[History], *, progress: bool, resume: bool, on_epoch, threads_before: int):
    """Train, compress when ``[compress]`` asks, and score: the model, its metrics and its weights file
    (None until saved). ``history`` receives the training history as soon as there is one."""
    bundle, model, task, method = ready.bundle, ready.model, ready.task, ready.method
    threads = use_threads(recipe, model, bundle, device, cap=threads_before)
    if method.outer_loop() is not None and distributed.current() is not None:
        raise DltricksError("this learning set-up runs its own outer loop on one process; train it without --nproc")
    runner = method.outer_loop() or fit  # episodic learners (MAML) own their outer loop
    on_epoch, board = epoch_hooks(recipe, run_dir, on_epoch)
    try:
        with distributed.peers_watched():  # a rank that died: said as such, not as a socket error
            history.append(runner(model, bundle.train_source or bundle.train, bundle.val, spec=ready.recipe.train,
                                  seed=recipe.seed, progress=progress, task=task,
                                  augment=ready.augment, checkpoint_dir=run_dir, resume=resume,
                                  fingerprint=recipe.digest(), method=method, on_epoch=on_epoch))
    finally:
        if board is not None:
            board.close()
    found = history[0].notes.get("lr_found")  # train.lr = "find": what follows fine-tunes at the rate found
    trained = ready.recipe if found is None else ready.recipe.patch({"train.lr": found})
    weights, extra = None, {}
    if recipe.compress.active:  # [compress]: prune/quantize the trained model, then test what is left
        model, weights, extra, curves = compress_trained(model, trained, bundle, task, run_dir, progress=progress)
        history[0].curves.update(curves)
        device = torch.device("cpu")  # int8 kernels run on the CPU only
    metrics = final_metrics(model, bundle, task, history[0], trained, device, ready.setups, run_dir=run_dir,
                            ledger=ledger, progress=progress)
    metrics.update(extra)
    metrics["threads"] = float(threads)
    metrics.update(history[0].notes)  # what the loop chose before training (lr_found, with train.lr = "find")
    if not any(s.replaces_test_metrics for s in ready.setups):  # per-sample results: the report's bootstrap
        save_correct(model, bundle, task, device, run_dir)
    return model, metrics, weights
