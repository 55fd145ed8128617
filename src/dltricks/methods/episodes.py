"""Few-shot evaluation on classes held out of training (``data.novel_classes``).

N-way K-shot episodes (Vinyals et al. 2016): draw N novel classes, K labelled "support" samples and
``queries`` test samples of each; classify each query by its nearest class centroid (the mean support
feature), or (``eval.episode_head = "linear"``) by a softmax classifier fitted to the support. Accuracy
is averaged over many episodes, drawn from a generator fixed by the run's seed, with a 95% interval
(1.96 standard errors) as the few-shot literature reports it. Retrieval recall@1 is the
leave-one-out nearest-neighbour accuracy over every novel sample.

Features: an embedding model's output (``model.embedding_dim``), or for a classifier the input of its
last linear layer, i.e. the baseline of Chen et al. 2019 ("A closer look at few-shot classification"):
train a classifier on the base classes, then nearest centroid on its penultimate features.

A meta-learned model (``train.meta``) is scored on the same episodes by adapting to each support instead
(:func:`dltricks.methods.adaptation.post_update_scores`).

Metrics (``test_`` prefixed by the runner): ``{N}way_{K}shot_accuracy`` and ``{N}way_{K}shot_ci95`` for
each K in ``eval.shots`` (for a meta-learner also ``{N}way_{K}shot_accuracy_{S}step`` for each S in
``eval.adapt_steps``), and ``novel_recall_at_1``.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from dltricks.data.episodes import draw_episodes, gather
from dltricks.errors import DltricksError
from dltricks.loop.metric import NORMALISED, recall_at_1
from dltricks.methods.adaptation import batch_statistics, plot_episode_adaptation, post_update_scores
from dltricks.methods.registry import Setup, Trained, register_method

__all__ = ["features", "novel_episodes", "episode_accuracy", "fewshot_metrics", "check_episodes", "mean_ci95",
           "meta_episodes", "FewShot"]


@torch.no_grad()
def features(model: nn.Module, x: torch.Tensor, embedding: bool, batch_size: int = 512,
             device: torch.device | None = None) -> torch.Tensor:
    """(N, D) features of ``x`` (N, C, *spatial): the model's output for an embedding model, else the
    input of its last ``nn.Linear`` (the classifier's penultimate features). Returned on the host."""
    device = device or next(model.parameters()).device
    hook, grabbed = None, []
    if not embedding:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise DltricksError("few-shot episodes on a classifier need a final nn.Linear layer whose input "
                                "is the feature; set model.embedding_dim for an embedding model")
        hook = linears[-1].register_forward_hook(lambda m, inp, out: grabbed.append(inp[0].detach()))
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(x), batch_size):
            y = model(x[i:i + batch_size].to(device))
            out.append((grabbed.pop() if hook is not None else y).float().flatten(1).cpu())
    finally:
        if hook is not None:
            hook.remove()
        model.train(was_training)
    return torch.cat(out)


def check_episodes(y: torch.Tensor, n_way: int, shots: list[int], queries: int,
                   names: list[str] | None = None, what: str = "data.novel_classes") -> None:
    """One-line errors for episodes the classes ``what`` cannot fill: too few classes or samples per class."""
    counts = torch.bincount(y)
    if len(counts) < n_way:
        more = " or hold out more classes" if "novel" in what else ""
        raise DltricksError(f"eval.n_way = {n_way} but {what} holds only {len(counts)} classes; "
                            f"use eval.n_way <= {len(counts)}{more}")
    need = max(shots) + queries
    small = int(counts.argmin())
    if counts[small] < need:
        name = names[small] if names else str(small)
        raise DltricksError(f"eval.shots = {max(shots)} with eval.queries = {queries} needs {need} samples of "
                            f"each class of {what}, but class {name!r} has {int(counts[small])}; use K + queries "
                            f"<= {int(counts[small])}")


def novel_episodes(y: torch.Tensor, n_way: int, k_shot: int, queries: int, episodes: int, seed: int) -> torch.Tensor:
    """(E, N, K + Q) indices into the novel samples of the test episodes of a run of ``seed``: the same for
    every learner (nearest centroid, a fitted head, a meta-learner adapting), so that they pair."""
    return draw_episodes(y, n_way, k_shot + queries, episodes, torch.Generator().manual_seed(50_021 + seed))


