"""The training loop: one readable function around a plain PyTorch step.

    history = fit(model, (x, y), val=(xv, yv), epochs=10, batch_size=64, lr=1e-3, schedule="cosine")

Every trick is a keyword (the same names as the recipe's ``train`` keys); the loop adds only what a
careful hand-written loop would have: seeded data order, a NaN check, checkpoints that resume
bit-for-bit, and a progress bar.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dltricks.errors import DltricksError, RunFailed
from dltricks.recipe import TrainSpec, explain_errors
from dltricks.train.checkpoint import LoopState, find_checkpoint, load_checkpoint, save_checkpoint
from dltricks.train.optim import build_optimizer
from dltricks.train.schedules import build_scheduler
from dltricks.train.tasks import Classification, Task

Source = tuple[torch.Tensor, torch.Tensor] | Dataset | DataLoader
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


class TrainingInterrupted(Exception):
    """Ctrl-C reached a safe point: the loop saved a checkpoint (if it had somewhere to) and stopped."""

    def __init__(self, checkpoint: Path | None, history: History):
        super().__init__("training interrupted")
        self.checkpoint, self.history = checkpoint, history


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
    return dev


# ---- data ----------------------------------------------------------------------------------------

class Batches:
    """Seeded mini-batches from tensors, a Dataset or a DataLoader, resumable mid-epoch.

    For tensors and Datasets the epoch's order is a permutation drawn from our own generator, so a
    run's data order depends only on its seed, and a resumed run skips exactly the steps it did.
    """

    def __init__(self, source: Source, batch_size: int, seed: int, device: torch.device,
                 fold_single: bool = True):
        self.source, self.batch_size, self.device = source, batch_size, device
        self.fold_single = fold_single  # training folds away a last batch of one; evaluation never
        self.gen = torch.Generator().manual_seed(seed)
        if isinstance(source, DataLoader):
            self.n = len(source.dataset)  # type: ignore[arg-type]
        elif isinstance(source, Dataset):
            self.n = len(source)  # type: ignore[arg-type]
        else:
            x, y = source
            if len(x) != len(y):
                raise DltricksError(f"x has {len(x)} samples but y has {len(y)}")
            self.n = len(x)
            # small data lives on the device once, instead of being copied every step
            if device.type != "cpu" and x.numel() * x.element_size() < 2**30:
                self.source = (x.to(device), y.to(device))
        if self.n == 0:
            raise DltricksError("the training data is empty")

    def __len__(self) -> int:
        if isinstance(self.source, DataLoader):
            return len(self.source)
        full, rest = divmod(self.n, self.batch_size)
        if not self.fold_single:
            return full + (rest > 0)
        # a last batch of one sample breaks BatchNorm's statistics in training: leave it out this epoch
        return full + (1 if rest > 1 or (rest == 1 and full == 0) else 0)

    def new_order(self) -> torch.Tensor:
        return torch.randperm(self.n, generator=self.gen)

    def epoch(self, epoch: int, perm: torch.Tensor, start: int = 0, epoch_rng: torch.Tensor | None = None
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        src = self.source
        if hasattr(getattr(src, "dataset", src), "set_epoch"):
            getattr(src, "dataset", src).set_epoch(epoch)
        if isinstance(src, DataLoader):  # the user's loader decides the order; skip what was done
            if start > 0 and epoch_rng is not None:
                # a loader draws its seeds (and a shuffle its order) from torch's RNG as it starts: replay
                # those draws from the state the epoch began with, then go on from where the run stopped
                now = torch.get_rng_state()
                torch.set_rng_state(epoch_rng)
                it = iter(src)
                next(it, None)
                torch.set_rng_state(now)
                start -= 1
            else:
                it = iter(src)
            for i, (x, y) in enumerate(it):
                if i >= start:
                    yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        steps, b = len(self), self.batch_size
        if isinstance(src, Dataset):
            for i in range(start, steps):
                xs, ys = zip(*(src[int(j)] for j in perm[i * b:(i + 1) * b]))
                x, y = torch.stack([torch.as_tensor(v) for v in xs]), torch.stack([torch.as_tensor(v) for v in ys])
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        xs, ys = src
        px, py = perm.to(xs.device), perm.to(ys.device)  # once an epoch, not once a step
        if xs.device == self.device and ys.device == self.device:
            for i in range(start, steps):
                yield xs[px[i * b:(i + 1) * b]], ys[py[i * b:(i + 1) * b]]
            return
        for i in range(start, steps):
            x, y = xs[px[i * b:(i + 1) * b]], ys[py[i * b:(i + 1) * b]]
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


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

class _StopFlag:
    """Turns the first SIGINT into a request to stop at the next safe point; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> _StopFlag:
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

