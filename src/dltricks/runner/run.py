"""A recipe end to end: data, model, loop, test metrics, and a run in the ledger.

    result = train(Recipe.load("mnist1d-cnn"))
    result.metrics["test_accuracy"]
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dltricks.data import DataBundle, load_data
from dltricks.errors import DltricksError, RunFailed
from dltricks.ledger import Ledger
from dltricks.loop.checkpoint import find_checkpoint
from dltricks.loop.method import method_for
from dltricks.loop.tasks import Classification, Task
from dltricks.loop.training import History, TrainingInterrupted, eval_batch_size, evaluate, fit, resolve_device
from dltricks.nn import build_model
from dltricks.recipe import Recipe


@dataclass
class RunResult:
    run_id: str
    status: str
    metrics: dict[str, float]
    history: History
    recipe: Recipe
    run_dir: Path


def make_task(recipe: Recipe, bundle: DataBundle) -> Task:
    """The loss and metrics that fit the data: classification or segmentation."""
    t = recipe.train
    if bundle.task == "segmentation":
        from dltricks.loop.segmentation import make_segmentation_task

        return make_segmentation_task(recipe, bundle)
    if bundle.targets:
        from dltricks.loop.targets import make_targets_task

        return make_targets_task(recipe, bundle)
    if t.zero_shot == "dap":
        from dltricks.loop.zeroshot import AttributeTask, seen_unseen

        seen, _ = seen_unseen(bundle)
        if recipe.model.embedding_dim or t.metric_loss != "none":
            raise DltricksError("train.zero_shot = 'dap' makes the head predict the attributes; it cannot also "
                                "be an embedding (set model.embedding_dim = 0 and train.metric_loss = 'none')")
        if seen.min() < 0 or seen.max() > 1:
            raise DltricksError("train.zero_shot = 'dap' predicts attributes as probabilities: they must lie in "
                                "[0, 1]; use train.zero_shot = 'eszsl' for real-valued attributes")
        return AttributeTask(seen)
    if t.metric_loss != "none" or recipe.model.embedding_dim:
        from dltricks.loop.metric import MetricTask

        if t.metric_loss == "none" or not recipe.model.embedding_dim:
            raise DltricksError("train.metric_loss and model.embedding_dim go together: an embedding model is "
                                "trained by a metric loss (e.g. model.embedding_dim = 64, train.metric_loss = "
                                "'triplet'); set both or neither")
        return MetricTask(t.metric_loss, t.metric_margin)
    if t.loss != "ce":
        raise DltricksError(f"train.loss = {t.loss!r} is for segmentation; classification uses 'ce'")
    return Classification(label_smoothing=t.label_smoothing, class_weights=t.class_weights,
                          ece_bins=recipe.eval.ece_bins)


def make_augment(recipe: Recipe, bundle: DataBundle):
    from dltricks.data import augment  # None when every op is off
    from dltricks.loop.mixing import mixing_for, then

    d = recipe.data
    mix = mixing_for(d.mixup_alpha, d.cutmix_alpha, task=bundle.task, num_classes=bundle.num_classes,
                     classifies=isinstance(make_task(recipe, bundle), Classification), in_shape=bundle.in_shape)
    return then(augment.from_spec(d.augment, dims=len(bundle.in_shape) - 1, task=bundle.task), mix)


def build(recipe: Recipe) -> tuple[DataBundle, torch.nn.Module, Task]:
    """Data, a freshly initialised model (its init fixed by ``recipe.seed``) and the task."""
    bundle = load_data(recipe.data, recipe.seed)
    if bundle.novel is not None and recipe.train.zero_shot != "dap":  # before training, not after it
        from dltricks.loop.episodes import check_episodes

        e = recipe.eval
        check_episodes(bundle.novel[1], e.n_way, e.shots, e.queries, bundle.novel_names)
    torch.manual_seed(recipe.seed)
    try:
        # DAP's head predicts the attributes, one logit each, instead of the classes
        dap = recipe.train.zero_shot == "dap" and bundle.attributes is not None
        width = len(next(iter(bundle.attributes.values()))) if dap else bundle.num_classes
        if meta_episodes(recipe, bundle):  # one output per class of an episode, whichever classes it holds
            width = recipe.eval.n_way
        model = build_model(recipe.model, bundle.in_shape, width)
    except (ValueError, TypeError) as e:
        raise DltricksError(f"model {recipe.model.name!r} cannot be built for input {bundle.in_shape}: {e}") from None
    return bundle, model, make_task(recipe, bundle)


_COMPRESSOR: list[Callable[..., Any]] = []


def register_compressor(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``dltricks.compress`` registers the function that applies a recipe's ``[compress]`` section to a
    trained model: ``fn(model, recipe, bundle, task, run_dir, progress=...)`` returns the compressed
    model, its weights file, extra metrics and curves."""
    _COMPRESSOR[:] = [fn]
    return fn