def episode_accuracy(z: torch.Tensor, y: torch.Tensor, n_way: int, k_shot: int, queries: int, episodes: int,
                     seed: int, normalise: bool = False, head: str = "centroid"
                     ) -> tuple[float, float, list[float]]:
    """Mean N-way K-shot accuracy over ``episodes`` episodes, its 95% half-interval and the per-episode
    accuracies. ``z`` (M, D) features, ``y`` (M,) labels 0..n-1; ``seed`` fixes every episode's classes,
    support and queries. ``head``: ``centroid`` (nearest class mean) or ``linear`` (a softmax classifier
    fitted to each episode's support, Chen et al.'s fine-tuned head; all episodes at once)."""
    if normalise:
        z = F.normalize(z, dim=1)
    idx = novel_episodes(y, n_way, k_shot, queries, episodes, seed)  # (E, N, K + Q)
    support, query = z[idx[:, :, :k_shot]], z[idx[:, :, k_shot:]]  # (E, N, K, D), (E, N, Q, D)
    query = query.reshape(episodes, n_way * queries, -1)
    if head == "centroid":
        pred = torch.cdist(query, support.mean(2)).argmin(2)  # (E, N * Q)
    elif head == "linear":
        pred = _linear_head(support, query)
    else:
        raise DltricksError(f"eval.episode_head = {head!r}: use centroid or linear")
    truth = torch.arange(n_way).repeat_interleave(queries)
    accs = (pred == truth).float().mean(1).tolist()
    return (*mean_ci95(accs), accs)


def mean_ci95(accs: list[float]) -> tuple[float, float]:
    """The mean of per-episode accuracies and its 95% half-interval (1.96 standard errors)."""
    mean = sum(accs) / len(accs)
    sd = math.sqrt(sum((a - mean) ** 2 for a in accs) / max(len(accs) - 1, 1))
    return mean, 1.96 * sd / math.sqrt(len(accs))


def _linear_head(support: torch.Tensor, query: torch.Tensor, steps: int = 100, lr: float = 0.1,
                 weight_decay: float = 1e-3) -> torch.Tensor:
    """Fit one softmax classifier per episode on its support (E, N, K, D) (Adam, full batch, a little L2)
    and return its predictions for the queries (E, M, D) as (E, M). Features are standardised per episode."""
    e, n, k, d = support.shape
    xs = support.reshape(e, n * k, d)
    mu, sd = xs.mean(1, keepdim=True), xs.std(1, keepdim=True).clamp(min=1e-6)  # n * k >= 2
    xs, xq = (xs - mu) / sd, (query - mu) / sd
    ys = torch.arange(n).repeat_interleave(k).expand(e, -1)
    with torch.enable_grad():
        w = torch.zeros(e, d, n, requires_grad=True)
        b = torch.zeros(e, 1, n, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=lr, weight_decay=weight_decay)
        for _ in range(steps):
            opt.zero_grad()
            logits = torch.bmm(xs, w) + b
            F.cross_entropy(logits.reshape(-1, n), ys.reshape(-1)).backward()
            opt.step()
    with torch.no_grad():
        return (torch.bmm(xq, w) + b).argmax(2)


def fewshot_metrics(model: nn.Module, novel: tuple[torch.Tensor, torch.Tensor], *, embedding: bool,
                    n_way: int, shots: list[int], queries: int, episodes: int, seed: int,
                    normalise: bool = False, names: list[str] | None = None,
                    device: torch.device | None = None, head: str = "centroid",
                    adapt_steps: list[int] | None = None, inner_steps: int = 1, inner_lr: float = 0.0
                    ) -> dict[str, float]:
    """Few-shot accuracies (with 95% intervals) and recall@1 on the novel classes.

    With ``adapt_steps`` (a meta-learned model, whose head has ``n_way`` outputs) each episode is scored by
    adapting the whole model to its support, ``S`` steps of size ``inner_lr``, and classifying its queries:
    ``{N}way_{K}shot_accuracy_{S}step`` for each S, and ``{N}way_{K}shot_accuracy`` after ``inner_steps``,
    the steps it was meta-trained to take (more can overshoot: MAML's initialisation is tuned to them).
    The episodes are the same as the centroid's, so a meta-learner and a baseline pair episode by episode."""
    x, y = novel
    check_episodes(y, n_way, shots, queries, names)
    with batch_statistics(model) if adapt_steps else nullcontext():  # as the meta-learner trained
        z = features(model, x, embedding, device=device)
    out: dict[str, float] = {}
    for k in shots:
        if adapt_steps:
            batch = gather(x, novel_episodes(y, n_way, k, queries, episodes, seed), k)
            scores = post_update_scores(model, batch, [*adapt_steps, inner_steps], inner_lr)
            out.update({f"{n_way}way_{k}shot_accuracy_{s}step": scores[s].mean().item() for s in adapt_steps})
            mean, ci = mean_ci95(scores[inner_steps].tolist())
        else:
            mean, ci, _ = episode_accuracy(z, y, n_way, k, queries, episodes, seed, normalise, head)
        out[f"{n_way}way_{k}shot_accuracy"], out[f"{n_way}way_{k}shot_ci95"] = mean, ci
    out["novel_recall_at_1"] = recall_at_1(F.normalize(z, dim=1) if normalise else z, y)
    return out


