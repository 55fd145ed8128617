"""The user's own data: a NumPy ``.npz`` archive or a CSV table.

``data.name = "npz"``: ``path`` to an archive with arrays ``x`` and ``y`` (and optionally ``x_test`` and
``y_test``). ``x`` keeps its shape, (N, C, *spatial) for signals, images and volumes or (N, F) for
features (a 1D ``x`` is one feature per sample); ``y`` holds integer class labels (N,), or label maps
(N, *spatial) for segmentation.

``data.name = "csv"``: ``path`` to a table with a header row; ``label_column`` (default ``label``) holds
the classes (or, with ``task = "regression"``, numbers to predict), every other column is a feature: numbers,
or words one-hot encoded (:mod:`dltricks.data.encode`; missing cells refused or imputed by ``impute``). Labels may be
integers or names (mapped to 0..K-1 in sorted order, the names kept as ``class_names``). ``test_path`` gives
a test table.

Without a test set, ``test_fraction`` of the data is held out, stratified by class and fixed by
``split_seed`` (not by the run's seed: every run of a recipe is tested on the same samples). Relative
paths in a recipe file are taken from that file's folder (from the working directory in ``-o``).
Every problem with a file is one line that names it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from dltricks.data.bundle import DataBundle, Target
from dltricks.data.registry import register_dataset
from dltricks.data.splits import carve_val
from dltricks.data.tables import check_finite, csv_rows, existing_file, int_labels
from dltricks.errors import DltricksError
from dltricks.recipe import PATH, DataSpec


class NpzSpec(DataSpec):
    tabular: ClassVar[bool] = True  # data.standardize = "auto" is on where x is (N, F)

    name: str = "npz"
    path: str = Field(min_length=1, description="an .npz file with arrays x, y (and x_test, y_test)",
                      json_schema_extra=PATH)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="held out as test when the file has none")
    split_seed: int = Field(0, ge=0, description="fixes the held-out test split across runs")
    regression: list[str] = Field(default_factory=list, description="arrays (N,) that are regression targets "
                                                                    "(see dltricks.data.targets_files)")


class CsvSpec(DataSpec):
    tabular: ClassVar[bool] = True  # data.standardize = "auto" is on

    name: str = "csv"
    path: str = Field(min_length=1, description="a CSV file with a header row", json_schema_extra=PATH)
    label_column: str = Field("label", min_length=1, description="the column that holds the classes")
    test_path: str = Field("", description="a CSV file with the same columns to test on; '' = hold out",
                           json_schema_extra=PATH)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="held out as test without test_path")
    split_seed: int = Field(0, ge=0, description="fixes the held-out test split across runs")
    regression_columns: list[str] = Field(default_factory=list, description="columns that are regression "
                                                                            "targets (see dltricks.data.targets_files)")
    task: Literal["classification", "regression"] = Field(
        "classification", description="what label_column holds: classes (names or ids 0..K-1) or numbers to "
                                      "regress")
    impute: Literal["none", "mean", "median", "most_frequent"] = Field(
        "none", description="fill missing feature cells with the training split's mean, median or most frequent "
                            "value (text columns: the most frequent category); none = refuse them with row and "
                            "column")


def _encode(train_y: np.ndarray, test_y: np.ndarray | None, where: str, where_test: str,
            at=None, at_test=None, contiguous: bool = True) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Labels as int64 ids with class names: names sorted for strings, ``0..K-1`` for integers
    (``contiguous``: each id used; label maps of segmentation may lack a class)."""
    if train_y.dtype.kind in "US" and (test_y is None or test_y.dtype.kind in "US"):
        names = sorted(set(train_y.reshape(-1).tolist()) | (set(test_y.reshape(-1).tolist())
                                                              if test_y is not None else set()))
        index = {n: i for i, n in enumerate(names)}
        enc = np.vectorize(index.__getitem__, otypes=[np.int64])
        return enc(train_y), (enc(test_y) if test_y is not None else None), [str(n) for n in names]
    a = int_labels(train_y, where, *([at] if at else []))
    b = int_labels(test_y, where_test, *([at_test] if at_test else [])) if test_y is not None else None
    k = int(max(a.max(initial=0), b.max(initial=0) if b is not None else 0)) + 1
    if contiguous:
        _check_contiguous(a, b, k, where)
    return a, b, [str(i) for i in range(k)]


