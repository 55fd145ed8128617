"""Reading the user's tables and labels, shared by the CSV/NPZ loaders (:mod:`dltricks.data.files`) and their
regression/multi-task targets (:mod:`dltricks.data.targets_files`). Every problem is one line naming the file."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from dltricks.errors import DltricksError

__all__ = ["existing_file", "check_finite", "int_labels", "csv_rows"]


def existing_file(path: str, key: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DltricksError(f"{key} = {path!r}: no such file (looked for {p.resolve()})")
    if not p.is_file():
        raise DltricksError(f"{key} = {path!r} is a folder, not a file")
    return p


def check_finite(x: np.ndarray, where: str, describe=None) -> None:
    """One line naming how many values are NaN or infinite and where the first one is."""
    bad = ~np.isfinite(x)
    count = int(bad.sum())
    if count == 0:
        return
    first = np.unravel_index(int(np.argmax(bad.reshape(-1))), x.shape)
    n_nan, n_inf = int(np.isnan(x).sum()), count - int(np.isnan(x).sum())
    kinds = ", ".join(s for s in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} infinite" if n_inf else "") if s)
    place = describe(first) if describe else f"first at sample {first[0]}, index {tuple(int(i) for i in first[1:])}"
    rows = int(bad.reshape(len(x), -1).any(axis=1).sum())
    raise DltricksError(f"{where} has {count} non-finite values ({kinds}) in {rows} of {len(x)} samples, "
                        f"{place}; clean or impute them first")


def int_labels(y: np.ndarray, where: str, at=lambda i: f"position {i}") -> np.ndarray:
    """Integer class ids >= 0 from an integer, bool or integral float array. ``at(i)`` says where the
    i-th label is in the user's terms (a CSV line, an array position)."""
    if y.dtype.kind == "b":
        return y.astype(np.int64)
    if y.dtype.kind in "iu":
        out = y.astype(np.int64)
    elif y.dtype.kind == "f":
        if not np.isfinite(y).all():
            bad = int((~np.isfinite(y)).sum())
            raise DltricksError(f"{where} has {bad} NaN/infinite labels; labels must be class ids 0..K-1")
        frac = y != np.round(y)
        if frac.any():
            i = int(np.argmax(frac.reshape(-1)))
            raise DltricksError(f"{where} has {int(frac.sum())} non-integer labels "
                                f"(e.g. {float(y.reshape(-1)[i]):g} at {at(i)}); labels must be class ids 0..K-1")
        out = y.astype(np.int64)
    else:
        raise DltricksError(f"{where} has dtype {y.dtype}; labels must be integer class ids (or strings)")
    if (out < 0).any():
        i = int(np.argmax((out < 0).reshape(-1)))
        raise DltricksError(f"{where} has {int((out < 0).sum())} negative labels (e.g. {int(out.reshape(-1)[i])} "
                            f"at {at(i)}); labels must be class ids 0..K-1")
    return out


def csv_rows(path: Path, key: str) -> list[tuple[int, list[str]]]:
    """The non-blank rows of a CSV file with each row's line number; the delimiter (``,``, ``;`` or tab) is
    sniffed from the start of the file. ``key`` names the recipe key in errors."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            sample = f.read(65536)
            f.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel
            reader = csv.reader(f, dialect)
            numbered = [(reader.line_num, r) for r in reader]
    except UnicodeDecodeError:
        raise DltricksError(f"{key} = {str(path)!r} is not a UTF-8 text (CSV) file") from None
    except (OSError, csv.Error) as e:
        raise DltricksError(f"{key} = {str(path)!r} cannot be read as CSV ({e})") from None
    return [(n, r) for n, r in numbered if any(c.strip() for c in r)]  # blank lines
