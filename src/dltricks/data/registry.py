"""The dataset registry: a dataset is a recipe schema plus a function that returns tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from dltricks.errors import unknown
from dltricks.recipe import DataSpec, register_section

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

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch dimension: (C, *spatial) or (F,)."""
        return tuple(self.train[0].shape[1:])


Loader = Callable[[DataSpec, int], DataBundle]
_LOADERS: dict[str, Loader] = {}


def register_dataset(name: str, spec: type[DataSpec]) -> Callable[[Loader], Loader]:
    """Decorator: ``@register_dataset("mnist1d", Mnist1dSpec)`` on ``load(spec, seed) -> DataBundle``.

    The loader returns train and test (and ``val`` only where the data has its own);
    :func:`load_data` carves validation out of train, never out of test.
    """

    def deco(fn: Loader) -> Loader:
        register_section("data", name, spec)
        _LOADERS[name] = fn
        return fn

    return deco


def datasets() -> list[str]:
    return sorted(_LOADERS)


def load_data(spec: DataSpec, seed: int = 0) -> DataBundle:
    """Load the dataset a recipe names, with a validation split fixed by ``seed``."""
    from dltricks.data.splits import carve_val

    if spec.name not in _LOADERS:
        raise unknown("dataset", spec.name, _LOADERS)
    from dltricks.data.subsets import few_labels, hold_out_classes, keep_classes

    bundle = _LOADERS[spec.name](spec, seed)
    if spec.attributes or bundle.attributes is not None:
        from dltricks.data.attributes import check_attributes, read_attributes

        if spec.attributes:
            bundle.attributes = read_attributes(spec.attributes)
        names = bundle.class_names or [str(i) for i in range(bundle.num_classes)]
        check_attributes(bundle.attributes, names, spec.attributes or f"dataset {spec.name}")
    if spec.novel_classes:
        hold_out_classes(bundle, spec.novel_classes, spec.classes)
    elif spec.classes:
        keep_classes(bundle, spec.classes)
    if bundle.val is None and spec.val_fraction > 0:
        bundle.train, bundle.val = carve_val(bundle.train, spec.val_fraction, seed,
                                             stratify=bundle.task == "classification")
    if spec.labels_per_class:
        few_labels(bundle, spec.labels_per_class, seed)
    if spec.target.active:
        from dltricks.data.domains import add_target

        add_target(bundle, spec, seed, _LOADERS[spec.name])
    return bundle
