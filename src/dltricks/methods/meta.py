"""Meta-learning over a family of tasks (``train.meta``), with ``torch.func``: the inner loop is
``grad`` on a ``functional_call``, ``vmap``-ed over the tasks of a meta-batch.

- ``maml`` (Finn et al. 2017): adapt to each task by ``train.inner_steps`` gradient steps on its K
  support points, take the loss of the adapted weights on its query points, and differentiate that
  through the inner steps (second order) to update the initial weights.
- ``fomaml``: the same with each inner gradient treated as a constant (first order; no Hessian).
- ``reptile`` (Nichol et al. 2018): adapt on all of a task's points, then move the initial weights toward
  the mean adapted weights (their difference is the meta-gradient the optimiser steps on).

Two task families: the sinusoid regression tasks of the MAML paper (``data.name = "sinusoid"``), and
N-way K-shot classification episodes of the base classes when ``data.novel_classes`` holds classes out
(``eval.n_way``, the smallest of ``eval.shots``, ``eval.queries``; the model's head has N outputs, and a
label means another class in every episode). BatchNorm layers use each batch's own statistics while
meta-learning and adapting (:func:`~dltricks.methods.adaptation.batch_statistics`).

The learner owns its outer loop (meta-updates instead of epochs over a dataset) but is built from the
named parts of :func:`dltricks.loop.training.fit` (:class:`~dltricks.loop.parts.Loop`): the recipe's
optimiser and schedule, the NaN check, clipping, a progress bar, a checkpoint (safetensors, with the task
generator's state) after every epoch of ``train.meta_steps`` meta-updates and on Ctrl-C, and the runner
records it in the ledger like any run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import vmap

from dltricks.errors import DltricksError
from dltricks.loop.evaluation import resolve_device
from dltricks.loop.method import Method
from dltricks.loop.optim import build_optimizer
from dltricks.loop.parts import History, Loop
from dltricks.loop.schedules import build_scheduler
from dltricks.loop.tasks import Task
from dltricks.methods.adaptation import adapt, batch_statistics, post_update_metrics, task_loss
from dltricks.methods.registry import Setup, register_method
from dltricks.recipe import EvalSpec, TrainSpec

if TYPE_CHECKING:
    from dltricks.data.episodes import EpisodeBatch, Episodes

__all__ = ["MetaLearner", "MetaLearning", "meta_loss", "base_episodes"]


def meta_loss(model: nn.Module, params: dict[str, torch.Tensor], batch, algo: str, steps: int,
              lr: float) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """The meta-objective of one meta-batch (a :class:`~dltricks.data.sinusoid.TaskBatch` or
    :class:`~dltricks.data.episodes.EpisodeBatch`). Dropout draws differently in every task.

    MAML / FOMAML: the mean query loss after adaptation (differentiable w.r.t. ``params``). Reptile:
    the mean query loss after adaptation (for the curves) and the mean adapted weights."""
    if algo in ("maml", "fomaml"):
        def one(xs, ys, xq, yq):
            return task_loss(model, adapt(model, params, xs, ys, steps, lr, first_order=algo == "fomaml"), xq, yq)

        return vmap(one, randomness="different")(batch.xs, batch.ys, batch.xq, batch.yq).mean(), None
    p0 = {k: v.detach() for k, v in params.items()}
    x, y = torch.cat([batch.xs, batch.xq], 1), torch.cat([batch.ys, batch.yq], 1)
    phis = vmap(lambda x_, y_: adapt(model, p0, x_, y_, steps, lr), randomness="different")(x, y)  # {name: (T, *)}
    losses = vmap(lambda p, xq, yq: task_loss(model, p, xq, yq), randomness="different")(phis, batch.xq, batch.yq)
    return losses.mean().detach(), {k: v.mean(0) for k, v in phis.items()}


class MetaLearner(Method):
    """MAML, first-order MAML or Reptile on the bundle's task family; it replaces the loop (``outer_loop``)."""

    name = "meta"

    def __init__(self, task: Task, bundle: Any, cfg: TrainSpec, steps: list[int], episodes: EvalSpec | None = None,
                 seed: int = 0) -> None:
        super().__init__(task)
        self.cfg, self.eval_steps = cfg, steps
        if bundle.tasks is not None:
            self.family = bundle.tasks
            self.val_tasks = bundle.tasks.sample(25, torch.Generator().manual_seed(777_767 + seed))
        elif bundle.novel is not None and episodes is not None:
            self.family, self.val_tasks = base_episodes(bundle, episodes, seed)
        else:
            raise DltricksError(f"train.meta = {cfg.meta!r} needs a family of tasks to sample: use "
                                "data.name = 'sinusoid', or hold classes out with data.novel_classes for "
                                "few-shot episodes")

    def outer_loop(self):
        return self.fit

    def fit(self, model: nn.Module, train: Any = None, val: Any = None, *, spec: TrainSpec | None = None,
            epochs: int | None = None, seed: int = 0, device: str | None = None, progress: bool = True,
            checkpoint_dir: str | Path | None = None, resume: bool = False, fingerprint: str = "",
            on_epoch: Any = None, **_: Any) -> History:
        """Meta-train ``model`` in place for ``epochs`` x ``train.meta_steps`` meta-updates, through the
        loop's named parts (:class:`~dltricks.loop.parts.Loop`): restore, update, end of epoch."""
        cfg = spec or self.cfg
        epochs, dev = epochs or cfg.epochs, resolve_device(device or cfg.device)
        model.to(dev)
        opt = build_optimizer(model, cfg, self.param_groups(model, cfg))
        gen = torch.Generator().manual_seed(seed)
        loop = Loop(model, self, cfg, opt, build_scheduler(opt, cfg, cfg.meta_steps), epochs=epochs,
                    steps=cfg.meta_steps, rngs={"task_rng": gen}, device=dev, checkpoint_dir=checkpoint_dir,
                    fingerprint=fingerprint, progress=progress, on_epoch=on_epoch, what="meta-loss",
                    hints=[f"a lower train.inner_lr (now {cfg.inner_lr:g})", f"a lower train.lr (now {cfg.lr:g})"])
        torch.manual_seed(seed)
        if resume:
            loop.restore()
        st = loop.st
        with loop:
            while loop.running():
                loop.start_epoch()
                while st.step < cfg.meta_steps:
                    batch = self.family.sample(cfg.meta_batch, gen)
                    batch = type(batch)(*(t.to(dev) for t in vars(batch).values()))
                    params = dict(model.named_parameters())
                    with batch_statistics(model):  # each task normalised by its own statistics
                        loss, mean_phi = meta_loss(model, params, batch, cfg.meta, cfg.inner_steps, cfg.inner_lr)
                    lv = loop.check(loss.item())
                    if mean_phi is None:
                        loop.update(loss)
                    else:  # Reptile: the meta-gradient is theta - mean(phi)
                        loop.update(None, grads=[(p, p.detach() - mean_phi[k]) for k, p in params.items()])
                    loop.count(lv, 1)  # the curve is the mean meta-loss per meta-batch
                    if loop.stopping:
                        break
                row = loop.end_steps()  # stopped mid-epoch: checkpoint, TrainingInterrupted
                if self.val_tasks is not None:
                    vm = post_update_metrics(model, self.val_tasks, self.eval_steps[:1], cfg.inner_lr)
                    row.update({f"val_{k}": v for k, v in vm.items()})
                loop.end_epoch(row)
        return loop.finish()