def compressor() -> Callable[..., Any]:
    if not _COMPRESSOR:
        importlib.import_module("dltricks.compress")  # registers; a name, not an upward import
    return _COMPRESSOR[0]


def meta_episodes(recipe: Recipe, bundle: DataBundle) -> bool:
    """A meta-learner on few-shot episodes (``train.meta`` with ``data.novel_classes``): its head has
    ``eval.n_way`` outputs whose meaning changes with every episode, so it has no plain test accuracy;
    it is scored by adapting to the novel classes' episodes."""
    return recipe.train.meta != "none" and bundle.tasks is None and bundle.novel is not None


def train(recipe: Recipe | str, *, ledger: Ledger | None = None, progress: bool = True,
          resume: str | None = None, study: str | None = None, variant: str | None = None,
          run_id: str | None = None, keep_checkpoint: bool = False, on_epoch=None) -> RunResult:
    """Run a recipe and record it. ``resume=RUN_ID`` continues an interrupted run from its checkpoint.
    A completed run keeps its weights (``model.safetensors``); its resume checkpoint (weights, optimiser
    and RNG states, as large again as the model or more) is deleted unless ``keep_checkpoint``.
    ``on_epoch(epoch, row)`` is :func:`~dltricks.loop.training.fit`'s per-epoch hook (a tuner's pruner).

    Raises :class:`RunFailed` (the run is marked failed with the reason) or
    :class:`~dltricks.loop.training.TrainingInterrupted` (marked interrupted, resumable).
    """
    ledger = ledger or Ledger()
    if resume:
        rec = ledger.get(resume)
        if rec.status == "completed":
            raise DltricksError(f"run {rec.id} is already completed; nothing to resume")
        recipe = Recipe.from_dict(rec.recipe, source=f"run {rec.id}")
        run_id = rec.id
        ledger.update(run_id, status="running", failure=None)
    else:
        recipe = Recipe.load(recipe) if isinstance(recipe, str) else recipe
    threads_before = torch.get_num_threads()  # the caller's setting: the cap for "auto", restored after
    device = resolve_device(recipe.train.device)
    if not resume:
        run_id = ledger.start_run(name=recipe.name, recipe=recipe.to_dict(), seed=recipe.seed,
                                  device=str(device), study=study, variant=variant, run_id=run_id)
    run_dir = ledger.run_dir(run_id)
    (run_dir / "recipe.toml").write_text(recipe.to_toml())
    # a run stopped before its first checkpoint has nothing to continue: it starts again (same seed, same run)
    resume_from_checkpoint = bool(resume) and find_checkpoint(run_dir / "checkpoint") is not None
    try:
        bundle, model, task = build(recipe)
        augment = make_augment(recipe, bundle)
        method = method_for(recipe, bundle, model, task, ledger, augmented=augment is not None, quiet=not progress)
        from dltricks.loop.predictive import check_uncertainty

        check_uncertainty(recipe, bundle, model, task)
        threads = use_threads(recipe, model, bundle, device, cap=threads_before)
        runner = method.outer_loop() or fit  # episodic learners (MAML) own their outer loop
        history = runner(model, bundle.train_source or bundle.train, bundle.val, spec=recipe.train,
                         seed=recipe.seed, progress=progress, task=task, augment=augment,
                         checkpoint_dir=run_dir, resume=resume_from_checkpoint, fingerprint=recipe.digest(),
                         method=method, on_epoch=on_epoch)
        weights = None
        if recipe.compress.active:  # [compress]: prune/quantize the trained model, then test what is left
            model, weights, extra, curves = compressor()(model, recipe, bundle, task, run_dir, progress=progress)
            history.curves.update(curves)
            device = torch.device("cpu")  # int8 kernels run on the CPU only
        metrics = final_metrics(model, bundle, task, history, recipe, device, run_dir=run_dir, ledger=ledger,
                                progress=progress)
        if weights is not None:
            metrics.update(extra)
        metrics["threads"] = float(threads)
        metrics.update(history.notes)  # what the loop chose before training (lr_found, with train.lr = "find")
    except TrainingInterrupted as e:
        # no history of its own: it stopped after the run's training (in an ensemble member)
        h = e.history if e.history is not None else history
        ledger.update(run_id, status="interrupted", curves=h.curves,
                      checkpoint=str(e.checkpoint) if e.checkpoint else None)
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
    finally:
        torch.set_num_threads(threads_before)
    from dltricks.loop.checkpoint import save_weights

    weights = weights or save_weights(run_dir / "model.safetensors", model)
    if bundle.test_tasks is not None:  # the MAML paper's pre/post-update figure
        from dltricks.loop.adaptation import plot_adaptation

        plot_adaptation(model, bundle.tasks, bundle.test_tasks, recipe.eval.adapt_steps, recipe.train.inner_lr,
                        run_dir / "adaptation.png")
    if meta_episodes(recipe, bundle):  # accuracy against adaptation steps, on 200 of the test episodes
        from dltricks.data.episodes import gather
        from dltricks.loop.adaptation import plot_episode_adaptation
        from dltricks.loop.episodes import novel_episodes

        e, t = recipe.eval, recipe.train
        x, y = bundle.novel
        batches = {k: gather(x, novel_episodes(y, e.n_way, k, e.queries, min(e.episodes, 200), recipe.seed), k)
                   for k in e.shots}
        plot_episode_adaptation(model, batches, max(*e.adapt_steps, t.inner_steps), t.inner_lr,
                                run_dir / "adaptation.png", t.inner_steps, f"{recipe.name}: train.meta = {t.meta}")
    if "test_gzsl_h" in metrics:
        from dltricks.loop.zeroshot import plot_zero_shot

        plot_zero_shot(metrics, run_dir / "zero_shot.png",
                       f"{recipe.name}: train.zero_shot = {recipe.train.zero_shot}")
    ledger.finish(run_id, "completed", metrics=metrics, curves=history.curves, checkpoint=str(weights))
    if not keep_checkpoint:
        import shutil

        for path in run_dir.glob("checkpoint*"):  # the checkpoint and any .old copy of a cut-short swap
            shutil.rmtree(path, ignore_errors=True)
    return RunResult(run_id, "completed", metrics, history, recipe, run_dir)


