"""What a data path holds, before any recipe names it: the survey behind ``dltricks init PATH``.

:func:`survey` looks at a CSV table, an ``.npz`` of arrays, a folder of images or WAV files (one sub-folder per
class) or a NIfTI dataset folder, and returns a :class:`Survey`: the samples, the classes and their balance, the
shape of one input, value ranges, the problems found (duplicates, a class with one sample, constant columns,
missing values, feature scales far apart, unreadable files) and the ``[data]`` keys of a recipe that reads it.
It never trains and never changes a file. Tables and arrays are read here; images, sounds and volumes in
:mod:`dltricks.data.survey_media`. A path it cannot survey is one line (:class:`DltricksError`) naming it.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dltricks.data.files import CsvSpec
from dltricks.data.survey_checks import (
    MAX_SCALE_RATIO,
    Survey,
    balance,
    class_problems,
    content_key,
    duplicate_problems,
    examples,
    most_common,
    scale_problem,
)
from dltricks.data.tables import csv_rows
from dltricks.errors import DltricksError, did_you_mean

__all__ = ["LABEL_NAMES", "MAX_CLASSES", "MAX_SCALE_RATIO", "Survey", "balance", "class_problems", "content_key",
           "duplicate_problems", "examples", "most_common", "survey"]

# label columns looked for, in this order, when none is named (else the last column)
LABEL_NAMES = ("label", "labels", "class", "target", "y", "category", "species", "outcome")
MAX_CLASSES = 20  # numeric labels with more distinct values than this read as a regression target


def survey(path: str | Path, label: str = "") -> Survey:
    """Survey the data at ``path`` (a file or a folder); ``label`` names a table's label column."""
    from dltricks.recipe.guide import data_kind

    p = Path(path).expanduser()
    if not p.exists():
        raise DltricksError(f"{path}: no such file or folder (looked for {p.resolve()})")
    if label and not (p.is_file() and data_kind(p) == "a CSV table"):
        raise DltricksError(f"--label names a column of a CSV table; {path} is not one")
    if p.is_file():
        kind = data_kind(p)
        if kind == "a CSV table":
            return survey_csv(p, label)
        if kind == "NumPy arrays":
            return survey_npz(p)
        if kind == "a NIfTI volume":
            from dltricks.data.survey_media import survey_nifti

            return survey_nifti(p)
        what = kind or "a file of no data kind dltricks knows"
        raise DltricksError(f"{path} is {what}; dltricks init surveys a CSV table, an .npz of arrays x and y, or a "
                            "folder of images, WAV files (one sub-folder per class) or NIfTI volumes")
    from dltricks.data.survey_media import survey_folder

    return survey_folder(p)


def _label_task(values: np.ndarray) -> str:
    """classification for text or few whole numbers; regression for fractions or many distinct numbers."""
    if values.dtype.kind in "US":
        return "classification"
    distinct = np.unique(values)
    whole = bool(np.all(distinct == np.round(distinct)))
    return "classification" if whole and len(distinct) <= MAX_CLASSES else "regression"


