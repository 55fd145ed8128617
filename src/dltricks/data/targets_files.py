"""Regression and multi-task targets from the user's files.

CSV: ``data.regression_columns = ["price", "age"]`` makes those columns regression targets; the
``label_column`` (when it is in the header) is a classification target too.
Every other column is a numeric feature. NPZ: ``data.regression = ["age"]`` names arrays of shape (N,)
(and ``age_test`` for a test set with ``x_test``), with ``y`` a classification target when present.
A regression target that is not numeric is one line naming the column and the first bad value.
"""

from __future__ import annotations

import numpy as np
import torch

from dltricks.data.bundle import DataBundle, Target
from dltricks.data.splits import carve_val
from dltricks.data.tables import csv_rows, existing_file, int_labels
from dltricks.errors import DltricksError


def _numeric(values: list[str], where: str, lines: list[int]) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float32)
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except ValueError:
            raise DltricksError(f"{where} is a regression target but is not numeric (line {lines[i]}: {v!r}); "
                                "regression targets must be numbers") from None
        if not np.isfinite(out[i]):
            raise DltricksError(f"{where} has a non-finite regression target at line {lines[i]} ({v!r})")
    return out


def _read_table(path: str, key: str) -> tuple[list[str], list[list[str]], list[int]]:
    numbered = csv_rows(existing_file(path, key), key)
    if len(numbered) < 2:
        raise DltricksError(f"{key} = {path!r} needs a header row and data rows")
    header = [h.strip() for h in numbered[0][1]]
    rows = [r for _, r in numbered[1:]]
    for (n, r) in numbered[1:]:
        if len(r) != len(header):
            raise DltricksError(f"{path}, line {n}: {len(r)} fields but the header has {len(header)}")
    return header, rows, [n for n, _ in numbered[1:]]


def _table(spec, path: str, key: str, classes: list[str] | None):
    from dltricks.errors import did_you_mean

    header, rows, lines = _read_table(path, key)
    for c in spec.regression_columns:
        if c not in header:
            raise DltricksError(f"{path}: no regression column {c!r}{did_you_mean(c, header)}; columns: "
                                f"{', '.join(header)}")
    label = spec.label_column if spec.label_column in header else ""
    targets_cols = ([label] if label else []) + list(spec.regression_columns)
    feats = [i for i, h in enumerate(header) if h not in targets_cols]
    if not feats:
        raise DltricksError(f"{path} has no feature columns besides the targets {', '.join(targets_cols)}")
    x = [[r[i].strip() for i in feats] for r in rows]  # cells: encoded once the split is known
    cols = []
    if label:
        names = [r[header.index(label)].strip() for r in rows]
        classes = classes if classes is not None else sorted(set(names))
        index = {n: i for i, n in enumerate(classes)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise DltricksError(f"{path}: label {unknown[0]!r} is not a class of the training table")
        cols.append(np.array([index[n] for n in names], dtype=np.float32))
    for c in spec.regression_columns:
        cols.append(_numeric([r[header.index(c)].strip() for r in rows], f"{path}: column {c!r}", lines))
    return x, np.stack(cols, 1), classes, label, [header[i] for i in feats], lines


def load_csv_targets(spec) -> DataBundle:
    """Text feature columns one-hot and ``data.impute`` as in :func:`dltricks.data.files.load_csv`."""
    from dltricks.data.encode import features_of, fit_encoder

    cells, y, classes, label, feats, lines = _table(spec, spec.path, "data.path", None)
    targets = ([Target(label, "classification", len(classes))] if label else []) + \
        [Target(c, "regression") for c in spec.regression_columns]
    if spec.impute == "none":  # missing values are refused for the whole file, before any split
        features_of(fit_encoder(feats, cells, np.arange(len(cells)), "none"), cells, lines, spec.path)
    idx = torch.arange(len(y))
    train_idx, test_idx = idx, None
    if not spec.test_path:
        (train_idx, _), (test_idx, _) = carve_val((idx, torch.from_numpy(y)), spec.test_fraction, spec.split_seed,
                                                  stratify=False, key="data.test_fraction")
    enc = fit_encoder(feats, cells, train_idx.numpy(), spec.impute)
    x = torch.from_numpy(features_of(enc, cells, lines, spec.path))
    if spec.test_path:
        tcells, yt, _, _, tfeats, tlines = _table(spec, spec.test_path, "data.test_path", classes)
        if tfeats != feats:
            raise DltricksError(f"{spec.test_path} has feature columns {', '.join(tfeats)} but {spec.path} has "
                                f"{', '.join(feats)}; they must match")
        xt = torch.from_numpy(features_of(enc, tcells, tlines, spec.test_path))
        train, test = (x, torch.from_numpy(y)), (xt, torch.from_numpy(yt))
    else:
        yy = torch.from_numpy(y)
        train, test = (x[train_idx], yy[train_idx]), (x[test_idx], yy[test_idx])
    bundle = _bundle(train, test, targets)
    bundle.feature_names = enc.feature_names
    bundle.unseen_categories = sum(sum(c.values()) for c in enc.unseen.values())
    return bundle


def load_npz_targets(spec, arrays: dict[str, np.ndarray]) -> DataBundle:
    src = spec.path
    if "x" not in arrays:
        raise DltricksError(f"{src} has no array x; it holds {', '.join(sorted(arrays))}")
    has_test = "x_test" in arrays

    def column(name: str, suffix: str, n: int) -> np.ndarray:
        key = name + suffix
        if key not in arrays:
            raise DltricksError(f"{src} has no array {key!r} for regression target {name!r}; it holds "
                                f"{', '.join(sorted(arrays))}")
        a = arrays[key]
        if a.dtype.kind not in "biuf":
            raise DltricksError(f"{src}: regression target {key!r} has dtype {a.dtype}; it must be numeric")
        a = a.reshape(len(a), -1) if a.ndim else a
        if a.ndim != 2 or a.shape[1] != 1 or len(a) != n:
            raise DltricksError(f"{src}: regression target {key!r} has shape {arrays[key].shape}; it must be ({n},)")
        if not np.isfinite(a).all():
            raise DltricksError(f"{src}: regression target {key!r} has NaN or infinite values")
        return a[:, 0].astype(np.float32)

    def part(suffix: str):
        x = arrays["x" + suffix].astype(np.float32)
        cols, targets = [], []
        if "y" + suffix in arrays:
            y = int_labels(arrays["y" + suffix].reshape(-1), f"{src}: y{suffix}")
            cols.append(y.astype(np.float32))
            targets.append(Target("y", "classification", int(arrays["y"].max()) + 1))
        cols += [column(name, suffix, len(x)) for name in spec.regression]
        targets += [Target(name, "regression") for name in spec.regression]
        return torch.from_numpy(x), torch.from_numpy(np.stack(cols, 1)), targets

    x, y, targets = part("")
    if has_test:
        xt, yt, _ = part("_test")
        train, test = (x, y), (xt, yt)
    else:
        train, test = carve_val((x, y), spec.test_fraction, spec.split_seed, stratify=False, key="data.test_fraction")
    return _bundle(train, test, targets)


def _bundle(train, test, targets: list[Target]) -> DataBundle:
    task = "regression" if all(t.kind == "regression" for t in targets) else "multitask"
    return DataBundle(train=train, test=test, task=task, num_classes=sum(t.outputs for t in targets),  # type: ignore[arg-type]
                      targets=targets)
