"""The training loop: one readable function around a plain PyTorch step.

    history = fit(model, (x, y), val=(xv, yv), epochs=10, batch_size=64, lr=1e-3, schedule="cosine")

Every trick is a keyword (the same names as the recipe's ``train`` keys); the loop adds only what a
careful hand-written loop would have: seeded data order, a NaN check, checkpoints that resume
bit-for-bit, and a progress bar.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import DataLoader

from dltricks.errors import DltricksError, RunFailed
from dltricks.loop.batches import Batches, Source
from dltricks.loop.checkpoint import LoopState, find_checkpoint, load_checkpoint, save_checkpoint
from dltricks.loop.method import Batch, Method
from dltricks.loop.optim import build_optimizer
from dltricks.loop.progress import TrainProgress
from dltricks.loop.schedules import build_scheduler
from dltricks.loop.tasks import Classification, Task
from dltricks.recipe import TrainSpec, explain_errors

Augment = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class History:
    """Per-epoch curves (``train_loss``, ``val_accuracy``, ``lr``, ...) and how training ended."""

    curves: dict[str, list[float]] = field(default_factory=dict)
    epochs: int = 0
    best_epoch: int | None = None
    stopped_early: bool = False
    wall_time: float = 0.0

    def __getitem__(self, key: str) -> list[float]:
        return self.curves[key]

    @property
    def final(self) -> dict[str, float]:
        """The last value of every curve."""
        return {k: v[-1] for k, v in self.curves.items() if v}

    @classmethod
    def of(cls, st: LoopState) -> History:
        """The history so far of a loop that stands at ``st``."""
        return cls(curves={k: list(v) for k, v in st.curves.items()}, epochs=st.epoch, best_epoch=st.best_epoch,
                   stopped_early=st.stopped_early, wall_time=st.elapsed)


class TrainingInterrupted(Exception):
    """Ctrl-C reached a safe point: the loop saved a checkpoint (if it had somewhere to) and stopped."""

    def __init__(self, checkpoint: Path | None, history: History, *, epoch: int = 0, step: int = 0,
                 epochs: int = 0, steps: int = 0):
        where = f" in epoch {epoch + 1} of {epochs}, after step {step} of {steps}" if step else \
            f" after epoch {epoch} of {epochs}" if epochs else ""
        super().__init__(f"training interrupted{where}")
        self.checkpoint, self.history = checkpoint, history
        self.epoch, self.step, self.epochs, self.steps = epoch, step, epochs, steps
        self.where = where.strip()  # "in epoch 3 of 6, after step 12 of 57" or "after epoch 2 of 6"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DltricksError(f"train.device = {name!r} but no CUDA device is available; use auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DltricksError(f"train.device = {name!r} but this machine has {torch.cuda.device_count()} CUDA "
                            f"device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}; use auto, cuda or cpu")
    mps = getattr(torch.backends, "mps", None)
    if dev.type == "mps" and not (mps is not None and mps.is_available()):
        raise DltricksError(f"train.device = {name!r} but no Apple MPS device is available; use auto or cpu")
    return dev


# ---- evaluation ----------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model: nn.Module, data: Source, task: Task | None = None, *, batch_size: int = 256,
             device: str | torch.device = "auto", precision: str = "fp32") -> dict[str, float]:
    """Metrics of ``model`` on ``data`` (``loss``, ``accuracy``, ``ece`` for classification)."""
    task = task or Classification()
    dev = resolve_device(device) if isinstance(device, str) else device
    was_training = model.training
    model.eval()
    meter = task.meter()
    batches = Batches(data, batch_size, 0, dev, fold_single=False)
    with _autocast(dev, precision):
        for x, y in batches.epoch(0, torch.arange(batches.n)):
            logits = task.predict(model, x)
            meter.update(logits.float(), y, task.loss(logits, y))
    model.train(was_training)
    return meter.compute()


def eval_batch_size(train_batch_size: int) -> int:
    """Evaluation holds no gradients, so it can take larger batches; scaled from the training batch so
    that a 3D segmentation recipe with batch 2 does not try 256 volumes at once."""
    return 4 * train_batch_size


def _autocast(dev: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "fp16" and dev.type != "cuda":
        raise DltricksError("train.precision = 'fp16' needs CUDA (it relies on loss scaling); use bf16 on CPU")
    return torch.autocast(dev.type, dtype=dtype)


# ---- Ctrl-C ----------------------------------------------------------------------------------------

class StopFlag:
    """Turns the first SIGINT into a request to stop at the next safe point; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> StopFlag:
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            self._old = None
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