def _check_contiguous(a: np.ndarray, b: np.ndarray | None, k: int, where: str) -> None:
    """Integer labels are class ids 0..K-1, every one of them used: labels 1..4 would give a 5-class
    head whose class 0 never occurs (a silent off-by-one), so they are refused with the fix."""
    used = np.unique(a) if b is None else np.union1d(np.unique(a), np.unique(b))
    absent = sorted(set(range(k)) - {int(v) for v in used})
    if not absent:
        return
    found = ", ".join(str(int(v)) for v in used[:8]) + (", ..." if len(used) > 8 else "")
    never = ", ".join(map(str, absent[:5])) + (", ..." if len(absent) > 5 else "")
    fix = (f"subtract {int(used[0])} from the labels" if int(used[0]) > 0 and len(used) == k - int(used[0])
           else "renumber the labels 0..K-1")
    raise DltricksError(f"{where} has labels {found} but class ids must be 0..K-1, each used: class {never} "
                        f"never occurs, so the model would get {k} outputs for {len(used)} classes; {fix}, "
                        "or give the classes as names (text labels are numbered in sorted order)")


def _bundle(x: np.ndarray, y: np.ndarray, test: tuple[np.ndarray, np.ndarray] | None, names: list[str],
            spec: NpzSpec | CsvSpec, task: str) -> DataBundle:
    distinct = np.unique(y)
    if len(distinct) < 2:
        found = names[int(distinct[0])] if len(distinct) else "none"
        raise DltricksError(f"data.path = {spec.path!r} has {len(distinct)} class ({found}); classification "
                            "needs at least 2")
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y)
    if test is None:
        (xt, yt), (x_test, y_test) = carve_val((xt, yt), spec.test_fraction, spec.split_seed,
                                               stratify=task == "classification", key="data.test_fraction")
    else:
        x_test = torch.from_numpy(np.ascontiguousarray(test[0], dtype=np.float32))
        y_test = torch.from_numpy(test[1])
    return DataBundle(train=(xt, yt), test=(x_test, y_test), task=task,  # type: ignore[arg-type]
                      num_classes=len(names), class_names=names)


# ---- npz ----------------------------------------------------------------------------------------------

def _read_npz(path: Path, key: str) -> dict[str, np.ndarray]:
    try:
        f = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise DltricksError(f"{key} = {str(path)!r} is not an .npz archive (save one with "
                                "numpy.savez(path, x=..., y=...))") from None
        raise DltricksError(f"{key} = {str(path)!r} is not a readable .npz archive ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DltricksError(f"{key} = {str(path)!r} is not a readable .npz archive "
                            f"({type(e).__name__}: {str(e)[:120]})") from None
    if isinstance(f, np.ndarray):
        raise DltricksError(f"{key} = {str(path)!r} holds a single .npy array; save x and y together with "
                            "numpy.savez(path, x=..., y=...)")
    try:
        with f:
            return {k: f[k] for k in f.files}
    except ValueError as e:  # an object array inside needs pickle, which we never load
        raise DltricksError(f"{key} = {str(path)!r}: an array needs pickle to load ({e}); store plain numeric "
                            "or string arrays") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise DltricksError(f"{key} = {str(path)!r} is a corrupt .npz archive "
                            f"({type(e).__name__}: {str(e)[:120]})") from None


