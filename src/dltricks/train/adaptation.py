"""Adapting a model to one task by a few gradient steps, written with ``torch.func`` so that the steps
can be vmapped over many tasks at once and differentiated through (MAML's inner loop), and the
post-update error that scores every learner on a task family alike.

``params`` is a dict of tensors named as ``model.named_parameters()``; ``xs, ys`` (K, 1) one task's support.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

__all__ = ["task_loss", "adapt", "post_update_mse", "plot_adaptation"]


def task_loss(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MSE of ``model`` with ``params`` on ``x`` (M, 1) against ``y`` (M, 1)."""
    return F.mse_loss(functional_call(model, params, (x,)), y)


def adapt(model: nn.Module, params: dict[str, torch.Tensor], xs: torch.Tensor, ys: torch.Tensor, steps: int,
          lr: float, first_order: bool = False) -> dict[str, torch.Tensor]:
    """``steps`` plain gradient steps of size ``lr`` on the support; differentiable through the steps
    unless ``first_order`` (then each inner gradient is a constant: first-order MAML)."""
    g_fn = grad(lambda p: task_loss(model, p, xs, ys))
    for _ in range(steps):
        g = g_fn(params)
        params = {k: v - lr * (g[k].detach() if first_order else g[k]) for k, v in params.items()}
    return params


@torch.no_grad()
def post_update_mse(model: nn.Module, tasks, steps: list[int], lr: float) -> dict[str, float]:
    """Mean query MSE over the test ``tasks`` (a :class:`~dltricks.data.sinusoid.TaskBatch`) before and
    after each number of ``steps`` on their support: ``pre_update_mse``, ``post_update_mse_{S}step``."""
    model.eval()
    device = next(model.parameters()).device
    params = {k: v.detach() for k, v in model.named_parameters()}
    xs, ys, xq, yq = (t.to(device) for t in (tasks.xs, tasks.ys, tasks.xq, tasks.yq))

    def after(s: int):
        def one(xs_, ys_, xq_, yq_):
            p = adapt(model, params, xs_, ys_, s, lr) if s else params
            return task_loss(model, p, xq_, yq_)
        with torch.enable_grad():  # grad inside vmap needs autograd on, though nothing is kept
            return vmap(one)(xs, ys, xq, yq).mean().item()

    out = {"pre_update_mse": after(0)}
    out.update({f"post_update_mse_{s}step": after(s) for s in steps})
    return out


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
