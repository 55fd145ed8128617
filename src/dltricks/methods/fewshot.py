"""P x K class-balanced batches for metric learning (Hermans et al. 2017): each batch holds K samples of
each of P classes, so that every anchor has positives to pull in and negatives to push away (a shuffled
batch of 64 from 5 classes has them too, but an unequal number of each), and a prototypical network's
batch is a P-way episode with K/2 support and K/2 query samples per class.

The order is drawn from the loop's data generator, so a resumed run continues with the same batches.
"""

from __future__ import annotations

import torch

from dltricks.errors import DltricksError
from dltricks.loop.method import Method
from dltricks.loop.tasks import Task
from dltricks.methods.registry import Setup, register_method


class ClassBalanced(Method):
    """The supervised (or metric) step of ``task`` on P x K batches: ``P = batch_size / K`` classes."""

    name = "class_balanced"

    def __init__(self, task: Task, y: torch.Tensor, batch_size: int, k: int,
                 names: list[str] | None = None) -> None:
        super().__init__(task)
        if y.dim() != 1 or torch.is_floating_point(y):
            raise DltricksError("train.pk_samples needs class labels (a classification dataset)")
        counts = torch.bincount(y)
        present = torch.nonzero(counts).flatten()
        if batch_size % k:
            raise DltricksError(f"train.pk_samples = {k} must divide train.batch_size = {batch_size} (a batch "
                                f"is P classes x K samples); e.g. train.batch_size = {max(1, batch_size // k) * k}")
        p = batch_size // k
        if p > len(present):
            raise DltricksError(f"train.batch_size = {batch_size} with train.pk_samples = {k} needs {p} classes "
                                f"per batch but the training data has {len(present)}; use train.batch_size "
                                f"<= {len(present) * k}")
        small = int(present[counts[present].argmin()])
        if counts[small] < k:
            name = names[small] if names else str(small)
            raise DltricksError(f"train.pk_samples = {k} but class {name!r} has only {int(counts[small])} "
                                f"training samples; use train.pk_samples <= {int(counts[small])}")
        self.p, self.k = p, k
        self.by_class = [torch.nonzero(y == c).flatten() for c in present.tolist()]

    def order(self, batches) -> torch.Tensor:
        """``len(batches)`` blocks of P classes x K distinct samples each, concatenated."""
        g, blocks = batches.gen, []
        for _ in range(len(batches)):
            classes = torch.randperm(len(self.by_class), generator=g)[:self.p]
            for c in classes.tolist():
                idx = self.by_class[c]
                blocks.append(idx[torch.randperm(len(idx), generator=g)[:self.k]])
        return torch.cat(blocks)


@register_method("metric_learning")
class MetricLearning(Setup):
    """An embedding head trained by a metric loss (``model.embedding_dim`` with ``train.metric_loss``)."""

    @classmethod
    def selects(cls, recipe, bundle) -> bool:
        return (recipe.train.metric_loss != "none" or bool(recipe.model.embedding_dim)) \
            and recipe.train.zero_shot != "dap" and bundle.task == "classification" and not bundle.targets

    def task(self):
        from dltricks.loop.metric import MetricTask

        t = self.recipe.train
        if t.metric_loss == "none" or not self.recipe.model.embedding_dim:
            raise DltricksError("train.metric_loss and model.embedding_dim go together: an embedding model is "
                                "trained by a metric loss (e.g. model.embedding_dim = 64, train.metric_loss = "
                                "'triplet'); set both or neither")
        return MetricTask(t.metric_loss, t.metric_margin)


@register_method("class_balanced")
class ClassBalancedBatches(Setup):
    """P x K batches (``train.pk_samples``) for metric learning."""

    step_rank = 1

    @classmethod
    def selects(cls, recipe, bundle) -> bool:
        return bool(recipe.train.pk_samples)

    def step(self, model, task: Task, ledger, augmented: bool) -> Method:
        t = self.recipe.train
        return ClassBalanced(task, self.bundle.train[1], t.batch_size, t.pk_samples, self.bundle.class_names)
