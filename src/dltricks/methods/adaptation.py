"""Adapting a model to one task by a few gradient steps, written with ``torch.func`` so that the steps
can be vmapped over many tasks at once and differentiated through (MAML's inner loop), and the
post-update error that scores every learner on a task family alike.

``params`` is a dict of tensors named as ``model.named_parameters()``; ``xs, ys`` one task's support:
regression points (K, 1) and targets (K, 1), or an episode's samples (N*K, C, *spatial) and labels (N*K,).
The loss follows the targets: MSE for real values, cross-entropy for class labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from dltricks.methods.registry import Setup, Trained, register_method

__all__ = ["TaskFamily", "task_loss", "adapt", "batch_statistics", "post_update_scores", "post_update_metrics",
           "plot_adaptation", "plot_episode_adaptation"]


def task_loss(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MSE of ``model`` with ``params`` on ``x`` against real targets ``y``, or cross-entropy against labels."""
    out = functional_call(model, params, (x,))
    return F.mse_loss(out, y) if y.is_floating_point() else F.cross_entropy(out, y)


def task_score(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """What a task reports: the MSE for real targets, the accuracy for labels."""
    out = functional_call(model, params, (x,))
    return F.mse_loss(out, y) if y.is_floating_point() else (out.argmax(-1) == y).float().mean()


def adapt(model: nn.Module, params: dict[str, torch.Tensor], xs: torch.Tensor, ys: torch.Tensor, steps: int,
          lr: float, first_order: bool = False) -> dict[str, torch.Tensor]:
    """``steps`` plain gradient steps of size ``lr`` on the support; differentiable through the steps
    unless ``first_order`` (then each inner gradient is a constant: first-order MAML)."""
    g_fn = grad(lambda p: task_loss(model, p, xs, ys))
    for _ in range(steps):
        g = g_fn(params)
        params = {k: v - lr * (g[k].detach() if first_order else g[k]) for k, v in params.items()}
    return params


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Inside, every BatchNorm layer normalises by the statistics of the batch at hand, in training and
    evaluation alike, and leaves its running statistics alone: ``vmap`` cannot update them in place, and
    MAML normalises each task's support and queries by their own statistics (transductive, as Finn et
    al.'s code does). The layers compute it from plain tensor ops because torch's fused batch norm gives
    wrong second derivatives under ``vmap`` (torch 2.13: a conv bias before BatchNorm got a non-zero
    meta-gradient; its true gradient is zero)."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in layers:
        m.forward = _normalise_by_batch.__get__(m)  # an instance attribute shadows the class's forward
    try:
        yield model
    finally:
        for m in layers:
            del m.forward


def _normalise_by_batch(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm of ``x`` (N, C, *spatial) by its own mean and (biased) variance over all but C."""
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    y = (x - x.mean(dims, keepdim=True)) * torch.rsqrt(x.var(dims, unbiased=False, keepdim=True) + self.eps)
    return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


@torch.no_grad()
def post_update_scores(model: nn.Module, tasks, steps: list[int], lr: float, chunk: int = 50
                       ) -> dict[int, torch.Tensor]:
    """Each task's query score (MSE or accuracy, see :func:`task_score`) before adapting (key 0) and after
    each number of ``steps`` of size ``lr`` on its support: {steps: (T,)}. ``tasks`` has ``xs, ys, xq, yq``
    with the tasks first (a :class:`~dltricks.data.sinusoid.TaskBatch` or an
    :class:`~dltricks.data.episodes.EpisodeBatch`); ``chunk`` tasks are vmapped at a time."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    params = {k: v.detach() for k, v in model.named_parameters()}
    marks = sorted({0, *steps})

    def one(xs_, ys_, xq_, yq_):  # adapt once, scoring at each mark on the way
        p, done, scores = params, 0, []
        for s in marks:
            p, done = adapt(model, p, xs_, ys_, s - done, lr), s
            scores.append(task_score(model, p, xq_, yq_))
        return torch.stack(scores)

    parts = []
    try:
        with batch_statistics(model), torch.enable_grad():  # grad inside vmap needs autograd on
            for i in range(0, len(tasks.xs), chunk):
                part = [t[i:i + chunk].to(device) for t in (tasks.xs, tasks.ys, tasks.xq, tasks.yq)]
                parts.append(vmap(one)(*part).detach().cpu())
    finally:
        model.train(was_training)
    scores = torch.cat(parts)  # (T, marks)
    return {s: scores[:, j] for j, s in enumerate(marks)}


def post_update_metrics(model: nn.Module, tasks, steps: list[int], lr: float) -> dict[str, float]:
    """The mean of :func:`post_update_scores`: ``pre_update_mse`` and ``post_update_mse_{S}step`` for
    regression tasks; ``pre_update_accuracy`` (chance: labels mean other classes in every episode) and
    ``post_update_accuracy_{S}step`` for classification episodes."""
    what = "mse" if tasks.ys.is_floating_point() else "accuracy"
    scores = post_update_scores(model, tasks, steps, lr)
    return {(f"post_update_{what}_{s}step" if s else f"pre_update_{what}"): v.mean().item()
            for s, v in scores.items()}


def plot_adaptation(model: nn.Module, family, tasks, steps: list[int], lr: float, path, n: int = 3) -> None:
    """The MAML paper's figure: for ``n`` test tasks, the true curve, the K support points, the model's
    prediction before adaptation and after each number of ``steps``. Saved as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    device = next(model.parameters()).device
    params = {k: v.detach() for k, v in model.named_parameters()}
    lo, hi = family.x_range
    grid = torch.linspace(lo, hi, 200, device=device)[:, None]
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 3), squeeze=False)
    for i, ax in enumerate(axes[0]):
        a, ph = tasks.amplitude[i:i + 1], tasks.phase[i:i + 1]
        xs, ys = tasks.xs[i].to(device), tasks.ys[i].to(device)
        ax.plot(grid.cpu(), family.curve(grid.cpu()[None], a, ph)[0], "k-", lw=1, label="true")
        ax.plot(xs.cpu(), ys.cpu(), "k^", label=f"{len(xs)} shots")
        with torch.no_grad():
            ax.plot(grid.cpu(), functional_call(model, params, (grid,)).cpu(), ":", label="pre-update")
        for s in steps:
            with torch.enable_grad():
                p = adapt(model, params, xs, ys, s, lr)
            with torch.no_grad():
                ax.plot(grid.cpu(), functional_call(model, p, (grid,)).cpu(), "--", label=f"{s} step(s)")
        ax.set_title(f"A={a.item():.2f}, phase={ph.item():.2f}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_episode_adaptation(model: nn.Module, episodes: dict[int, object], steps: int, lr: float, path,
                            trained_steps: int, title: str = "") -> None:
    """A meta-learner on few-shot episodes: mean query accuracy (with its 95% interval) against the number
    of gradient steps on the support, 0..``steps``, one line per K in ``episodes`` ({K: EpisodeBatch}),
    chance drawn and the steps it was meta-trained for marked. Saved as a PNG at ``path``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    marks = list(range(steps + 1))
    for k, batch in episodes.items():
        scores = post_update_scores(model, batch, marks[1:], lr)
        mean = torch.stack([scores[s].mean() for s in marks])
        half = torch.stack([1.96 * scores[s].std() / len(scores[s]) ** 0.5 for s in marks])
        ax.plot(marks, mean, "o-", label=f"{k}-shot")
        ax.fill_between(marks, mean - half, mean + half, alpha=0.2)
    n_way = int(next(iter(episodes.values())).ys.max()) + 1
    ax.axhline(1 / n_way, color="grey", ls=":", label="chance")
    ax.axvline(trained_steps, color="grey", ls="--", lw=0.8, label="meta-trained steps")
    ax.set_xlabel("gradient steps on the support")
    ax.set_ylabel(f"{n_way}-way query accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


@register_method("task_family")
class TaskFamily(Setup):
    """A family of tasks (``data.name = "sinusoid"``): the error on each test task before and after a few
    gradient steps on its support points, and the MAML paper's pre/post-update figure."""

    @classmethod
    def selects(cls, recipe, bundle) -> bool:
        return bundle.test_tasks is not None

    def metric_names(self, model, task) -> list[str]:
        return ["test_pre_update_mse"] + [f"test_post_update_mse_{s}step" for s in self.recipe.eval.adapt_steps]

    def metrics(self, run: Trained) -> dict[str, float]:
        adapted = post_update_metrics(run.model, self.bundle.test_tasks, self.recipe.eval.adapt_steps,
                                      self.recipe.train.inner_lr)
        return {f"test_{k}": v for k, v in adapted.items()}

    def figures(self, run: Trained, metrics: dict[str, float]) -> None:
        if run.run_dir is not None:
            plot_adaptation(run.model, self.bundle.tasks, self.bundle.test_tasks, self.recipe.eval.adapt_steps,
                            self.recipe.train.inner_lr, run.run_dir / "adaptation.png")
