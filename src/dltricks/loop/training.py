"""The training loop: one readable function around a plain PyTorch step.

    history = fit(model, (x, y), val=(xv, yv), epochs=10, batch_size=64, lr=1e-3, schedule="cosine")
    history = fit(model, (x, y), val=(xv, yv), spec=recipe.train)      # a recipe's train section as it is

Every trick is a keyword (the same names as the recipe's ``train`` keys); the loop adds only what a
careful hand-written loop would have: seeded data order, a NaN check, checkpoints that resume
bit-for-bit, and a progress bar. Started by torchrun as one of several ranks it trains one run on all of
them (:mod:`dltricks.loop.distributed`). Its parts (restore, update, end of epoch) are named in
:mod:`dltricks.loop.parts`, where an episodic learner's own outer loop finds them too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import DataLoader

from dltricks.errors import DltricksError
from dltricks.loop import distributed
from dltricks.loop.averaging import weight_average
from dltricks.loop.batches import Batches, Source
from dltricks.loop.compiling import compile_model
from dltricks.loop.evaluation import eval_batch_size, evaluate, resolve_device
from dltricks.loop.method import Batch, Method
from dltricks.loop.optim import build_optimizer
from dltricks.loop.parts import DIVERGED, History, Loop, StopFlag, TrainingInterrupted
from dltricks.loop.schedules import build_scheduler
from dltricks.loop.tasks import Classification, Task
from dltricks.recipe import TrainSpec, explain_errors

__all__ = ["fit", "train_spec", "evaluate", "eval_batch_size", "resolve_device", "History", "TrainingInterrupted",
           "StopFlag", "DIVERGED", "Augment"]

Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def fit(model: nn.Module, train: Source, val: Source | None = None, *, spec: TrainSpec | None = None,
        epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
        optimizer: str | None = None, schedule: str | None = None, grad_clip: float | None = None,
        label_smoothing: float | None = None, seed: int = 0, device: str | None = None, progress: bool = True,
        task: Task | None = None, augment: Augment | None = None, checkpoint_dir: str | Path | None = None,
        resume: bool = False, fingerprint: str = "", on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        method: Method | None = None, **options: Any) -> History:
    """Train ``model`` in place and return its :class:`History`.

    ``train``/``val`` are ``(x, y)`` tensors, a Dataset of ``(x, y)`` items or a DataLoader. The training
    keys are ``spec`` (a recipe's ``train`` section) or keywords: ``epochs``, ``lr``, ... and in ``options``
    any other ``train`` key (``weight_decay``, ``early_stopping``, ``precision``, ...); keywords given with
    ``spec`` replace its keys. Either way they are validated as a recipe's are. With ``checkpoint_dir`` the
    loop saves after every epoch and on Ctrl-C, and ``resume=True`` continues from what is there.
    ``batch_size`` is needed for tensors and Datasets; a DataLoader brings its own. ``method`` (a
    :class:`~dltricks.loop.method.Method`) says what a step computes; by default the supervised loss of ``task``.
    """
    if batch_size is None and spec is None:
        if not isinstance(train, DataLoader):
            raise DltricksError("fit: batch_size is needed for tensors or a Dataset (a DataLoader brings its own)")
        batch_size = train.batch_size or 64  # a batch_sampler's loader has none: 64 only sizes evaluation
    _check_targets(train, task if task is not None or method is None else method.task)
    cfg = train_spec(spec, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule,
                     grad_clip=grad_clip, label_smoothing=label_smoothing, device=device, **options)
    task = task or (method.task if method is not None else Classification(label_smoothing=cfg.label_smoothing))
    method = method or Method(task)
    dist = distributed.setup(cfg.device)  # None in one process
    dev = distributed.rank_device(resolve_device(cfg.device), dist)
    if dist is not None and cfg.sync_batchnorm:
        model = distributed.sync_batchnorm(model, dev)  # in place, below the top module
    model.to(dev)
    method.to(dev)
    if dev.type == "cuda" and isinstance(train, tuple) and train[0].dim() == 4:
        model.to(memory_format=torch.channels_last)  # faster convolutions on tensor cores
    batches = Batches(train, cfg.batch_size, seed, dev, dist=dist)
    cfg, net, lr_found = _prepare(model, batches, cfg, task, seed, augment, checkpoint_dir if resume else None)
    opt = build_optimizer(model, cfg, method.param_groups(model, cfg))
    average = weight_average(model, cfg, opt, len(batches))
    loop = Loop(model, method, cfg, opt, build_scheduler(opt, cfg, len(batches)), epochs=cfg.epochs,
                steps=len(batches), rngs={"data_rng": batches.gen}, device=dev, checkpoint_dir=checkpoint_dir,
                fingerprint=fingerprint, progress=progress, on_epoch=on_epoch,
                scaler=torch.amp.GradScaler("cuda") if cfg.precision == "fp16" and dev.type == "cuda" else None,
                labelled=_has_labels(train) and getattr(task, "counts_accuracy", True),  # not for embeddings
                average=average, dist=dist)
    # dropout and any other randomness inside the model (each rank its own draws, checkpointed per rank)
    torch.manual_seed(seed + (dist.rank if dist is not None else 0))
    if resume:
        loop.restore(mid_epoch=["perm"])
    loop.st.lr_found = lr_found
    if dist is not None:
        distributed.broadcast_state(model, dist)  # one start on every rank, whatever each rank's init drew
    st, total_steps = loop.st, cfg.epochs * len(batches)
    with loop:
        while loop.running():
            loop.start_epoch()
            if st.step == 0:  # a resumed epoch goes on in the order it began with
                st.tensors["perm"] = method.order(batches)
                if isinstance(batches.source, DataLoader):
                    st.tensors["epoch_rng"] = torch.get_rng_state()
            for x, y in batches.epoch(st.epoch, st.tensors["perm"], st.step, st.tensors.get("epoch_rng")):
                index = batches.index(st.tensors["perm"], st.step)
                if augment is not None:
                    x, y = augment(x, y)
                t = st.global_step / total_steps
                n = batches.step_size(st.tensors["perm"], st.step) if dist is not None else len(y)  # all ranks
                lv, logits = loop.step(lambda b: method.loss(net, b, t), Batch(x, y, index), n)  # noqa: B023
                method.after_step(model)
                # mixup/CutMix made class probabilities: accuracy counts the larger share
                loop.count(lv, n, logits, y.argmax(1) if y.dim() == 2 and torch.is_floating_point(y) else y)
                if loop.stopping:
                    break
            row = loop.end_steps()  # stopped mid-epoch: checkpoint, TrainingInterrupted
            row.update(method.end_epoch())
            if val is not None:
                vm = evaluate(loop.evaluated, val, task, batch_size=eval_batch_size(cfg.batch_size), device=dev,
                              precision=cfg.precision)
                row.update({f"val_{k}": v for k, v in vm.items()})
            loop.end_epoch(row)  # curves, early stopping, best weights, checkpoint
    return loop.finish(x for x, _ in batches.epoch(st.epoch, torch.arange(batches.n)))


def _prepare(model: nn.Module, batches: Batches, cfg: TrainSpec, task: Task, seed: int, augment: Augment | None,
             resume_from: str | Path | None) -> tuple[TrainSpec, nn.Module, float | None]:
    """What must happen before the optimiser exists: ``train.lr = "find"`` (the LR range test's suggestion,
    or a resumed run's from its checkpoint in ``resume_from``) and ``train.compile``. Returns the spec with
    its rate, the module the training step calls (the model, or its compiled form) and the rate found."""
    found = None
    if cfg.lr == "find":
        from dltricks.loop.checkpoint import peek_loop
        from dltricks.loop.lr_find import lr_range_test

        if resume_from is not None:
            found = peek_loop(Path(resume_from) / "checkpoint").get("lr_found")
        if found is None:
            with torch.random.fork_rng(devices=[]):  # augmenting draws from torch's RNG: the run's must not move
                found = lr_range_test(model, batches.source, spec=cfg.model_copy(update={"lr": 1e-3}), task=task,
                                      seed=seed, augment=augment, device=batches.device).suggestion
        cfg = cfg.model_copy(update={"lr": float(found)})
    net = model
    if cfg.compile != "off":
        with torch.random.fork_rng(devices=[]):  # a Dataset may draw its patches from torch's RNG
            x0, y0 = next(batches.epoch(0, torch.arange(batches.n)))
        net = compile_model(model, cfg.compile, x0, y0, task)  # unaugmented: augmenting would draw from the RNG
    return cfg, net, found


def train_spec(spec: TrainSpec | None = None, **keys: Any) -> TrainSpec:
    """The :class:`TrainSpec` of ``spec`` (or the recipe defaults) with ``keys`` on top (those not None),
    validated as a recipe's ``train`` section; a bad key or value is one line."""
    given = {k: v for k, v in keys.items() if v is not None}
    if spec is not None and not given:
        return spec
    try:
        return TrainSpec.model_validate({**(spec.model_dump() if spec is not None else {}), **given})
    except ValidationError as e:
        raise DltricksError(f"fit: {explain_errors(e, TrainSpec)}") from None


def _has_labels(source: Source) -> bool:
    """Integer targets: class labels (or label maps) that accuracy can be counted on."""
    if isinstance(source, tuple):
        return not torch.is_floating_point(source[1])
    ds = getattr(source, "dataset", source)
    return not torch.is_floating_point(torch.as_tensor(ds[0][1]))


def _check_targets(source: Source, task: Task | None) -> None:
    """Classification needs integer class ids (N,) or class probabilities (N, C): float class ids
    (``y`` made with ``torch.tensor([0., 2., 1.])``, say) would fail deep inside cross-entropy."""
    if task is not None and not isinstance(task, Classification):
        return  # another task decides what its targets are
    if isinstance(source, tuple):
        y, per_sample = source[1], False
    else:
        ds = getattr(source, "dataset", source)
        try:
            y, per_sample = torch.as_tensor(ds[0][1]), True
        except (IndexError, TypeError, KeyError):
            return
    if not torch.is_floating_point(y) or y.dim() == (1 if per_sample else 2):
        return  # class ids, or per-class probabilities
    whole = bool(torch.all(y == y.round())) if y.numel() else False
    fix = "convert them with y.long()" if whole else "give class ids 0..K-1 (integers)"
    raise DltricksError(f"fit: the labels are floats ({y.dtype}, shape {tuple(y.shape)}{' per sample' * per_sample});"
                        f" classification needs integer class ids: {fix}, or class probabilities of shape (N, C)")