def fit(model: nn.Module, train: Source, val: Source | None = None, *, epochs: int, batch_size: int,
        lr: float, optimizer: str = "adamw", schedule: str | None = None, grad_clip: float | None = None,
        label_smoothing: float = 0.0, seed: int = 0, device: str = "auto", progress: bool = True,
        task: Task | None = None, augment: Augment | None = None,
        checkpoint_dir: str | Path | None = None, resume: bool = False, fingerprint: str = "",
        on_epoch: Callable[[int, dict[str, float]], None] | None = None, **options: Any) -> History:
    """Train ``model`` in place and return its :class:`History`.

    ``train``/``val`` are ``(x, y)`` tensors, a Dataset of ``(x, y)`` items or a DataLoader.
    ``options`` are any other ``train`` recipe keys (``weight_decay``, ``warmup_epochs``,
    ``early_stopping``, ``precision``, ...), validated the same way. With ``checkpoint_dir`` the loop
    saves after every epoch and on Ctrl-C, and ``resume=True`` continues from what is there.
    """
    try:
        cfg = TrainSpec(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                        schedule=schedule or "constant", grad_clip=grad_clip or 0.0,
                        label_smoothing=label_smoothing, device=device, **options)
    except ValidationError as e:
        raise DltricksError(f"fit: {explain_errors(e, TrainSpec)}") from None
    task = task or Classification(label_smoothing=cfg.label_smoothing)
    dev = resolve_device(cfg.device)
    model.to(dev)
    if dev.type == "cuda" and _is_image_batch(train):
        model.to(memory_format=torch.channels_last)  # faster convolutions on tensor cores

    batches = Batches(train, cfg.batch_size, seed, dev)
    opt = build_optimizer(model, cfg)
    scheduler = build_scheduler(opt, cfg, len(batches))
    scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" and dev.type == "cuda" else None
    ckpt = Path(checkpoint_dir) / "checkpoint" if checkpoint_dir else None

    torch.manual_seed(seed)  # dropout and any other randomness inside the model
    st, best = LoopState(), None
    if resume:
        if ckpt is None or find_checkpoint(ckpt) is None:
            raise DltricksError(f"nothing to resume: no checkpoint under {checkpoint_dir}")
        st, best = load_checkpoint(ckpt, model, opt, scheduler, fingerprint)
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
        if dev.type == "cuda":  # dropout on the GPU draws from its own generator
            st.tensors["cuda_rng"] = torch.cuda.get_rng_state(dev)
        save_checkpoint(ckpt, model, opt, scheduler, st, best, fingerprint)

    labelled = _has_labels(train)
    amp = contextlib.nullcontext() if cfg.precision == "fp32" else None  # reusable; autocast is made per step
    bar = _Progress(progress, cfg.epochs, len(batches))
    t0 = time.perf_counter() - st.elapsed
    model.train()
    with _StopFlag() as stop, bar:
        while st.epoch < cfg.epochs and not st.stopped_early:
            if st.step == 0:
                st.tensors["perm"] = batches.new_order()
                if isinstance(batches.source, DataLoader):
                    st.tensors["epoch_rng"] = torch.get_rng_state()
            bar.start_epoch(st.epoch, st.step)
            hits = _Hits()
            for x, y in batches.epoch(st.epoch, st.tensors["perm"], st.step, st.tensors.get("epoch_rng")):
                if augment is not None:
                    x, y = augment(x, y)
                with amp if amp is not None else _autocast(dev, cfg.precision):
                    logits = model(x)
                    loss = task.loss(logits, y)
                lv = loss.item()
                if not math.isfinite(lv):
                    raise RunFailed(_diagnose_nan(st, cfg, bar.last_loss))
                opt.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                else:
                    loss.backward()
                if cfg.grad_clip > 0:
                    if cfg.grad_clip_mode == "norm":
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    else:
                        nn.utils.clip_grad_value_(model.parameters(), cfg.grad_clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                if scheduler is not None:
                    scheduler.step()
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
                raise TrainingInterrupted(ckpt, _history(st, best))

            # ---- end of epoch: metrics, early stopping, checkpoint
            row = {"train_loss": st.loss_sum / max(st.seen, 1), "lr": opt.param_groups[0]["lr"]}
            if labelled:
                row["train_accuracy"] = st.correct / max(st.counted, 1)
            if val is not None:
                vm = evaluate(model, val, task, batch_size=eval_batch_size(cfg.batch_size), device=dev,
                              precision=cfg.precision)
                row.update({f"val_{k}": v for k, v in vm.items()})
                model.train()
            for k, v in row.items():
                st.curves.setdefault(k, []).append(float(v))
            st.epoch, st.step, st.loss_sum, st.correct, st.seen, st.counted = st.epoch + 1, 0, 0.0, 0, 0, 0
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
                raise TrainingInterrupted(ckpt, _history(st, best))
    if best is not None and cfg.restore_best:
        model.load_state_dict(best)
    return _history(st, best)


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


def _history(st: LoopState, best: dict | None) -> History:
    return History(curves={k: list(v) for k, v in st.curves.items()}, epochs=st.epoch,
                   best_epoch=st.best_epoch, stopped_early=st.stopped_early, wall_time=st.elapsed)


def _better(monitor: str) -> Callable[[float, float], bool]:
    from dltricks.train.tasks import higher_is_better

    return (lambda a, b: a > b) if higher_is_better(monitor) else (lambda a, b: a < b)


def _has_labels(source: Source) -> bool:
    """Integer targets: class labels (or label maps) that accuracy can be counted on."""
    if isinstance(source, tuple):
        return not torch.is_floating_point(source[1])
    ds = getattr(source, "dataset", source)
    return not torch.is_floating_point(torch.as_tensor(ds[0][1]))


def _is_image_batch(source: Source) -> bool:
    return isinstance(source, tuple) and source[0].dim() == 4


def _diagnose_nan(st: LoopState, cfg: TrainSpec, last: float | None) -> str:
    where = f"epoch {st.epoch + 1}, step {st.step + 1}"
    before = f"last finite loss {last:.4g}" if last is not None else "no finite loss before it"
    hints = [f"a lower train.lr (now {cfg.lr:g})"]
    if cfg.grad_clip == 0:
        hints.append("train.grad_clip = 1.0")
    if cfg.precision != "fp32":
        hints.append("train.precision = 'fp32'")
    return f"loss became NaN/Inf at {where} ({before}); try {', or '.join(hints)}"


class _Progress:
    """A rich bar per run: epoch, step, loss, the validation metric and ETA. Silent when disabled."""

    def __init__(self, enabled: bool, epochs: int, steps: int):
        self.enabled = enabled and os.environ.get("DLTRICKS_NO_PROGRESS", "") in ("", "0")
        self.epochs, self.steps = epochs, steps
        self.last_loss: float | None = None
        self._metric = ""
        self._pending = 0           # steps not yet shown: the bar is updated at most every UPDATE_S
        self._shown = 0.0

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[metric]}"),
                              TimeRemainingColumn(), transient=False)
            self.p.__enter__()
            self.task = self.p.add_task("epoch", total=self.epochs * self.steps, loss="-", metric="")
        return self

    def start_epoch(self, epoch: int, step: int) -> None:
        if self.enabled:
            self._pending = 0
            self.p.update(self.task, description=f"epoch {epoch + 1}/{self.epochs}",
                          completed=epoch * self.steps + step)

    UPDATE_S = 0.1  # rich redraws ten times a second; updating it every step would only cost time

    def step(self, loss: float) -> None:
        self.last_loss = loss
        if self.enabled:
            self._pending += 1
            now = time.monotonic()
            if now - self._shown >= self.UPDATE_S:
                self._flush()
                self._shown = now

    def _flush(self) -> None:
        if self._pending:
            self.p.update(self.task, advance=self._pending, loss=f"{self.last_loss:.4f}")
            self._pending = 0

    def end_epoch(self, row: dict[str, float]) -> None:
        if self.enabled:
            self._flush()
            key = next((k for k in ("val_accuracy", "val_dice", "val_loss") if k in row), None)
            metric = f"{key} {row[key]:.4f}" if key else ""
            self.p.update(self.task, metric=metric)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._flush()
            self.p.__exit__(*exc)

