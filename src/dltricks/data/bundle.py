"""The tensors a dataset hands to training: :class:`DataBundle` and the :class:`Target` of each output column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

Pair = tuple[torch.Tensor, torch.Tensor]
Task = Literal["classification", "segmentation", "regression", "multitask"]


@dataclass(frozen=True)
class Target:
    """One column of a regression or multi-task ``y``: its name, kind and width of model output
    (``num_classes`` logits for a classification target, 1 for a regression target)."""

    name: str
    kind: Literal["classification", "regression"]
    num_classes: int = 1

    @property
    def outputs(self) -> int:
        return self.num_classes if self.kind == "classification" else 1


@dataclass
class DataBundle:
    """Tensors ready for training.

    ``x``: (N, C, *spatial) float32 (or (N, F) for tabular data); ``y``: (N,) int64 class labels for
    classification, (N, *spatial) int64 label maps for segmentation, (N, T) float32 for regression and
    multi-task data, one column per entry of ``targets`` (class ids stored as floats); there
    ``num_classes`` is the model's output width, the sum of the targets' outputs.
    """

    train: Pair
    test: Pair
    val: Pair | None = None
    task: Task = "classification"
    num_classes: int = 2
    class_names: list[str] | None = None
    # A Dataset to train on instead of ``train`` (random patches of large volumes, say). Its items are
    # (x, y) pairs; if it has ``set_epoch(epoch)`` the loop calls it so that sampling is fixed by seed.
    train_source: Dataset | None = None
    targets: list[Target] | None = None
    # training inputs whose labels were set aside by ``data.labels_per_class`` (N_u, C, *spatial); no
    # labels are kept, so no method can read them
    unlabelled: torch.Tensor | None = None
    # ``data.novel_classes``: samples of the classes held out of training (from train and test), labelled
    # 0..n-1 in the order listed, for few-shot episodes; never seen by training or validation
    novel: Pair | None = None
    novel_names: list[str] | None = None
    # zero-shot class descriptions: class name -> (A,) attribute vector, for every class (seen and unseen)
    attributes: dict[str, torch.Tensor] | None = None
    # a family of tasks to sample (sinusoid regression) and its fixed test tasks, for meta-learning
    tasks: Any = None
    test_tasks: Any = None
    # a [data.target] domain (dltricks.data.domains): its training inputs without labels, and its own
    # labelled validation and test splits, used only for test_target_* metrics and oracle curves
    target_unlabelled: torch.Tensor | None = None
    target_val: Pair | None = None
    target_test: Pair | None = None
    # ``data.standardize``: the per-feature statistics of the training split the inputs were scaled with
    # (a dltricks.data.standardize.Standardizer; typed loosely so this module imports nothing of ours)
    standardizer: Any = None
    # the names of the features of (N, F) inputs read from a table (its header), for messages
    feature_names: list[str] | None = None
    # test rows of a table whose text categories the training split never had (encoded as all zeros)
    unseen_categories: int = 0

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch dimension: (C, *spatial) or (F,)."""
        return tuple(self.train[0].shape[1:])
