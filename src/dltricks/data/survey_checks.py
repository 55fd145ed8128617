"""What the survey of a data path finds, and the checks every kind of data shares (duplicates, classes of
one sample, scales far apart): the :class:`Survey` that :mod:`dltricks.data.survey` (tables, arrays) and
:mod:`dltricks.data.survey_media` (images, sounds, volumes) fill in."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MAX_SCALE_RATIO", "Survey", "balance", "class_problems", "content_key", "duplicate_problems",
           "examples", "most_common", "scale_problem"]

MAX_SCALE_RATIO = 100.0  # feature spreads this far apart slow training (the advisor's feature_scales rule)
_SHOW = 3  # examples named in one problem line


@dataclass
class Survey:
    """What :func:`survey` found at ``path``.

    ``shape`` is one input as the model sees it: (F,) features, (C, L) signals, (C, H, W) images,
    (C, D, H, W) volumes. ``classes`` counts samples per class (voxels per class for segmentation; empty for
    regression). ``data`` holds the recipe's ``[data]`` keys (paths as :class:`Path`, absolute) and ``notes``
    a comment for some of them; ``facts`` are further (name, text) lines to show."""

    path: Path
    kind: str  # "table", "arrays", "images", "audio", "volumes"
    what: str  # one line: "a CSV table: 178 rows, 13 feature columns and a label column"
    task: str  # "classification", "regression", "segmentation"
    samples: int
    shape: tuple[int, ...]
    classes: dict[str, int] = field(default_factory=dict)
    test: int = 0  # samples of a separate test set; 0 = the loader holds part of the training data out
    facts: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def balance(classes: dict[str, int]) -> str:
    """"balanced" or "imbalanced: the largest class is 12x the smallest"."""
    counts = [c for c in classes.values() if c > 0]
    if len(counts) < 2:
        return ""
    ratio = max(counts) / min(counts)
    return "balanced" if ratio <= 1.5 else f"imbalanced: the largest class is {ratio:.1f}x the smallest"


def examples(items: list[str]) -> str:
    return ", ".join(items[:_SHOW]) + (", ..." if len(items) > _SHOW else "")


def duplicate_problems(keys: list[bytes], labels: list[str], names: list[str], what: str) -> list[str]:
    """Problems for samples whose ``keys`` (their content) repeat: copies under one label inflate the test
    score when one lands in train and one in test; copies under different labels cannot both be right.
    ``names`` says where each sample is (a line, a file)."""
    first: dict[bytes, int] = {}
    same, differ = [], []
    for i, k in enumerate(keys):
        j = first.setdefault(k, i)
        if j != i:
            (same if labels[i] == labels[j] else differ).append(f"{names[i]} = {names[j]}")
    out = []
    if same:
        out.append(f"{len(same)} duplicate {what} (the same content twice, e.g. {examples(same)}): a copy in "
                   "train and one in test makes the test score too high; remove them")
    if differ:
        out.append(f"{len(differ)} {what} repeat with a different label (e.g. {examples(differ)}): at most one "
                   "label is right; fix or remove them")
    return out


def class_problems(classes: dict[str, int], what: str = "sample") -> list[str]:
    """A class with a single sample can be in train or in test, never both: it cannot be learnt and tested."""
    ones = [name for name, n in classes.items() if n == 1]
    if not ones:
        return []
    return [f"{len(ones)} class{'es' if len(ones) > 1 else ''} with one {what} ({examples(ones)}): it cannot be "
            "both learnt and tested; add samples or remove the class"]


def scale_problem(stds: list[float], names: list[str], what: str,
                  fix: str = "data.standardize (on for tables) scales them") -> list[str]:
    """Spreads of features (or channels) more than :data:`MAX_SCALE_RATIO` apart."""
    pos = [(s, n) for s, n in zip(stds, names) if s > 0 and math.isfinite(s)]
    if len(pos) < 2:
        return []
    (lo, n_lo), (hi, n_hi) = min(pos), max(pos)
    if hi / lo <= MAX_SCALE_RATIO:
        return []
    return [f"{what} scales far apart: std {lo:.3g} ({n_lo}) to {hi:.3g} ({n_hi}), {hi / lo:.0f}x; {fix}"]


def content_key(data: bytes) -> bytes:
    """A short digest of a file's bytes: equal files, equal keys."""
    return hashlib.blake2b(data, digest_size=16).digest()


def most_common(values: list) -> Any:
    return Counter(values).most_common(1)[0][0]