def _class_name(v: Any) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _counts(values: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(values, return_counts=True)
    return {_class_name(n): int(c) for n, c in zip(names, counts)}


def _range(lo: float, hi: float) -> str:
    return f"{lo:.4g} .. {hi:.4g}"


# ---- tables -------------------------------------------------------------------------------------------

def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _label_column(header: list[str], label: str, path: Path) -> tuple[int, str]:
    if label:
        if label not in header:
            raise DltricksError(f"{path}: no column {label!r}{did_you_mean(label, header)}; columns: "
                                f"{', '.join(header)}")
        return header.index(label), "as given"
    lowered = [h.lower() for h in header]
    for name in LABEL_NAMES:
        if name in lowered:
            return lowered.index(name), "found by its name; another with --label COLUMN"
    return len(header) - 1, "the last column; another with --label COLUMN"


def survey_csv(path: Path, label: str = "") -> Survey:
    numbered = csv_rows(path, str(path))
    if len(numbered) < 2:
        raise DltricksError(f"{path} needs a header row and data rows; it has {len(numbered)} row(s)")
    header = [h.strip() for h in numbered[0][1]]
    rows = numbered[1:]
    for n, r in rows:
        if len(r) != len(header):
            raise DltricksError(f"{path}, line {n}: {len(r)} fields but the header has {len(header)}")
    if len(header) < 2:
        raise DltricksError(f"{path} has one column ({header[0]!r}); a table needs a label and features")
    li, how = _label_column(header, label, path)
    lines = [n for n, _ in rows]
    cells = [[c.strip() for c in r] for _, r in rows]
    y_text = [r[li] for r in cells]
    empty_labels = [lines[i] for i, v in enumerate(y_text) if v == ""]
    y_num = [_number(v) for v in y_text]
    numeric_y = not empty_labels and all(v is not None and math.isfinite(v) for v in y_num)
    y = np.array(y_num, dtype=np.float64) if numeric_y else np.array(y_text)
    task = _label_task(y)
    feats = [i for i in range(len(header)) if i != li]
    problems: list[str] = []
    if empty_labels:
        problems.append(f"{len(empty_labels)} rows have no label (line {examples([str(n) for n in empty_labels])})"
                        f"; fill or remove them")
    numeric, text, constant, missing = [], [], [], []
    columns: list[np.ndarray] = []
    for i in feats:
        values = [r[i] for r in cells]
        parsed = [_number(v) if v != "" else math.nan for v in values]  # None: text
        blanks = [lines[k] for k, v in enumerate(parsed) if v is not None and not math.isfinite(v)]
        if blanks:
            missing.append(f"{header[i]!r} ({len(blanks)}, first at line {blanks[0]})")
        present = {v for v in values if v != ""}
        if len(present) <= 1:
            constant.append(repr(header[i]))
        if present and None not in parsed:
            numeric.append(header[i])
            col = np.array(parsed, dtype=np.float64)
            col[~np.isfinite(col)] = np.nan
            columns.append(col)
        else:
            text.append(f"{header[i]} ({len(present)} categories)")
    if constant:
        problems.append(f"{len(constant)} constant column{'s' if len(constant) > 1 else ''} "
                        f"({examples(constant)}): one value tells the model nothing; drop it")
    if missing:
        problems.append(f"missing or non-finite values in {len(missing)} column{'s' if len(missing) > 1 else ''}: "
                        f"{examples(missing)}; fill or drop them before training")
    keys = [("\x1f".join(r[i] for i in feats)).encode() for r in cells]
    problems += duplicate_problems(keys, y_text, [f"line {n}" for n in lines], "rows")
    classes = _counts(y) if task == "classification" else {}
    problems += class_problems(classes)
    facts = [("label", f"{header[li]!r} ({how})")]
    if columns:
        x = np.stack(columns, 1)
        with np.errstate(all="ignore"):
            stds = np.nanstd(x, 0).tolist()
        problems += scale_problem(stds, [repr(n) for n in numeric], "feature")
        if np.isfinite(x).any():
            facts.append(("values", f"{_range(float(np.nanmin(x)), float(np.nanmax(x)))} over the numeric features"))
    facts.append(("features", f"{len(numeric)} numeric" + (f", {len(text)} text: {examples(text)}" if text else "")))
    if task == "regression":
        facts.append(("target", f"{header[li]!r}: numbers {_range(float(y.min()), float(y.max()))} "
                                f"({len(np.unique(y))} distinct): a regression target"))
    data: dict[str, Any] = {"name": "csv", "path": path}
    notes = {"path": "the table; 20% of its rows are held out as the test set (data.test_path names a test table)"}
    if task == "regression" and "task" in CsvSpec.model_fields:  # the loader regresses on label_column itself
        data["label_column"] = header[li]
        data["task"] = "regression"
        notes["task"] = "label_column holds numbers to predict; every other column is a feature"
    elif task == "regression":
        # the target is no class column: label_column names none of the table's columns
        data["label_column"] = next(n for n in ("-", "--", "---", "(none)") if n not in header)
        data["regression_columns"] = [header[li]]
        notes["label_column"] = "no column of classes (a name not in the header)"
        notes["regression_columns"] = "numbers to predict: a regression target; every other column is a feature"
    else:
        data["label_column"] = header[li]
        notes["label_column"] = "the classes; every other column is a feature"
    return Survey(path, "table", f"a CSV table: {len(rows)} rows, {len(feats)} feature columns and "
                                 f"{'a label' if task == 'classification' else 'a target'} column",
                  task, len(rows), (len(feats),), classes, 0, facts, problems, data, notes)


# ---- arrays -------------------------------------------------------------------------------------------

def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except AttributeError:  # a single .npy saved under .npz: np.load returned an array, no context manager
        raise DltricksError(f"{path} holds a single array; save x and y together with numpy.savez(path, x=..., "
                            "y=...)") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise DltricksError(f"{path} is not a readable .npz archive ({type(e).__name__}: {str(e)[:120]}); save one "
                            "with numpy.savez(path, x=..., y=...)") from None


def survey_npz(path: Path) -> Survey:
    arrays = _load_npz(path)
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        held = ", ".join(sorted(arrays)) or "none"
        raise DltricksError(f"{path} has no array {' or '.join(missing)}; it holds {held}"
                            " (dltricks reads x (N, ...) and y (N,), optionally x_test and y_test)")
    x, y = arrays["x"], arrays["y"]
    if x.dtype.kind not in "biuf":
        raise DltricksError(f"{path}: x has dtype {x.dtype}; inputs must be numeric")
    if x.ndim == 1:
        x = x[:, None]
    if y.ndim == 0 or len(y) != len(x) or len(x) == 0:
        raise DltricksError(f"{path}: x has {len(x)} samples but y has {len(y) if y.ndim else 'a scalar'}; "
                            "they must match and not be empty")
    if y.ndim == 2 and y.shape[1] == 1 and x.ndim <= 2:
        y = y[:, 0]
    seg = y.ndim >= 2 and x.ndim == y.ndim + 1 and y.shape[1:] == x.shape[2:]
    if y.ndim != 1 and not seg:
        raise DltricksError(f"{path}: y has shape {y.shape}; it must be (N,) labels or (N, *spatial) label maps "
                            f"matching x of shape {x.shape}")
    task = "segmentation" if seg else _label_task(y)
    problems: list[str] = []
    bad = int((~np.isfinite(x)).sum()) if x.dtype.kind == "f" else 0
    if bad:
        problems.append(f"x has {bad} NaN or infinite values; clean or impute them first")
    labels = [str(v) for v in y] if y.ndim == 1 else [""] * len(y)
    keys = [hashlib.blake2b(np.ascontiguousarray(s).tobytes(), digest_size=16).digest() for s in x]
    problems += duplicate_problems(keys, labels, [f"x[{i}]" for i in range(len(x))], "samples")
    classes = _counts(y) if task in ("classification", "segmentation") else {}
    problems += class_problems(classes) if task == "classification" else []
    table = x.ndim == 2
    sample = x[: 4096].astype(np.float64)
    with np.errstate(all="ignore"):
        axes = (0,) if table else (0, *range(2, x.ndim))
        stds = np.nanstd(sample, axis=axes).tolist()
    if table:
        constant = [str(j) for j, s in enumerate(stds) if s == 0]
        if constant:
            problems.append(f"{len(constant)} constant feature{'s' if len(constant) > 1 else ''} (column "
                            f"{examples(constant)} of x): one value tells the model nothing; drop it")
    scales = scale_problem(stds, [f"{'column' if table else 'channel'} {j}" for j in range(len(stds))],
                           "feature" if table else "channel",
                           *([] if table else ["the recipe sets data.standardize = true (per channel)"]))
    problems += scales
    if task == "regression":
        problems.append(f"y holds {len(np.unique(y))} distinct numbers: a regression target? the npz loader reads y "
                        "as class ids; save the target under another name and list it in data.regression")
    facts = []
    if np.isfinite(sample).any():
        facts.append(("values", f"x {_range(float(np.nanmin(x)), float(np.nanmax(x)))} ({x.dtype})"))
    test = 0
    if "x_test" in arrays and "y_test" in arrays:
        test = len(arrays["x_test"])
        facts.append(("test", f"x_test: {test} samples of shape {tuple(arrays['x_test'].shape[1:])}"))
    what = {2: "features", 3: "signals", 4: "images", 5: "volumes"}.get(x.ndim, "arrays")
    data: dict[str, Any] = {"name": "npz", "path": path}
    if scales and not table:
        data["standardize"] = True
    return Survey(path, "arrays", f"NumPy arrays: x {tuple(arrays['x'].shape)} ({what}), y {tuple(arrays['y'].shape)}",
                  task, len(x), tuple(x.shape[1:]), classes, test, facts, problems, data,
                  {"path": "arrays x, y (and x_test, y_test); without a test set 20% is held out"})