def meta_episodes(recipe, bundle) -> bool:
    """A meta-learner on few-shot episodes (``train.meta`` with ``data.novel_classes``): its head has
    ``eval.n_way`` outputs whose meaning changes with every episode, so it has no plain test accuracy;
    it is scored by adapting to the novel classes' episodes."""
    return recipe.train.meta != "none" and bundle.tasks is None and bundle.novel is not None


@register_method("few_shot")
class FewShot(Setup):
    """Few-shot episodes on the classes held out of training (``data.novel_classes``): N-way K-shot
    accuracy with 95% intervals and recall@1; a meta-learner's episodic head is adapted per episode."""

    @classmethod
    def selects(cls, recipe, bundle) -> bool:
        return bundle.novel is not None and recipe.train.zero_shot != "dap"

    @property
    def episodic(self) -> bool:
        return meta_episodes(self.recipe, self.bundle)

    def check(self) -> None:  # before training, not after it
        e = self.recipe.eval
        check_episodes(self.bundle.novel[1], e.n_way, e.shots, e.queries, self.bundle.novel_names)

    def head_width(self) -> int | None:
        # one output per class of an episode, whichever classes it holds
        return self.recipe.eval.n_way if self.episodic else None

    @property
    def replaces_test_metrics(self) -> bool:  # type: ignore[override]
        return self.episodic

    def metric_names(self, model, task) -> list[str]:
        e, names = self.recipe.eval, []
        steps = e.adapt_steps if self.episodic else []
        for k in e.shots:
            names += [f"test_{e.n_way}way_{k}shot_accuracy", f"test_{e.n_way}way_{k}shot_ci95"]
            names += [f"test_{e.n_way}way_{k}shot_accuracy_{s}step" for s in steps]
        return names + ["test_novel_recall_at_1"]

    def metrics(self, run: Trained) -> dict[str, float]:
        e, t = self.recipe.eval, self.recipe.train
        fs = fewshot_metrics(run.model, self.bundle.novel, embedding=bool(self.recipe.model.embedding_dim),
                             n_way=e.n_way, shots=e.shots, queries=e.queries, episodes=e.episodes,
                             seed=self.recipe.seed, normalise=t.metric_loss in NORMALISED,
                             names=self.bundle.novel_names, device=run.device, head=e.episode_head,
                             adapt_steps=e.adapt_steps if self.episodic else None,
                             inner_steps=t.inner_steps, inner_lr=t.inner_lr)
        return {f"test_{k}": v for k, v in fs.items()}

    def figures(self, run: Trained, metrics: dict[str, float]) -> None:
        if not self.episodic or run.run_dir is None:
            return
        # accuracy against adaptation steps, on 200 of the test episodes
        e, t = self.recipe.eval, self.recipe.train
        x, y = self.bundle.novel
        batches = {k: gather(x, novel_episodes(y, e.n_way, k, e.queries, min(e.episodes, 200), self.recipe.seed), k)
                   for k in e.shots}
        plot_episode_adaptation(run.model, batches, max(*e.adapt_steps, t.inner_steps), t.inner_lr,
                                run.run_dir / "adaptation.png", t.inner_steps,
                                f"{self.recipe.name}: train.meta = {t.meta}")
