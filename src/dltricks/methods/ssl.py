"""Semi-supervised learning: the labelled batch plus a stream of the unlabelled remainder that
``data.labels_per_class`` leaves (``bundle.unlabelled``, inputs only: no label of it exists).

- ``pseudo_label`` (Lee 2013): the model's own confident predictions on unlabelled inputs are training
  targets: cross-entropy where ``max p >= confidence_threshold``, weight ramped up;
- ``pi_model`` (Laine & Aila 2017): two stochastic (weakly augmented) views of each unlabelled input
  should give the same class probabilities (squared error), weight ramped up;
- ``mean_teacher`` (Tarvainen & Valpola 2017): the target of that consistency is a teacher whose weights
  are an exponential moving average of the student's, updated after every optimiser step;
- ``fixmatch`` (Sohn et al. 2020): a confident prediction on a weak view is the hard label of a strong
  view of the same input; no ramp-up (the threshold plays its part), as in the paper.

Each step draws ``mu * batch_size`` unlabelled inputs from its own seeded :class:`Stream` and runs
labelled and unlabelled inputs through the model in one batch (so BatchNorm sees both). The ramp-up is
``exp(-5 (1 - t)^2)`` with ``t = progress / rampup``. The views are :mod:`dltricks.data.augment` ops for
1D, 2D and 3D data (gaussian noise for feature vectors) drawn from torch's global generator, which the
checkpoint keeps: a resumed run draws the same views.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dltricks.errors import DltricksError
from dltricks.loop.method import Batch, Method, Stream
from dltricks.loop.tasks import Task
from dltricks.methods.registry import Setup, register_method

__all__ = ["SemiSupervised", "sigmoid_rampup", "pseudo_label_loss", "views", "StreamStep", "PseudoLabel", "PiModel",
           "MeanTeacher", "FixMatch", "from_recipe"]

View = Callable[[torch.Tensor], torch.Tensor]


def sigmoid_rampup(progress: float, length: float) -> float:
    """``exp(-5 (1 - t)^2)``, ``t = progress / length`` clipped to [0, 1]; 1 when ``length`` is 0."""
    if length <= 0:
        return 1.0
    t = min(max(progress / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def pseudo_label_loss(logits: torch.Tensor, threshold: float, guess: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of ``logits`` (N, K) against the argmax of ``guess`` (default: the logits
    themselves, detached), counted where its max probability is >= ``threshold``, averaged over all N
    (so few confident samples give a small loss). Returns the loss and the (N,) mask."""
    with torch.no_grad():
        p = F.softmax((logits if guess is None else guess).detach().float(), 1)
        conf, label = p.max(1)
        mask = (conf >= threshold).float()
    loss = (F.cross_entropy(logits.float(), label, reduction="none") * mask).mean()
    return loss, mask


def views(sample_shape: tuple[int, ...]) -> tuple[View, View]:
    """Weak and strong augmentation for inputs of ``sample_shape`` ((C, *spatial) or (F,)).

    Weak: a small shift (FixMatch's translation by up to 12.5%). Strong: shift, zoom, elastic warp,
    contrast and noise at large magnitudes (plus rotation in 2D/3D) and a cut-out window, each with its
    own random value per sample, in the spirit of RandAugment + Cutout."""
    from dltricks.data.augment import Augment

    dims = len(sample_shape) - 1
    if dims == 0:  # feature vectors: gaussian noise, and feature dropout for the strong view
        def weak_f(x: torch.Tensor) -> torch.Tensor:
            return x + 0.1 * torch.randn_like(x)

        def strong_f(x: torch.Tensor) -> torch.Tensor:
            keep = (torch.rand_like(x) > 0.2).to(x.dtype)
            return (x + 0.3 * torch.randn_like(x)) * keep
        return weak_f, strong_f
    weak = Augment(["shift"], dims, shift=0.125)
    ops = (["rotate"] if dims > 1 else []) + ["scale", "shift", "elastic", "contrast", "noise"]
    strong_aug = Augment(ops, dims, rotate=30.0, scale=0.25, shift=0.25, elastic=0.04, contrast=0.5, noise=0.15)

    def strong(x: torch.Tensor) -> torch.Tensor:
        return _cutout(strong_aug(x), 0.25)
    return weak, strong


