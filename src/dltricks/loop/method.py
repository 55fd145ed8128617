"""What one training step computes: the :class:`Method` protocol and the plain supervised step; the
learning set-ups in :mod:`dltricks.methods` subclass it.

The loop (:func:`dltricks.loop.training.fit`) knows only this protocol. A method may

- train extra parts (``modules()``: a projector, task log-variances, a discriminator): they join the
  optimiser and the checkpoint;
- change which parameters train and at what rate (``param_groups``: frozen layers, layer-wise rates) and
  the training mode of parts of the model at the start of each epoch (``start_epoch``: gradual
  unfreezing, frozen norm layers that keep their statistics);
- compute the loss of a step from the batch, the model and the training progress in [0, 1]
  (``loss``); a second stream of batches (unlabelled or target-domain data) is the method's own
  :class:`Stream`, drawn from its own seeded generator and kept in the method's state, so it is
  reachable without the loop knowing of it;
- act after the optimiser step (``after_step``: an EMA teacher), and add curves (``end_epoch``);
- keep state across a Ctrl-C (``state_dict``/``load_state_dict``, tensors only: checkpoints are
  safetensors). ``extra_state`` carries JSON scalars (counters) the same way.

Episodic learners (MAML, prototypical networks) may own their outer loop but build on the same parts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dltricks.loop.optim import param_groups as default_param_groups
from dltricks.loop.tasks import Task
from dltricks.recipe import TrainSpec

__all__ = ["Batch", "Method", "Stream", "Supervised", "Wrapped"]


@dataclass
class Batch:
    """One training batch: ``x`` (N, C, *spatial) or (N, F), ``y`` its targets, and ``index`` (N,) the
    positions of its samples in the training data (None for a user's DataLoader), which lets a method
    look up per-sample values it computed once (a teacher's logits)."""

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor | None = None


class Method:
    """The plain supervised step; every learning set-up subclasses it and overrides what it changes."""

    name = "supervised"

    def __init__(self, task: Task) -> None:
        self.task = task

    # ---- what trains ---------------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        """Extra trainable parts, by name; they join the optimiser, the device and the checkpoint."""
        return {}

    def param_groups(self, model: nn.Module, cfg: TrainSpec) -> list[dict]:
        """The optimiser's parameter groups: the model's (decay / no decay) and the extra modules'."""
        groups = default_param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias)
        extra = [p for m in self.modules().values() for p in m.parameters() if p.requires_grad]
        if extra:
            groups.append({"params": extra, "weight_decay": 0.0})
        return groups

    def to(self, device: torch.device) -> None:
        for m in self.modules().values():
            m.to(device)

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        """Called after ``model.train()`` at the start (or resumed middle) of every epoch."""
        for m in self.modules().values():
            m.train()

    def order(self, batches: Any) -> torch.Tensor:
        """The epoch's sample order (sliced into batches by the loop), drawn from ``batches.gen`` so that
        it resumes with the run; by default a shuffle. A P x K sampler returns class-balanced blocks."""
        return batches.new_order()

    def outer_loop(self) -> Callable[..., Any] | None:
        """An episodic learner's own loop, called with :func:`~dltricks.loop.training.fit`'s arguments in its
        place (meta-updates over sampled tasks); None = the loop's epochs over the training data."""
        return None

    # ---- the step --------------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch, progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The scalar loss of one step and the model's output (for the loop's train accuracy)."""
        out = model(batch.x)
        return self.task.loss(out, batch.y), out

    def after_step(self, model: nn.Module) -> None:
        """Called after the optimiser (and scheduler) step."""

    def end_epoch(self) -> dict[str, float]:
        """Extra values for this epoch's curves (e.g. learnt task weights)."""
        return {}

    def finish(self, model: nn.Module) -> None:
        """Called once training is over, before the model is tested and saved: a method whose answer is
        another set of weights (the mean teacher's EMA) puts them into ``model`` here."""

    # ---- checkpoint ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to checkpoint; by default the extra modules' states as ``NAME.KEY``."""
        return {f"{name}.{k}": v for name, m in self.modules().items() for k, v in m.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, m in self.modules().items():
            prefix = f"{name}."
            m.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def extra_state(self) -> dict[str, Any]:
        """JSON scalars to checkpoint (counters, flags)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


Supervised = Method


class Wrapped(Method):
    """A step that changes another step (frozen layers, a flooded loss): every hook goes to ``inner``
    unless the subclass overrides it."""

    def __init__(self, inner: Method) -> None:
        super().__init__(inner.task)
        self.inner = inner

    def modules(self) -> dict[str, nn.Module]:
        return self.inner.modules()

    def param_groups(self, model: nn.Module, cfg: TrainSpec) -> list[dict]:
        return self.inner.param_groups(model, cfg)

    def to(self, device: torch.device) -> None:
        self.inner.to(device)

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        self.inner.start_epoch(model, epoch)

    def order(self, batches: Any) -> torch.Tensor:
        return self.inner.order(batches)

    def outer_loop(self) -> Callable[..., Any] | None:
        return self.inner.outer_loop()

    def loss(self, model: nn.Module, batch: Batch, progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.loss(model, batch, progress)

    def after_step(self, model: nn.Module) -> None:
        self.inner.after_step(model)

    def end_epoch(self) -> dict[str, float]:
        return self.inner.end_epoch()

    def finish(self, model: nn.Module) -> None:
        self.inner.finish(model)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.inner.load_state_dict(state)

    def extra_state(self) -> dict[str, Any]:
        return self.inner.extra_state()

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.inner.load_extra_state(state)


class Stream:
    """A second, endless stream of batches of inputs (unlabelled or target-domain data) for a method.

    Its order comes from its own seeded generator and its position is part of :meth:`state_dict`, so a
    method that keeps one in its state resumes exactly where it stopped. ``x``: (N, C, *spatial).
    """

    def __init__(self, x: torch.Tensor, batch_size: int, seed: int) -> None:
        if len(x) == 0:
            raise ValueError("a stream needs at least one sample")
        self.x, self.batch_size = x, batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.perm, self.pos = torch.randperm(len(x), generator=self.gen), 0

    def next(self, device: torch.device | None = None) -> torch.Tensor:
        """The next ``batch_size`` inputs, reshuffling whenever the data run out."""
        take: list[torch.Tensor] = []
        need = self.batch_size
        while need > 0:
            if self.pos >= len(self.perm):
                self.perm, self.pos = torch.randperm(len(self.x), generator=self.gen), 0
            part = self.perm[self.pos:self.pos + need]
            take.append(part)
            self.pos += len(part)
            need -= len(part)
        out = self.x[torch.cat(take)]
        return out.to(device) if device is not None else out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"gen": self.gen.get_state(), "perm": self.perm, "pos": torch.tensor(self.pos)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.gen.set_state(state["gen"])
        self.perm, self.pos = state["perm"].clone(), int(state["pos"])
