"""Subsets for learning set-ups: a subset of the classes, and few labels per class.

``data.classes = [5, 6, 7, 8, 9]`` keeps those classes in train, validation and test and relabels them
0..k-1 in the order given (their names kept), so a model pretrained on 0-4 can be fine-tuned on 5-9.
``data.labels_per_class = N`` keeps N training samples of each class, chosen by the run's seed (the first
N of each class along a seeded order, so the labels beyond the point where every class is full are never
read); the other training inputs become ``bundle.unlabelled`` without their labels. Validation is carved before that,
from all the training data (its labels are only ever used for validation curves and early stopping);
set ``data.val_fraction = 0`` for a set-up where no more than N labels per class exist at all.
"""

from __future__ import annotations

import torch

from dltricks.data.bundle import DataBundle
from dltricks.errors import DltricksError


def _need_class_labels(bundle: DataBundle, key: str) -> None:
    if bundle.task != "classification" or bundle.train[1].dim() != 1:
        raise DltricksError(f"{key} needs a classification dataset; this one is {bundle.task}")


def keep_classes(bundle: DataBundle, classes: list[int]) -> DataBundle:
    """Keep ``classes`` (ids in the dataset's own numbering) in every split, relabelled 0..k-1."""
    _need_class_labels(bundle, "data.classes")
    bad = [c for c in classes if not 0 <= c < bundle.num_classes]
    if bad or len(set(classes)) != len(classes) or len(classes) < 2:
        why = (f"{bad} are not classes of this dataset (0..{bundle.num_classes - 1})" if bad
               else "a class is listed twice" if len(set(classes)) != len(classes) else "it needs at least 2")
        raise DltricksError(f"data.classes = {classes}: {why}")
    lookup = torch.full((bundle.num_classes,), -1, dtype=torch.long)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))

    def sub(pair):
        if pair is None:
            return None
        x, y = pair
        new = lookup[y]
        keep = new >= 0
        return x[keep], new[keep]

    bundle.train, bundle.val, bundle.test = sub(bundle.train), sub(bundle.val), sub(bundle.test)
    names = bundle.class_names or [str(i) for i in range(bundle.num_classes)]
    bundle.class_names = [names[c] for c in classes]
    bundle.num_classes = len(classes)
    return bundle


def few_labels(bundle: DataBundle, per_class: int, seed: int) -> DataBundle:
    """Keep ``per_class`` labelled training samples of each class (fixed by ``seed``); the inputs of the
    others go to ``bundle.unlabelled`` and their labels are dropped."""
    _need_class_labels(bundle, "data.labels_per_class")
    x, y = bundle.train
    names = bundle.class_names or [str(i) for i in range(bundle.num_classes)]
    counts = torch.bincount(y, minlength=bundle.num_classes)
    short = [c for c in range(bundle.num_classes) if counts[c] < per_class]
    if short:
        c = short[0]
        raise DltricksError(f"data.labels_per_class = {per_class} but class {names[c]!r} has only "
                            f"{int(counts[c])} training samples; use at most {int(counts[c])}")
    # walk a seeded order of the samples and keep the first N of each class: once every class is full the
    # walk stops, so the labels of the samples after that point play no part in the choice
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(20_011 + seed))
    taken = [0] * bundle.num_classes
    keep, full = [], 0
    for i in order.tolist():
        c = int(y[i])
        if taken[c] < per_class:
            taken[c] += 1
            keep.append(i)
            full += taken[c] == per_class
            if full == bundle.num_classes:
                break
    labelled = torch.sort(torch.tensor(keep, dtype=torch.long)).values
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[labelled] = False
    bundle.unlabelled = x[mask].clone()
    bundle.train = (x[labelled], y[labelled])
    return bundle


def hold_out_classes(bundle: DataBundle, novel: list[int], base: list[int] | None = None) -> DataBundle:
    """Move every sample of the ``novel`` classes (train and test) to ``bundle.novel``, relabelled 0..n-1
    in the order given, and keep the ``base`` classes (default: all the others) for training, relabelled
    0..k-1 as ``data.classes`` does. Training, validation and test then hold base classes only."""
    _need_class_labels(bundle, "data.novel_classes")
    k = bundle.num_classes
    bad = [c for c in novel if not 0 <= c < k]
    if bad or len(set(novel)) != len(novel):
        why = f"{bad} are not classes of this dataset (0..{k - 1})" if bad else "a class is listed twice"
        raise DltricksError(f"data.novel_classes = {novel}: {why}")
    overlap = sorted(set(novel) & set(base or []))
    if overlap:
        raise DltricksError(f"data.novel_classes and data.classes share {overlap}: a class held out of "
                            "training cannot also be trained on; list each class in one of them")
    base = list(base) if base else [c for c in range(k) if c not in novel]
    names = bundle.class_names or [str(i) for i in range(k)]
    lookup = torch.full((k,), -1, dtype=torch.long)
    lookup[torch.tensor(novel)] = torch.arange(len(novel))
    xs, ys = [], []
    for pair in (bundle.train, bundle.test):
        new = lookup[pair[1]]
        xs.append(pair[0][new >= 0])
        ys.append(new[new >= 0])
    bundle.novel = (torch.cat(xs), torch.cat(ys))
    bundle.novel_names = [names[c] for c in novel]
    return keep_classes(bundle, base)