def _cutout(x: torch.Tensor, frac: float) -> torch.Tensor:
    """Zero one random window of ``frac`` of each spatial side per sample (DeVries & Taylor 2017).
    ``x``: (N, C, *spatial)."""
    n, spatial = x.shape[0], x.shape[2:]
    cut = torch.ones(n, 1, *spatial, dtype=torch.bool)
    for axis, size in enumerate(spatial):
        w = max(1, round(size * frac))
        start = (torch.rand(n) * (size - w + 1)).long().clamp_max(size - w)
        pos = torch.arange(size)
        inside = (pos >= start[:, None]) & (pos < (start + w)[:, None])  # (N, size)
        shape = [n, 1] + [1] * len(spatial)
        shape[2 + axis] = size
        cut = cut & inside.view(shape)  # inside the window on every axis
    return x * (~cut).to(device=x.device, dtype=x.dtype)


class StreamStep(Method):
    """A step with a second stream (``x_extra``: unlabelled or target inputs, (N_u, C, *spatial)); the
    stream's position is part of the checkpoint. Subclasses define :meth:`extra_loss`."""

    stream_key = "stream"

    def __init__(self, task: Task, x_extra: torch.Tensor, batch_size: int, seed: int, weight: float = 1.0,
                 rampup: float = 0.0, threshold: float = 0.95) -> None:
        super().__init__(task)
        self.stream = Stream(x_extra, batch_size, 40_009 + seed)
        self.weight, self.rampup, self.threshold = weight, rampup, threshold
        self.weak, self.strong = views(tuple(x_extra.shape[1:]))
        # confident unlabelled samples (a tensor on the device: no sync per step) and all of them, this epoch
        self.hits: torch.Tensor | float = 0.0
        self.seen = 0

    def ramp(self, progress: float) -> float:
        return self.weight * sigmoid_rampup(progress, self.rampup)

    def count(self, mask: torch.Tensor) -> None:
        if torch.is_grad_enabled():
            self.hits = self.hits + mask.detach().sum()
            self.seen += len(mask)

    def end_epoch(self) -> dict[str, float]:
        out = {"confident_fraction": float(self.hits) / self.seen} if self.seen else {}
        self.hits, self.seen = 0.0, 0
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**super().state_dict(), **{f"{self.stream_key}.{k}": v for k, v in self.stream.state_dict().items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        prefix = self.stream_key + "."
        super().load_state_dict({k: v for k, v in state.items() if not k.startswith(prefix)})
        self.stream.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def extra_state(self) -> dict[str, Any]:
        return {"hits": float(self.hits), "seen": self.seen}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.hits, self.seen = float(state["hits"]), int(state["seen"])


def _joint(model: nn.Module, *parts: torch.Tensor) -> list[torch.Tensor]:
    """One forward of the concatenated parts (BatchNorm sees labelled and unlabelled data together),
    split back."""
    out = model(torch.cat(parts))
    return list(out.split([len(p) for p in parts]))


class PseudoLabel(StreamStep):
    name = "pseudo_label"

    def loss(self, model: nn.Module, batch: Batch, progress: float):
        u = self.stream.next(batch.x.device)
        out, ou = _joint(model, batch.x, u)
        lu, mask = pseudo_label_loss(ou, self.threshold)
        self.count(mask)
        return self.task.loss(out, batch.y) + self.ramp(progress) * lu, out


def _consistency(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error between class probabilities, summed over classes, averaged over samples."""
    return (F.softmax(student.float(), 1) - F.softmax(target.detach().float(), 1)).pow(2).sum(1).mean()


class PiModel(StreamStep):
    name = "pi_model"

    def loss(self, model: nn.Module, batch: Batch, progress: float):
        u = self.stream.next(batch.x.device)
        out, a, b = _joint(model, batch.x, self.weak(u), self.weak(u))
        return self.task.loss(out, batch.y) + self.ramp(progress) * _consistency(a, b), out


class MeanTeacher(StreamStep):
    """The teacher (a frozen copy, in eval mode) follows the student by EMA after every step, with the
    decay warmed up as ``min(1 - 1/(step + 1), ema_decay)``; buffers (BatchNorm statistics) are copied.
    When training ends the model takes the teacher's weights, so that the run tests and keeps them."""

    name = "mean_teacher"

    def __init__(self, task: Task, model: nn.Module, x_extra: torch.Tensor, batch_size: int, seed: int,
                 ema_decay: float, **kw: Any) -> None:
        super().__init__(task, x_extra, batch_size, seed, **kw)
        self.teacher = copy.deepcopy(model).requires_grad_(False)
        self.ema_decay, self.steps = ema_decay, 0

    def modules(self) -> dict[str, nn.Module]:
        return {"teacher": self.teacher}

    def start_epoch(self, model: nn.Module, epoch: int) -> None:
        self.teacher.eval()

    def loss(self, model: nn.Module, batch: Batch, progress: float):
        u = self.stream.next(batch.x.device)
        out, ou = _joint(model, batch.x, self.weak(u))
        with torch.no_grad():
            tu = self.teacher(self.weak(u))
        return self.task.loss(out, batch.y) + self.ramp(progress) * _consistency(ou, tu), out

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        self.steps += 1
        d = min(1.0 - 1.0 / (self.steps + 1), self.ema_decay)
        for t, s in zip(self.teacher.parameters(), model.parameters()):
            t.mul_(d).add_(s.detach(), alpha=1 - d)
        for t, s in zip(self.teacher.buffers(), model.buffers()):
            t.copy_(s)

    def finish(self, model: nn.Module) -> None:
        """The teacher is the answer (Tarvainen & Valpola report the EMA model): tested and saved."""
        model.load_state_dict(self.teacher.state_dict())

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "steps": self.steps}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.steps = int(state["steps"])


class FixMatch(StreamStep):
    name = "fixmatch"

    def loss(self, model: nn.Module, batch: Batch, progress: float):
        u = self.stream.next(batch.x.device)
        out, weak, strong = _joint(model, self.weak(batch.x), self.weak(u), self.strong(u))
        lu, mask = pseudo_label_loss(strong, self.threshold, guess=weak)
        self.count(mask)
        return self.task.loss(out, batch.y) + self.weight * lu, out


def from_recipe(recipe: Any, bundle: Any, model: nn.Module, task: Task) -> Method:
    """The semi-supervised step ``train.semi_supervised`` names, on ``bundle.unlabelled``."""
    t = recipe.train
    kind = t.semi_supervised
    if bundle.unlabelled is None or len(bundle.unlabelled) == 0:
        why = ("set data.labels_per_class = N: the rest of the training split becomes unlabelled"
               if bundle.unlabelled is None else "data.labels_per_class leaves no training sample unlabelled")
        raise DltricksError(f"train.semi_supervised = {kind!r} needs unlabelled data; {why}")
    if bundle.task != "classification" or bundle.train[1].dim() != 1:
        raise DltricksError(f"train.semi_supervised needs a classification dataset; this one is {bundle.task}")
    kw = dict(batch_size=t.mu * t.batch_size, seed=recipe.seed, weight=t.unlabelled_weight, rampup=t.rampup,
              threshold=t.confidence_threshold)
    if kind == "mean_teacher":
        return MeanTeacher(task, model, bundle.unlabelled, ema_decay=t.ema_decay, **kw)
    cls = {"pseudo_label": PseudoLabel, "pi_model": PiModel, "fixmatch": FixMatch}[kind]
    return cls(task, bundle.unlabelled, **kw)


@register_method("semi_supervised")
class SemiSupervised(Setup):
    """Labelled and unlabelled data together (``train.semi_supervised``)."""

    step_rank = 3

    @classmethod
    def selects(cls, recipe, bundle) -> bool:
        return recipe.train.semi_supervised != "none"

    def step(self, model: nn.Module, task: Task, ledger: Any, augmented: bool) -> Method:
        return from_recipe(self.recipe, self.bundle, model, task)