def _features(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise DltricksError(f"{where} has dtype {x.dtype}; inputs must be numeric")
    if x.ndim == 0:
        raise DltricksError(f"{where} is a scalar; it must hold one row per sample")
    if x.ndim == 1:
        x = x[:, None]  # N scalars: one feature each
    return x.astype(np.float32, copy=False)


def _labels_shape(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, str]:
    if y.ndim == 2 and y.shape[1] == 1 and x.ndim <= 2:
        y = y[:, 0]
    if y.ndim == 1:
        return y, "classification"
    if y.ndim >= 2 and x.ndim == y.ndim + 1 and y.shape[1:] == x.shape[2:]:
        return y, "segmentation"
    raise DltricksError(f"{where} has shape {y.shape}; it must be (N,) class labels, or (N, *spatial) label "
                        f"maps matching x of shape {x.shape}")


@register_dataset("npz", NpzSpec)
def load_npz(spec: NpzSpec, seed: int) -> DataBundle:
    path = existing_file(spec.path, "data.path")
    arrays = _read_npz(path, "data.path")
    if spec.regression:
        from dltricks.data.targets_files import load_npz_targets

        return load_npz_targets(spec, arrays)
    src = f"{spec.path}"
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DltricksError(f"{src} has no array {' or '.join(missing)}; it holds "
                            f"{', '.join(sorted(arrays)) or 'no arrays'} (needs x, y; optionally x_test, y_test)")
    has_test = [k for k in ("x_test", "y_test") if k in arrays]
    if len(has_test) == 1:
        other = "y_test" if has_test[0] == "x_test" else "x_test"
        raise DltricksError(f"{src} has {has_test[0]} but no {other}; give both or neither")

    def pair(kx: str, ky: str) -> tuple[np.ndarray, np.ndarray, str]:
        x = _features(arrays[kx], f"{src}: {kx}")
        y = arrays[ky]
        if y.ndim == 0 or len(x) != len(y):
            raise DltricksError(f"{src}: {kx} has {len(x)} samples but {ky} has "
                                f"{len(y) if y.ndim else 'a scalar'}; they must match")
        if len(x) == 0:
            raise DltricksError(f"{src}: {kx} is empty")
        check_finite(x, f"{src}: {kx}")
        y, task = _labels_shape(x, y, f"{src}: {ky}")
        return x, y, task

    x, y, task = pair("x", "y")
    test = None
    y_test = None
    if has_test:
        x_test, y_test, task_test = pair("x_test", "y_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise DltricksError(f"{src}: x_test samples have shape {x_test.shape[1:]} but x samples "
                                f"{x.shape[1:]}; they must match")
        if task_test != task:
            raise DltricksError(f"{src}: y_test has shape {arrays['y_test'].shape} but y {arrays['y'].shape}")
    y, y_test, names = _encode(y, y_test, f"{src}: y", f"{src}: y_test", contiguous=task == "classification")
    if y_test is not None:
        test = (x_test, y_test)
    return _bundle(x, y, test, names, spec, task)


# ---- csv ----------------------------------------------------------------------------------------------

def _read_csv(path: Path, key: str, label_column: str) -> tuple[list[str], list[list[str]], np.ndarray, list[int]]:
    """The feature column names, the feature cells (N, F) as stripped strings, the labels as strings and each
    row's line number."""
    numbered = csv_rows(path, key)
    rows = [r for _, r in numbered]
    lines = [n for n, _ in numbered[1:]]  # the file's line number of each data row
    if not rows:
        raise DltricksError(f"{key} = {str(path)!r} is empty; it needs a header row and data rows")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        from dltricks.errors import did_you_mean

        raise DltricksError(f"{path}: no label column {label_column!r}{did_you_mean(label_column, header)}; "
                            f"columns: {', '.join(header)} (set data.label_column)")
    if len(rows) == 1:
        raise DltricksError(f"{path} has a header but no data rows")
    li = header.index(label_column)
    feats = [i for i in range(len(header)) if i != li]
    if not feats:
        raise DltricksError(f"{path} has no feature columns besides {label_column!r}")
    body = rows[1:]
    for n, r in enumerate(body):
        if len(r) != len(header):
            raise DltricksError(f"{path}, line {lines[n]}: {len(r)} fields but the header has {len(header)}")
    cells = [[r[c].strip() for c in feats] for r in body]
    y = np.array([r[li].strip() for r in body])
    if (y == "").any():
        n = int(np.argmax(y == ""))
        raise DltricksError(f"{path}, line {lines[n]}: empty label in column {label_column!r}")
    return [header[i] for i in feats], cells, y, lines


def _csv_labels(y: np.ndarray) -> np.ndarray:
    """Integer-looking labels as numbers (so 1.5 and -1 are caught); anything else stays a name."""
    try:
        return np.array([float(v) for v in y])
    except ValueError:
        return y


@register_dataset("csv", CsvSpec)
def load_csv(spec: CsvSpec, seed: int) -> DataBundle:
    from dltricks.data.encode import features_of, fit_encoder

    if spec.regression_columns:
        from dltricks.data.targets_files import load_csv_targets

        return load_csv_targets(spec)
    path = existing_file(spec.path, "data.path")
    columns, cells, y_raw, lines = _read_csv(path, "data.path", spec.label_column)
    tpath, yt_raw = None, None
    if spec.test_path:
        tpath = existing_file(spec.test_path, "data.test_path")
        tcolumns, tcells, yt_raw, tlines = _read_csv(tpath, "data.test_path", spec.label_column)
        if tcolumns != columns:
            raise DltricksError(f"{tpath} has feature columns {', '.join(tcolumns)} but {path} has "
                                f"{', '.join(columns)}; they must match")
    where = f"column {spec.label_column!r}"
    if spec.task == "regression":
        from dltricks.data.targets_files import _numeric

        y = _numeric(list(y_raw), f"{path}: {where}", lines)[:, None]
        yt = _numeric(list(yt_raw), f"{tpath}: {where}", tlines)[:, None] if yt_raw is not None else None
        names: list[str] = []
    else:
        y, yt = _csv_labels(y_raw), (_csv_labels(yt_raw) if yt_raw is not None else None)
        if yt is not None and (y.dtype.kind in "US") != (yt.dtype.kind in "US"):
            y, yt = y_raw, yt_raw  # names in one file, numbers in the other: treat all as names
        y, yt, names = _encode(y, yt, f"{spec.path}: {where}", f"{spec.test_path}: {where}",
                                at=lambda i: f"line {lines[i]}",
                                at_test=lambda i: f"line {tlines[i]}")
        distinct = np.unique(y)
        if len(distinct) < 2:
            found = names[int(distinct[0])] if len(distinct) else "none"
            raise DltricksError(f"data.path = {spec.path!r} has {len(distinct)} class ({found}); classification "
                                "needs at least 2")
    if spec.impute == "none":  # missing values are refused for the whole file, before any split
        features_of(fit_encoder(columns, cells, np.arange(len(cells)), "none"), cells, lines, path)
    # the split comes first: categories and imputed values are taken from the training rows only
    idx = torch.arange(len(y))
    train_idx, test_idx = idx, None
    if tpath is None:
        (train_idx, _), (test_idx, _) = carve_val((idx, torch.from_numpy(y)), spec.test_fraction, spec.split_seed,
                                                  stratify=spec.task == "classification", key="data.test_fraction")
    enc = fit_encoder(columns, cells, train_idx.numpy(), spec.impute)
    x = torch.from_numpy(features_of(enc, cells, lines, path))
    yy = torch.from_numpy(y)
    if tpath is None:
        train, test = (x[train_idx], yy[train_idx]), (x[test_idx], yy[test_idx])
        note = enc.unseen_note(f"data.path {path.name} (held-out rows)")
    else:
        train = (x, yy)
        test = (torch.from_numpy(features_of(enc, tcells, tlines, tpath)), torch.from_numpy(yt))
        note = enc.unseen_note(f"data.test_path {tpath.name}")
    if note:
        import sys

        print(f"note: {note}", file=sys.stderr)
    if spec.task == "regression":
        bundle = DataBundle(train=train, test=test, task="regression", num_classes=1,
                            targets=[Target(spec.label_column, "regression")])
    else:
        bundle = DataBundle(train=train, test=test, task="classification", num_classes=len(names),
                            class_names=names)
    bundle.feature_names = enc.feature_names
    bundle.unseen_categories = sum(sum(c.values()) for c in enc.unseen.values())
    return bundle


__all__ = ["NpzSpec", "CsvSpec", "load_npz", "load_csv"]