# ---- the loop --------------------------------------------------------------------------------------

def fit(model: nn.Module, train: Source, val: Source | None = None, *, epochs: int, batch_size: int | None = None,
        lr: float, optimizer: str = "adamw", schedule: str | None = None, grad_clip: float | None = None,
        label_smoothing: float = 0.0, seed: int = 0, device: str = "auto", progress: bool = True,
        task: Task | None = None, augment: Augment | None = None,
        checkpoint_dir: str | Path | None = None, resume: bool = False, fingerprint: str = "",
        on_epoch: Callable[[int, dict[str, float]], None] | None = None, method: Method | None = None,
        **options: Any) -> History:
    """Train ``model`` in place and return its :class:`History`.

    ``train``/``val`` are ``(x, y)`` tensors, a Dataset of ``(x, y)`` items or a DataLoader.
    ``options`` are any other ``train`` recipe keys (``weight_decay``, ``warmup_epochs``,
    ``early_stopping``, ``precision``, ...), validated the same way. With ``checkpoint_dir`` the loop
    saves after every epoch and on Ctrl-C, and ``resume=True`` continues from what is there.
    ``batch_size`` is needed for tensors and Datasets; a DataLoader brings its own.
    ``method`` (a :class:`~dltricks.loop.method.Method`) says what a step computes; by default the
    supervised loss of ``task``.
    """
    if batch_size is None:
        if not isinstance(train, DataLoader):
            raise DltricksError("fit: batch_size is needed for tensors or a Dataset (a DataLoader brings its own)")
        batch_size = train.batch_size or 64  # a batch_sampler's loader has none: 64 only sizes evaluation
    _check_targets(train, task if task is not None or method is None else method.task)
    try:
        cfg = TrainSpec(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                        schedule=schedule or "constant", grad_clip=grad_clip or 0.0,
                        label_smoothing=label_smoothing, device=device, **options)
    except ValidationError as e:
        raise DltricksError(f"fit: {explain_errors(e, TrainSpec)}") from None
    task = task or (method.task if method is not None else Classification(label_smoothing=cfg.label_smoothing))
    method = method or Method(task)
    dev = resolve_device(cfg.device)
    model.to(dev)
    method.to(dev)
    if dev.type == "cuda" and _is_image_batch(train):
        model.to(memory_format=torch.channels_last)  # faster convolutions on tensor cores

    batches = Batches(train, cfg.batch_size, seed, dev)
    opt = build_optimizer(model, cfg, method.param_groups(model, cfg))
    clipped = list(model.parameters()) + [p for m in method.modules().values() for p in m.parameters()]
    scheduler = build_scheduler(opt, cfg, len(batches))
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" and dev.type == "cuda" else None
    ckpt = Path(checkpoint_dir) / "checkpoint" if checkpoint_dir else None

    torch.manual_seed(seed)  # dropout and any other randomness inside the model
    st, best = LoopState(), None
    if resume:
        if ckpt is None or find_checkpoint(ckpt) is None:
            raise DltricksError(f"nothing to resume: no checkpoint under {checkpoint_dir}")
        st, best = load_checkpoint(ckpt, model, opt, scheduler, fingerprint)
        method.load_state_dict({k[7:]: v for k, v in st.tensors.items() if k.startswith("method.")})
        method.load_extra_state(st.method)
        need = ["data_rng", "torch_rng"] + (["perm"] if st.step else [])
        if any(k not in st.tensors for k in need):
            raise DltricksError(f"checkpoint {find_checkpoint(ckpt)} is corrupt or incomplete (no "
                                f"{', '.join(k for k in need if k not in st.tensors)} state)")
        batches.gen.set_state(st.tensors["data_rng"])
        torch.set_rng_state(st.tensors["torch_rng"])
        if dev.type == "cuda" and "cuda_rng" in st.tensors:
            torch.cuda.set_rng_state(st.tensors["cuda_rng"], dev)
    monitor, better = cfg.monitor, _better(cfg.monitor)

    def snapshot() -> None:
        st.tensors.update(data_rng=batches.gen.get_state(), torch_rng=torch.get_rng_state())
        st.tensors.update({f"method.{k}": v for k, v in method.state_dict().items()})
        st.method = method.extra_state()
        if dev.type == "cuda":  # dropout on the GPU draws from its own generator
            st.tensors["cuda_rng"] = torch.cuda.get_rng_state(dev)
        save_checkpoint(ckpt, model, opt, scheduler, st, best, fingerprint)

    labelled = _has_labels(train) and getattr(task, "counts_accuracy", True)  # not for embeddings
    amp = contextlib.nullcontext() if cfg.precision == "fp32" else None  # reusable; autocast is made per step
    bar = TrainProgress(progress, cfg.epochs, len(batches))
    t0 = time.perf_counter() - st.elapsed
    total_steps = cfg.epochs * len(batches)
    with StopFlag() as stop, bar:
        while st.epoch < cfg.epochs and not st.stopped_early:
            model.train()
            method.start_epoch(model, st.epoch)
            if st.step == 0:
                st.tensors["perm"] = method.order(batches)
                if isinstance(batches.source, DataLoader):
                    st.tensors["epoch_rng"] = torch.get_rng_state()
            bar.start_epoch(st.epoch, st.step)
            hits = _Hits()
            for x, y in batches.epoch(st.epoch, st.tensors["perm"], st.step, st.tensors.get("epoch_rng")):
                index = batches.index(st.tensors["perm"], st.step)
                if augment is not None:
                    x, y = augment(x, y)
                with amp if amp is not None else _autocast(dev, cfg.precision):
                    loss, logits = method.loss(model, Batch(x, y, index), st.global_step / total_steps)
                lv = loss.item()
                if not math.isfinite(lv):
                    raise RunFailed(_diagnose_nan(st, cfg, bar.last_loss))
                if st.first_loss is None:
                    st.first_loss = lv
                elif lv > DIVERGED * max(st.first_loss, 1.0):
                    raise RunFailed(_diagnose_nan(st, cfg, bar.last_loss, diverged=(lv, st.first_loss)))
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                else:
                    loss.backward()
                if cfg.grad_clip > 0:
                    if cfg.grad_clip_mode == "norm":
                        nn.utils.clip_grad_norm_(clipped, cfg.grad_clip)
                    else:
                        nn.utils.clip_grad_value_(clipped, cfg.grad_clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                if scheduler is not None:
                    scheduler.step()
                method.after_step(model)
                st.loss_sum += lv * len(y)  # the loss is on the host already: no device op for it
                if labelled:  # class scores along dim 1: accuracy (per pixel for segmentation)
                    hits.add(logits, y)
                    st.counted += y.numel()
                st.seen += len(y)
                st.step += 1
                st.global_step += 1
                bar.step(lv)
                if stop.requested:
                    break
            st.correct += hits.count()
            st.elapsed = time.perf_counter() - t0
            if stop.requested and st.step < len(batches):
                if ckpt is not None:
                    snapshot()
                raise TrainingInterrupted(ckpt, History.of(st), epoch=st.epoch, step=st.step,
                                          epochs=cfg.epochs, steps=len(batches))

            # ---- end of epoch: metrics, early stopping, checkpoint
            row = {"train_loss": st.loss_sum / max(st.seen, 1), "lr": opt.param_groups[0]["lr"]}
            if labelled:
                row["train_accuracy"] = st.correct / max(st.counted, 1)
            row.update(method.end_epoch())
            if val is not None:
                vm = evaluate(model, val, task, batch_size=eval_batch_size(cfg.batch_size), device=dev,
                              precision=cfg.precision)
                row.update({f"val_{k}": v for k, v in vm.items()})
            st.end_epoch(row)
            if monitor in row:
                value = row[monitor]
                if st.best_value is None or better(value, st.best_value):
                    st.best_value, st.best_epoch, st.bad_epochs = value, st.epoch, 0
                    if cfg.early_stopping and cfg.restore_best:
                        best = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    st.bad_epochs += 1
                    st.stopped_early = bool(cfg.early_stopping) and st.bad_epochs >= cfg.early_stopping
            bar.end_epoch(row)
            if on_epoch is not None:
                on_epoch(st.epoch, row)
            st.elapsed = time.perf_counter() - t0
            if ckpt is not None:
                snapshot()
            if stop.requested:
                raise TrainingInterrupted(ckpt, History.of(st), epoch=st.epoch, epochs=cfg.epochs,
                                          steps=len(batches))
    if best is not None and cfg.restore_best:
        model.load_state_dict(best)
    method.finish(model)
    return History.of(st)


class _Hits:
    """Correct predictions over an epoch, without a sync or a reduction per step: class labels keep each
    step's predictions and compare them once, at the end; label maps (too large to keep) add up per step
    on the device."""

    def __init__(self) -> None:
        self.preds: list[torch.Tensor] = []
        self.ys: list[torch.Tensor] = []
        self.maps: torch.Tensor | None = None

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        pred = logits.detach().argmax(1)
        if y.dim() == 1:
            self.preds.append(pred)
            self.ys.append(y)
        else:
            n = (pred == y).sum()
            self.maps = n if self.maps is None else self.maps + n

    def count(self) -> int:
        n = int((torch.cat(self.preds) == torch.cat(self.ys)).sum()) if self.preds else 0
        return n + (int(self.maps) if self.maps is not None else 0)


def _better(monitor: str) -> Callable[[float, float], bool]:
    from dltricks.loop.tasks import higher_is_better

    return (lambda a, b: a > b) if higher_is_better(monitor) else (lambda a, b: a < b)


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


def _is_image_batch(source: Source) -> bool:
    return isinstance(source, tuple) and source[0].dim() == 4


# A loss this many times its first value (or 1, if that was smaller) has blown up: training from there
# ends at chance with astronomic test losses, without a NaN to stop it.
DIVERGED = 1000.0


def _diagnose_nan(st: LoopState, cfg: TrainSpec, last: float | None,
                  diverged: tuple[float, float] | None = None) -> str:
    where = f"epoch {st.epoch + 1}, step {st.step + 1}"
    before = f"last finite loss {last:.4g}" if last is not None else "no finite loss before it"
    if diverged is not None:
        value, first = diverged
        head = f"loss diverged to {value:.3g} ({value / first:.3g} times its first value {first:.4g})"
        return f"{head} at {where}; try {', or '.join(_hints(cfg))}"
    return f"loss became NaN/Inf at {where} ({before}); try {', or '.join(_hints(cfg))}"


def _hints(cfg: TrainSpec) -> list[str]:
    hints = [f"a lower train.lr (now {cfg.lr:g})"]
    if cfg.grad_clip == 0:
        hints.append("train.grad_clip = 1.0")
    if cfg.precision != "fp32":
        hints.append("train.precision = 'fp32'")
    return hints
