"""Metric learning: a task whose model outputs embeddings (N, D) and whose loss pulls samples of one class
together and pushes the others apart.

- ``contrastive`` (siamese pairs, Hadsell et al. 2006): every pair in the batch; same-class pairs are
  pulled to distance 0, other pairs pushed beyond a margin (1.0). Embeddings are L2-normalised.
- ``triplet`` with batch-hard mining (Hermans et al. 2017): for each anchor the farthest positive and the
  nearest negative in the batch, margin 0.2, on L2-normalised embeddings.
- ``protonet`` (Snell et al. 2017): within each class of the batch the first half of its samples are the
  support, whose mean is the class prototype, and the rest are queries, classified by softmax over
  negative squared euclidean distances to the prototypes. A P x K batch (``train.pk_samples``) is one
  P-way episode.

The contrastive and triplet losses and the miner are pytorch-metric-learning's; the prototypical loss is
a few lines here (that library has none). The meter reports ``loss`` and ``recall_at_1``: the share of
samples whose nearest other sample (leave-one-out) has the same class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MetricTask", "EmbeddingMeter", "prototypical_loss", "recall_at_1", "NORMALISED"]

# losses that compare L2-normalised embeddings (pytorch-metric-learning's LpDistance default); few-shot
# episodes then compare normalised features too
NORMALISED = {"contrastive", "triplet"}


def prototypical_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Prototypical-network loss of a batch. ``z`` (N, D) embeddings, ``y`` (N,) labels.

    Per class, samples at even rank (0, 2, ...) in the batch are support, odd ranks queries; a class
    with one sample in the batch gives a prototype and no query. Needs two classes with two samples."""
    classes, inverse = torch.unique(y, return_inverse=True)
    # rank of each sample within its class, in batch order: stable sort by class, then position
    order = torch.sort(inverse, stable=True).indices
    rank = torch.empty_like(order)
    counts = torch.bincount(inverse, minlength=len(classes))
    starts = torch.cumsum(counts, 0) - counts
    rank[order] = torch.arange(len(y), device=y.device) - starts[inverse[order]]
    support = rank % 2 == 0
    protos = torch.zeros(len(classes), z.shape[1], device=z.device, dtype=z.dtype)
    protos = protos.index_add(0, inverse[support], z[support])
    protos = protos / torch.bincount(inverse[support], minlength=len(classes)).clamp(min=1)[:, None].to(z.dtype)
    query = ~support
    if not query.any() or len(classes) < 2:
        return (z * 0).sum()  # nothing to classify in this batch: a zero that keeps the graph
    logits = -torch.cdist(z[query], protos).pow(2)
    return F.cross_entropy(logits, inverse[query])


def recall_at_1(z: torch.Tensor, y: torch.Tensor) -> float:
    """Leave-one-out retrieval: the share of samples whose nearest other sample has their class."""
    if len(y) < 2:
        return float("nan")
    d = torch.cdist(z.float(), z.float())
    d.fill_diagonal_(float("inf"))
    return (y[d.argmin(1)] == y).float().mean().item()


class EmbeddingMeter:
    """Mean loss, and recall@1 over all the embeddings of a split (kept on the host: a few thousand)."""

    def __init__(self, normalise: bool) -> None:
        self.normalise = normalise
        self.loss_sum, self.n = 0.0, 0
        self.z: list[torch.Tensor] = []
        self.y: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        self.loss_sum += float(loss) * len(y)
        self.n += len(y)
        z = logits.detach().float()
        self.z.append((F.normalize(z, dim=1) if self.normalise else z).cpu())
        self.y.append(y.cpu())

    def compute(self) -> dict[str, float]:
        if self.n == 0:
            return {}
        return {"loss": self.loss_sum / self.n, "recall_at_1": recall_at_1(torch.cat(self.z), torch.cat(self.y))}


@dataclass
class MetricTask:
    """The task of an embedding model trained with a metric loss (``train.metric_loss``)."""

    loss_name: str = "triplet"
    margin: float = 0.0
    higher_is_better: dict[str, bool] = field(default_factory=lambda: {"loss": False, "recall_at_1": True})
    counts_accuracy = False  # outputs are embeddings: the loop's train accuracy means nothing here

    def __post_init__(self) -> None:
        self._loss = None
        self._miner = None
        if self.loss_name in NORMALISED:  # imported here: pytorch-metric-learning takes seconds to import
            from pytorch_metric_learning import losses, miners

            if self.loss_name == "contrastive":
                self._loss = losses.ContrastiveLoss(pos_margin=0.0, neg_margin=self.margin or 1.0)
            else:
                self._loss = losses.TripletMarginLoss(margin=self.margin or 0.2)
                self._miner = miners.BatchHardMiner()

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        if self.loss_name == "protonet":
            return prototypical_loss(z, y)
        pairs = self._miner(z, y) if self._miner is not None else None
        return self._loss(z, y, pairs)

    def meter(self) -> EmbeddingMeter:
        return EmbeddingMeter(self.loss_name in NORMALISED)

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)
