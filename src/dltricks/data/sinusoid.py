"""The sinusoid task family of the MAML paper (Finn et al. 2017): each task is y = A sin(x - phi) with
amplitude A in [0.1, 5] and phase phi in [0, pi], x uniform in [-5, 5]; a learner sees K points of a new
task and must predict the rest of its curve.

A :class:`SinusoidTasks` samples tasks from a seeded generator: meta-learners draw fresh training tasks
from it, and ``test_tasks`` fixed test tasks (K support and ``queries`` query points each, fixed by
``data_seed``) score every learner alike. The bundle's ``train`` pools the points of ``train_tasks``
tasks, so a plain regression recipe on it is the "pretrain on all tasks" baseline; its ``test`` pools
the test tasks' query points (the pre-update error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pydantic import Field, model_validator

from dltricks.data.bundle import DataBundle, Target
from dltricks.data.registry import register_dataset
from dltricks.recipe import DataSpec

__all__ = ["SinusoidSpec", "SinusoidTasks", "TaskBatch"]


class SinusoidSpec(DataSpec):
    name: str = "sinusoid"
    amplitude: tuple[float, float] = Field((0.1, 5.0), description="range of the amplitude A")
    phase: tuple[float, float] = Field((0.0, math.pi), description="range of the phase phi")
    x_range: tuple[float, float] = Field((-5.0, 5.0), description="inputs are uniform in this range")
    k_shot: int = Field(10, ge=1, description="support points per task (K)")
    queries: int = Field(10, ge=1, description="query points per task")
    train_tasks: int = Field(1000, ge=1, description="tasks pooled into the bundle's train (the "
                                                     "pretraining baseline); meta-learners draw fresh ones")
    test_tasks: int = Field(100, ge=1, description="fixed test tasks")
    data_seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> SinusoidSpec:
        for key in ("amplitude", "phase", "x_range"):
            lo, hi = getattr(self, key)
            if not lo <= hi:
                raise ValueError(f"{key} must be (min, max) with min <= max, got {(lo, hi)}")
        return self


@dataclass
class TaskBatch:
    """T tasks: support ``xs, ys`` (T, K, 1), query ``xq, yq`` (T, Q, 1), and their ``amplitude, phase`` (T,)."""

    xs: torch.Tensor
    ys: torch.Tensor
    xq: torch.Tensor
    yq: torch.Tensor
    amplitude: torch.Tensor
    phase: torch.Tensor


@dataclass
class SinusoidTasks:
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)
    k_shot: int = 10
    queries: int = 10

    def curve(self, x: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """(T, M, 1) values of each task's curve at ``x`` (T, M, 1)."""
        return amplitude[:, None, None] * torch.sin(x - phase[:, None, None])

    def sample(self, n: int, g: torch.Generator, k: int | None = None, queries: int | None = None) -> TaskBatch:
        k, q = k or self.k_shot, queries or self.queries

        def uni(lo_hi, *shape):
            lo, hi = lo_hi
            return lo + (hi - lo) * torch.rand(*shape, generator=g)

        a, p = uni(self.amplitude, n), uni(self.phase, n)
        xs, xq = uni(self.x_range, n, k, 1), uni(self.x_range, n, q, 1)
        return TaskBatch(xs, self.curve(xs, a, p), xq, self.curve(xq, a, p), a, p)


def tasks_of(spec: SinusoidSpec) -> SinusoidTasks:
    return SinusoidTasks(spec.amplitude, spec.phase, spec.x_range, spec.k_shot, spec.queries)


@register_dataset("sinusoid", SinusoidSpec)
def load_sinusoid(spec: SinusoidSpec, seed: int) -> DataBundle:
    fam = tasks_of(spec)
    train = fam.sample(spec.train_tasks, torch.Generator().manual_seed(spec.data_seed), k=spec.k_shot,
                       queries=spec.queries)
    test = fam.sample(spec.test_tasks, torch.Generator().manual_seed(1_000_003 + spec.data_seed))
    x = torch.cat([train.xs, train.xq], 1).reshape(-1, 1)
    y = torch.cat([train.ys, train.yq], 1).reshape(-1, 1)
    bundle = DataBundle(train=(x, y), test=(test.xq.reshape(-1, 1), test.yq.reshape(-1, 1)), task="regression",
                        num_classes=1, targets=[Target("y", "regression")])
    bundle.tasks, bundle.test_tasks = fam, test
    return bundle
