"""The named parts of a training loop, shared by :func:`~dltricks.loop.training.fit` and an episodic
learner's own outer loop (:mod:`dltricks.methods.meta`):

- :meth:`Loop.restore`: continue from a checkpoint (weights, optimiser, scheduler, RNGs, method state);
- :meth:`Loop.check` and :meth:`Loop.update`: a step's NaN/divergence check, then backward, clipping,
  the optimiser and the schedule; :meth:`Loop.step` does both for a batch, in ``train.grad_accum_steps``
  micro-batches and over the ranks of a process group; :meth:`Loop.count` adds the step to the epoch's sums;
- :meth:`Loop.end_steps`: the epoch's training row, or a checkpoint and :class:`TrainingInterrupted` when
  Ctrl-C stopped it midway;
- :meth:`Loop.end_epoch`: curves, early stopping and best weights, progress, checkpoint, a stop at the epoch's end;
- :meth:`Loop.finish`: the best weights back in, the method's last word, the :class:`~dltricks.loop.outcome.History`.

A loop is ``with Loop(...) as loop:`` (Ctrl-C handler and progress bar) around ``while loop.running():``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dltricks.errors import DltricksError, RunFailed
from dltricks.loop import distributed
from dltricks.loop.averaging import WeightAverage
from dltricks.loop.checkpoint import LoopState, find_checkpoint, load_checkpoint, save_checkpoint
from dltricks.loop.distributed import Dist
from dltricks.loop.evaluation import autocast
from dltricks.loop.method import Batch, Method
from dltricks.loop.outcome import History, StopFlag, TrainingInterrupted
from dltricks.loop.progress import TrainProgress
from dltricks.recipe import TrainSpec

__all__ = ["DIVERGED", "Loop", "History", "StopFlag", "TrainingInterrupted"]  # the last three: loop.outcome


# A loss this many times its first value (or 1, if that was smaller) has blown up: training from there
# ends at chance with astronomic test losses, without a NaN to stop it.
DIVERGED = 1000.0


class Loop:
    """Where a training loop stands (``st``, a checkpointable :class:`LoopState`) and the parts that move it.

    ``rngs`` are the generators that decide the data (``{"data_rng": batches.gen}``, a meta-learner's
    ``{"task_rng": gen}``): they are checkpointed with torch's own RNG so that a resumed run draws what an
    uninterrupted one would. ``steps`` is the number of steps of an epoch; ``labelled`` counts training
    accuracy from the step's class scores; ``what`` and ``hints`` word a NaN or divergence failure.
    ``average`` (EMA or SWA, :mod:`dltricks.loop.averaging`) is stepped, checkpointed and ended with the loop.
    ``dist``: this rank of a process group (:mod:`dltricks.loop.distributed`); rank 0 alone checkpoints.
    """

    def __init__(self, model: nn.Module, method: Method, cfg: TrainSpec, opt: torch.optim.Optimizer,
                 scheduler: Any, *, epochs: int, steps: int, rngs: dict[str, torch.Generator],
                 device: torch.device, checkpoint_dir: str | Path | None = None, fingerprint: str = "",
                 progress: bool = True, on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                 scaler: torch.amp.GradScaler | None = None, labelled: bool = False, what: str = "loss",
                 hints: list[str] | None = None, average: WeightAverage | None = None,
                 dist: Dist | None = None) -> None:
        self.model, self.method, self.cfg, self.opt, self.scheduler = model, method, cfg, opt, scheduler
        self.epochs, self.steps, self.rngs, self.device = epochs, steps, rngs, device
        self.checkpoint_dir, self.fingerprint, self.on_epoch = checkpoint_dir, fingerprint, on_epoch
        self.ckpt = Path(checkpoint_dir) / "checkpoint" if checkpoint_dir else None
        self.scaler, self.labelled, self.what, self.average = scaler, labelled, what, average
        self.hints = hints if hints is not None else _hints(cfg)
        # the method's extra parts (a projector, a discriminator) are clipped with the model
        self.clipped = list(model.parameters()) + [p for m in method.modules().values() for p in m.parameters()]
        self.st, self.best = LoopState(), None
        self.dist = dist
        self.stop = StopFlag(term=dist is not None)
        self.agreed = False  # on several ranks: a stop every rank knows of (a signal reaches each at its own time)
        self.bar = TrainProgress(progress and (dist is None or dist.main), epochs, steps)
        self.hits = _Hits()
        self.better = _better(cfg.monitor)
        self.t0 = 0.0

    # ---- resume ----------------------------------------------------------------------------------------
    def restore(self, mid_epoch: Iterable[str] = ()) -> None:
        """Continue from the checkpoint: weights, optimiser, scheduler, best weights, loop counters and
        curves, the method's state and every RNG. ``mid_epoch`` names what a checkpoint taken within an
        epoch must hold besides (the epoch's sample order, ``perm``)."""
        ckpt = self.ckpt
        if ckpt is None or find_checkpoint(ckpt) is None:
            raise DltricksError(f"nothing to resume: no checkpoint under {self.checkpoint_dir}")
        st, self.best = load_checkpoint(ckpt, self.model, self.opt, self.scheduler, self.fingerprint)
        world, was = self.dist.world if self.dist else 1, int(st.tensors.get("world_size", torch.tensor(1)))
        if world != was:
            raise DltricksError(f"the checkpoint under {self.checkpoint_dir} was trained on {was} process(es), "
                                f"this run has {world}: resume it with --nproc {was}")
        if self.dist is not None:
            st.tensors["torch_rng"] = st.tensors.get(f"torch_rng.{self.dist.rank}", st.tensors.get("torch_rng"))
            if not self.dist.main:  # rank 0's checkpoint holds the counts of every rank: count them once
                st.correct, st.counted = 0, 0
        self.st = st
        self.method.load_state_dict({k[7:]: v for k, v in st.tensors.items() if k.startswith("method.")})
        self.method.load_extra_state(st.method)
        if self.average is not None:
            self.average.load(st.tensors, st.average)
        need = [*self.rngs, "torch_rng"] + (list(mid_epoch) if st.step else [])
        if any(k not in st.tensors for k in need):
            raise DltricksError(f"checkpoint {find_checkpoint(ckpt)} is corrupt or incomplete (no "
                                f"{', '.join(k for k in need if k not in st.tensors)} state)")
        for name, gen in self.rngs.items():
            gen.set_state(st.tensors[name])
        torch.set_rng_state(st.tensors["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in st.tensors:
            torch.cuda.set_rng_state(st.tensors["cuda_rng"], self.device)

    def snapshot(self) -> None:
        """Checkpoint where the loop stands (nothing without a checkpoint directory)."""
        if self.ckpt is None:
            return
        st = self.st
        st.tensors.update({name: gen.get_state() for name, gen in self.rngs.items()})
        st.tensors["torch_rng"] = torch.get_rng_state()
        if self.dist is not None:  # every rank takes part in the gather; rank 0 alone writes
            st.tensors.update({f"torch_rng.{r}": s for r, s in enumerate(distributed.gather_rng(self.dist))})
            st.tensors["world_size"] = torch.tensor(self.dist.world)
            if not self.dist.main:
                return
        st.tensors.update({f"method.{k}": v for k, v in self.method.state_dict().items()})
        st.method = self.method.extra_state()
        if self.average is not None:
            st.tensors.update(self.average.tensors())
            st.average = self.average.extra_state()
        if self.device.type == "cuda":  # dropout on the GPU draws from its own generator
            st.tensors["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        save_checkpoint(self.ckpt, self.model, self.opt, self.scheduler, st, self.best, self.fingerprint)

    # ---- Ctrl-C handler, progress bar, clock -------------------------------------------------------------
    def __enter__(self) -> Loop:
        self.stop.__enter__()
        self.bar.__enter__()
        self.t0 = time.perf_counter() - self.st.elapsed
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.bar.__exit__(*exc)
        finally:
            self.stop.__exit__(*exc)

    def running(self) -> bool:
        """Epochs are left and early stopping has not ended training."""
        return self.st.epoch < self.epochs and not self.st.stopped_early

    @property
    def stopping(self) -> bool:
        """Ctrl-C asked to stop: the loop leaves the epoch after this step (on several ranks: once every rank
        knows, from the step's all-reduce, so that all leave at the same step)."""
        return self.agreed if self.dist is not None else self.stop.requested

    def start_epoch(self) -> None:
        """Training mode (the method decides for its parts: frozen layers, frozen norms) and the bar."""
        self.model.train()
        self.method.start_epoch(self.model, self.st.epoch)
        if self.average is not None:
            self.average.start_epoch(self.st.epoch)
        self.bar.start_epoch(self.st.epoch, self.st.step)
        self.hits = _Hits()

    # ---- one step ----------------------------------------------------------------------------------------
    def check(self, lv: float) -> float:
        """``lv``, the step's loss on the host, unless it is NaN/Inf or has diverged: then the run fails."""
        st = self.st
        if not math.isfinite(lv):
            raise RunFailed(self._diagnose())
        if st.first_loss is None:
            st.first_loss = lv
        elif lv > DIVERGED * max(st.first_loss, 1.0):
            raise RunFailed(self._diagnose(diverged=(lv, st.first_loss)))
        return lv

    def update(self, loss: torch.Tensor | None, grads: Iterable[tuple[torch.Tensor, torch.Tensor]] = ()) -> None:
        """Backward through ``loss`` (or take ``grads``, (parameter, gradient) pairs computed elsewhere: a
        Reptile meta-gradient), clip, step the optimiser and the schedule."""
        self.opt.zero_grad(set_to_none=True)
        if loss is None:
            for p, g in grads:
                p.grad = g
        else:
            self._backward(loss)
        self._apply(scaled=loss is not None)

    def step(self, forward: Callable[[Batch], tuple[torch.Tensor, torch.Tensor | None]], batch: Batch,
             n_batch: int) -> tuple[float, torch.Tensor | None]:
        """One optimiser step on ``batch``, this rank's share of a batch of ``n_batch`` samples (all ranks
        together): ``forward(part)`` gives (mean loss, class scores) of a part, run in ``train.grad_accum_steps``
        micro-batches whose gradients add up to the whole batch's (each loss weighted by its share), then
        averaged over the ranks once. Returns the whole batch's mean loss (checked) and this rank's scores."""
        n = len(batch.y)
        k = max(1, min(self.cfg.grad_accum_steps, n))
        world = self.dist.world if self.dist is not None else 1
        self.opt.zero_grad(set_to_none=True)
        loss_sum, scores = 0.0, []
        for part in _split(batch, k):
            with autocast(self.device, self.cfg.precision):
                loss, logits = forward(part)
            w = len(part.y) * world / n_batch
            self._backward(loss if w == 1 else loss * w)  # w = 1 (one part, one rank): the plain step, exactly
            loss_sum += loss.item() * len(part.y)
            scores.append(logits)
        if self.dist is not None:
            lv, _, stop = distributed.reduce_step(loss_sum, n, self.stop.requested, self.dist, self.device)
            self.agreed = self.agreed or stop  # every rank stops at the same step
        else:
            lv = loss_sum / n
        lv = self.check(lv)
        self._apply(scaled=True)
        logits = scores[0] if k == 1 or scores[0] is None else torch.cat([s.detach() for s in scores])
        return lv, logits

    def _backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _apply(self, scaled: bool) -> None:
        """Average the gradients over the ranks, unscale, clip, step the optimiser and the schedule."""
        opt, scaler, cfg = self.opt, self.scaler, self.cfg
        if self.dist is not None:
            distributed.average_grads(self.clipped, self.dist)
        if scaler is not None and scaled:
            scaler.unscale_(opt)
        if cfg.grad_clip > 0:
            if cfg.grad_clip_mode == "norm":
                nn.utils.clip_grad_norm_(self.clipped, cfg.grad_clip)
            else:
                nn.utils.clip_grad_value_(self.clipped, cfg.grad_clip)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        if self.scheduler is not None and not (self.average is not None and self.average.schedules):
            self.scheduler.step()
        if self.average is not None:
            self.average.after_step()

    def count(self, lv: float, n: int, logits: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        """Add a finished step of ``n`` samples (``lv``: their mean loss) to the epoch's sums; with
        ``labelled``, ``logits`` (class scores along dim 1) against ``y`` to its accuracy."""
        st = self.st
        st.loss_sum += lv * n  # the loss is on the host already: no device op for it
        if self.labelled:  # per pixel for segmentation
            self.hits.add(logits, y)
            st.counted += y.numel()
        st.seen += n
        st.step += 1
        st.global_step += 1
        self.bar.step(lv)

    # ---- end of an epoch ---------------------------------------------------------------------------------
    def end_steps(self) -> dict[str, float]:
        """The epoch's training row (``train_loss``, ``lr``, ``train_accuracy``); if Ctrl-C stopped it before
        its last step, a checkpoint and :class:`TrainingInterrupted` instead."""
        st = self.st
        st.correct += self.hits.count()
        self.hits = _Hits()
        if self.dist is not None:
            # every rank holds the epoch's counts of all (rank 0 checkpoints them), and rank 0's batch-norm
            # statistics, so that every rank evaluates the same model and takes the same early-stopping turn
            st.correct, st.counted = distributed.reduce_counts([st.correct, st.counted], self.dist, self.device)
            distributed.broadcast_state(self.model, self.dist, buffers_only=True)
        st.elapsed = time.perf_counter() - self.t0
        if self.stopping and st.step < self.steps:
            self.snapshot()
            raise TrainingInterrupted(self.ckpt, History.of(st), epoch=st.epoch, step=st.step,
                                      epochs=self.epochs, steps=self.steps)
        if self.average is not None:
            self.average.end_epoch()
        row = {"train_loss": st.loss_sum / max(st.seen, 1), "lr": self.opt.param_groups[0]["lr"]}
        if self.labelled:
            row["train_accuracy"] = st.correct / max(st.counted, 1)
        return row

    def end_epoch(self, row: dict[str, float]) -> None:
        """Close the epoch with its ``row``: curves, early stopping on ``train.monitor`` (keeping the best
        weights), the bar, ``on_epoch``, a checkpoint; and stop here if Ctrl-C asked to."""
        st, cfg = self.st, self.cfg
        st.end_epoch(row)
        if cfg.monitor in row:
            value = row[cfg.monitor]
            if st.best_value is None or self.better(value, st.best_value):
                st.best_value, st.best_epoch, st.bad_epochs = value, st.epoch, 0
                if cfg.early_stopping and cfg.restore_best:
                    self.best = {k: v.detach().clone() for k, v in self.evaluated.state_dict().items()}
            else:
                st.bad_epochs += 1
                st.stopped_early = bool(cfg.early_stopping) and st.bad_epochs >= cfg.early_stopping
        self.bar.end_epoch(row)
        if self.on_epoch is not None:
            self.on_epoch(st.epoch, row)
        st.elapsed = time.perf_counter() - self.t0
        self.snapshot()
        if self.dist is not None and not self.agreed:  # a signal that came after the epoch's last step
            self.agreed = distributed.reduce_counts([int(self.stop.requested)], self.dist, self.device)[0] > 0
        if self.stopping:
            raise TrainingInterrupted(self.ckpt, History.of(st), epoch=st.epoch, epochs=self.epochs,
                                      steps=self.steps)

    @property
    def evaluated(self) -> nn.Module:
        """The model validation scores: the weight average once there is one, else the model trained."""
        return self.average.evaluated if self.average is not None else self.model

    def finish(self, inputs: Iterable[torch.Tensor] = ()) -> History:
        """After the last epoch: the weight average into the model (its batch-norm statistics recomputed on
        ``inputs``, the training batches), the best epoch's weights back (early stopping with
        ``restore_best``), then the method's last word (an EMA teacher's weights), and the history."""
        if self.average is not None:
            self.average.finish(inputs)
        if self.best is not None and self.cfg.restore_best:
            self.model.load_state_dict(self.best)
        self.method.finish(self.model)
        return History.of(self.st)

    def _diagnose(self, diverged: tuple[float, float] | None = None) -> str:
        st = self.st
        where = f"epoch {st.epoch + 1}, step {st.step + 1}"
        tries = ", or ".join(self.hints)
        if diverged is not None:
            value, first = diverged
            head = f"{self.what} diverged to {value:.3g} ({value / first:.3g} times its first value {first:.4g})"
            return f"{head} at {where}; try {tries}"
        last = self.bar.last_loss
        before = f"last finite loss {last:.4g}" if last is not None else "no finite loss before it"
        return f"{self.what} became NaN/Inf at {where} ({before}); try {tries}"


def _split(batch: Batch, k: int) -> list[Batch]:
    """``batch`` in ``k`` micro-batches (sizes differ by at most one)."""
    if k == 1:
        return [batch]
    xs, ys = torch.tensor_split(batch.x, k), torch.tensor_split(batch.y, k)
    index = torch.tensor_split(batch.index, k) if batch.index is not None else [None] * k
    return [Batch(x, y, i) for x, y, i in zip(xs, ys, index)]


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


def _hints(cfg: TrainSpec) -> list[str]:
    hints = [f"a lower train.lr (now {cfg.lr:g})"]
    if cfg.grad_clip == 0:
        hints.append("train.grad_clip = 1.0")
    if cfg.precision != "fp32":
        hints.append("train.precision = 'fp32'")
    return hints