# what final_metrics records besides the task's test_*/val_* metrics
RUN_METRICS = ("train_loss", "epochs", "wall_time_s", "params")


def metric_names(recipe: Recipe) -> list[str]:
    """The metrics a run of ``recipe`` records (the keys of :func:`final_metrics`), known before training:
    the freshly built model is scored on a few test samples by the same :func:`evaluate`, so the names
    are exactly those of a run (a multi-target task's ``test_peak_mae``, say). Sweeps check the metric
    they compare against this list."""
    bundle, model, task = build(recipe)
    x, y = bundle.test
    few = (x[:4], y[:4])
    names = [] if meta_episodes(recipe, bundle) else \
        [f"test_{k}" for k in evaluate(model, few, task, batch_size=4, device="cpu")]
    if bundle.val is not None:
        names += [f"val_{k.removeprefix('test_')}" for k in names]
    from dltricks.loop.predictive import uncertainty_names

    if not meta_episodes(recipe, bundle):
        names += [k for k in uncertainty_names(recipe, bundle, task) if k not in names]
    return names + setup_metric_names(recipe, bundle) + list(RUN_METRICS)


def setup_metric_names(recipe: Recipe, bundle: DataBundle) -> list[str]:
    """The metrics :func:`final_metrics` adds for held-out classes (few-shot episodes, zero-shot) and task
    families (post-update errors), from the recipe and the data alone."""
    e, names = recipe.eval, []
    if bundle.novel is not None and bundle.attributes is not None:
        names += [f"test_{k}" for k in ("zsl_accuracy", "gzsl_seen", "gzsl_unseen", "gzsl_h")]
    if bundle.novel is not None and recipe.train.zero_shot != "dap":
        steps = e.adapt_steps if meta_episodes(recipe, bundle) else []
        for k in e.shots:
            names += [f"test_{e.n_way}way_{k}shot_accuracy", f"test_{e.n_way}way_{k}shot_ci95"]
            names += [f"test_{e.n_way}way_{k}shot_accuracy_{s}step" for s in steps]
        names.append("test_novel_recall_at_1")
    if bundle.test_tasks is not None:
        names += ["test_pre_update_mse"] + [f"test_post_update_mse_{s}step" for s in e.adapt_steps]
    return names