def base_episodes(bundle: Any, spec: EvalSpec, seed: int) -> tuple[Episodes, EpisodeBatch | None]:
    """The episodes to meta-train on, of the base (training) classes, and fixed validation episodes of
    the validation split (none without one); N-way with the fewest of ``eval.shots`` as in testing."""
    from dltricks.data.episodes import Episodes
    from dltricks.methods.episodes import check_episodes

    k = min(spec.shots)
    (x, y), names = bundle.train, bundle.class_names
    check_episodes(y, spec.n_way, [k], spec.queries, names, what="the training (base) classes")
    family = Episodes(x, y, spec.n_way, k, spec.queries)
    if bundle.val is None:
        return family, None
    check_episodes(bundle.val[1], spec.n_way, [k], spec.queries, names, what="the validation split")
    val = Episodes(*bundle.val, spec.n_way, k, spec.queries).sample(50, torch.Generator().manual_seed(777_767 + seed))
    return family, val


@register_method("meta")
class MetaLearning(Setup):
    """MAML, first-order MAML or Reptile (``train.meta``): the step owns its outer loop. Its evaluation is
    that of its data: a task family's post-update errors (:class:`~dltricks.methods.adaptation.TaskFamily`)
    or few-shot episodes of held-out classes (:class:`~dltricks.methods.episodes.FewShot`)."""

    step_rank = 4

    @classmethod
    def selects(cls, recipe, bundle) -> bool:
        return recipe.train.meta != "none"

    def step(self, model: nn.Module, task: Task, ledger: Any, augmented: bool) -> Method:
        r = self.recipe
        return MetaLearner(task, self.bundle, r.train, r.eval.adapt_steps, r.eval, r.seed)
