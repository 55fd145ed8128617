"""N-way K-shot classification episodes (Vinyals et al. 2016) drawn from labelled samples: the task family
of few-shot meta-learning, as :class:`~dltricks.data.sinusoid.SinusoidTasks` is for regression.

An episode picks N classes at random, relabels them 0..N-1 in the order drawn (so a label means a
different class in every episode, and a learner cannot memorise the classes), and takes K "support" and
``queries`` "query" samples of each. :func:`draw_episodes` is the one place episodes are drawn: the
meta-learners train on episodes of the base classes, and every learner is tested on the same episodes of
the novel classes (:mod:`dltricks.methods.episodes`), so that their accuracies pair episode by episode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Episodes", "EpisodeBatch", "draw_episodes", "gather"]


@dataclass
class EpisodeBatch:
    """T episodes: support ``xs`` (T, N*K, C, *spatial) with labels ``ys`` (T, N*K) in 0..N-1, and
    queries ``xq`` (T, N*Q, C, *spatial), ``yq`` (T, N*Q); samples ordered class by class."""

    xs: torch.Tensor
    ys: torch.Tensor
    xq: torch.Tensor
    yq: torch.Tensor


def draw_episodes(y: torch.Tensor, n_way: int, per_class: int, episodes: int, g: torch.Generator) -> torch.Tensor:
    """(E, N, per_class) sample indices: for each episode, N distinct classes of ``y`` (M,) (labels
    0..n-1) in random order, and ``per_class`` distinct samples of each."""
    by_class = [torch.nonzero(y == c).flatten() for c in range(int(y.max()) + 1)]
    idx = []
    for _ in range(episodes):
        classes = torch.randperm(len(by_class), generator=g)[:n_way]
        idx.append(torch.stack([by_class[c][torch.randperm(len(by_class[c]), generator=g)[:per_class]]
                                for c in classes]))
    return torch.stack(idx)


def gather(x: torch.Tensor, idx: torch.Tensor, k_shot: int) -> EpisodeBatch:
    """The episodes of ``idx`` (E, N, K + Q), from :func:`draw_episodes`, as inputs and episode labels."""
    e, n, kq = idx.shape
    labels = torch.arange(n).repeat_interleave(kq).reshape(n, kq).expand(e, -1, -1)
    s, q = (slice(None, k_shot), slice(k_shot, None))
    xs, xq = x[idx[:, :, s]], x[idx[:, :, q]]  # (E, N, K, C, *spatial), (E, N, Q, C, *spatial)
    return EpisodeBatch(xs.flatten(1, 2), labels[:, :, s].flatten(1), xq.flatten(1, 2), labels[:, :, q].flatten(1))


@dataclass
class Episodes:
    """The family of N-way K-shot episodes of labelled samples ``x`` (M, C, *spatial), ``y`` (M,)."""

    x: torch.Tensor
    y: torch.Tensor
    n_way: int
    k_shot: int
    queries: int

    def sample(self, n: int, g: torch.Generator) -> EpisodeBatch:
        """``n`` episodes drawn from ``g``."""
        return gather(self.x, draw_episodes(self.y, self.n_way, self.k_shot + self.queries, n, g), self.k_shot)