def use_threads(recipe: Recipe, model: torch.nn.Module, bundle: DataBundle, device: torch.device, *,
                cap: int | None = None, cache: Path | None = None) -> int:
    """Set torch's CPU threads for this run (``train.threads``; "auto": timed on one batch of this data,
    see :mod:`dltricks.loop.threads`) and return the count."""
    from dltricks.loop import threads as th
    from dltricks.loop.batches import Batches

    n = recipe.train.threads
    if n == "auto":
        cache = cache or th.cache_path()
        with torch.random.fork_rng(devices=[]):  # a Dataset may draw its patches from torch's RNG
            source = Batches(bundle.train_source or bundle.train, recipe.train.batch_size, recipe.seed, device)
            x, _ = next(source.epoch(0, torch.arange(source.n)))
        key = {"model": recipe.model.model_dump(), "in_shape": list(x.shape), "precision": recipe.train.precision}
        n = th.resolve("auto", model=model, batch=x, device=device, cap=cap, cache=cache, key=key)
    torch.set_num_threads(n)
    return n


def final_metrics(model: torch.nn.Module, bundle: DataBundle, task: Task, history: History, recipe: Recipe,
                  device: torch.device, run_dir: Path | None = None, ledger: Ledger | None = None,
                  progress: bool = False) -> dict[str, float]:
    """``test_*`` and ``val_*`` metrics of the final (or best) weights, plus cost and time; with the
    uncertainty and calibration metrics of the recipe's predictive distribution
    (:func:`~dltricks.loop.predictive.uncertainty_metrics`)."""
    from dltricks.loop.predictive import uncertainty_metrics

    kw = dict(batch_size=eval_batch_size(recipe.train.batch_size), device=device, precision=recipe.train.precision)
    episodic = meta_episodes(recipe, bundle)
    out = {} if episodic else {f"test_{k}": v for k, v in evaluate(model, bundle.test, task, **kw).items()}
    if bundle.val is not None and not episodic:
        out.update({f"val_{k}": v for k, v in evaluate(model, bundle.val, task, **kw).items()})
    if bundle.novel is not None and bundle.attributes is not None:  # zero-shot on the unseen classes
        from dltricks.loop.zeroshot import zero_shot_metrics

        t = recipe.train
        zs = zero_shot_metrics(model, bundle, t.zero_shot, t.eszsl_gamma, t.eszsl_lambda, device=device)
        out.update({f"test_{k}": v for k, v in zs.items()})
    if bundle.novel is not None and recipe.train.zero_shot != "dap":  # few-shot episodes on the held-out classes
        from dltricks.loop.episodes import fewshot_metrics
        from dltricks.loop.metric import NORMALISED

        e = recipe.eval
        fs = fewshot_metrics(model, bundle.novel, embedding=bool(recipe.model.embedding_dim), n_way=e.n_way,
                             shots=e.shots, queries=e.queries, episodes=e.episodes, seed=recipe.seed,
                             normalise=recipe.train.metric_loss in NORMALISED, names=bundle.novel_names,
                             device=device, head=e.episode_head,
                             adapt_steps=e.adapt_steps if episodic else None,
                             inner_steps=recipe.train.inner_steps, inner_lr=recipe.train.inner_lr)
        out.update({f"test_{k}": v for k, v in fs.items()})
    if bundle.test_tasks is not None:  # a task family: the error after a few steps on each test task
        from dltricks.loop.adaptation import post_update_metrics

        adapted = post_update_metrics(model, bundle.test_tasks, recipe.eval.adapt_steps, recipe.train.inner_lr)
        out.update({f"test_{k}": v for k, v in adapted.items()})
    if bundle.target_test is not None:  # a [data.target] domain: its labels serve only here
        out.update({f"test_target_{k}": v for k, v in evaluate(model, bundle.target_test, task, **kw).items()})
    out.update({k: v[-1] for k, v in history.curves.items() if k.startswith("oracle_")})
    if not episodic:  # the head's classes change with every episode: nothing to calibrate
        out.update(uncertainty_metrics(recipe, bundle, model, task, device, run_dir=run_dir, ledger=ledger,
                                       progress=progress))
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
