"""A table's feature columns as numbers: text columns one-hot encoded, missing values imputed or refused.

A column is text when most of its filled cells are not numbers; a numeric column with a few words in it is a
typo, refused with the line. The categories of a text column come from the training split only (sorted), so
test rows cannot leak into the encoding; a test category the training split never had is encoded as all zeros
and counted. ``data.impute`` fills missing cells (empty, ``nan``) with the training split's mean, median or
most frequent value (text columns: always the most frequent category); ``"none"`` leaves them for
:func:`dltricks.data.tables.check_finite` to refuse with row and column.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from dltricks.data.tables import check_finite
from dltricks.errors import DltricksError

__all__ = ["Column", "TableEncoder", "features_of", "fit_encoder"]


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


@dataclass
class Column:
    """One feature column: ``categories`` for a text column (one output each), None for a number."""

    name: str
    categories: list[str] | None = None
    fill: float | str | None = None  # the imputed value of a missing cell; None = leave it missing

    @property
    def width(self) -> int:
        return len(self.categories) if self.categories is not None else 1


@dataclass
class TableEncoder:
    columns: list[Column]
    unseen: dict[str, Counter] = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return [c.name if c.categories is None else f"{c.name}={v}" for c in self.columns
                for v in (c.categories or [None])]

    def transform(self, cells: list[list[str]], lines: list[int], path: str) -> np.ndarray:
        """Rows of cell strings (N, F) -> (N, F') float32; NaN where a number is missing and not imputed.
        Unseen categories are counted in ``self.unseen`` (column -> category -> rows)."""
        x = np.zeros((len(cells), sum(c.width for c in self.columns)), dtype=np.float32)
        at = 0
        for j, col in enumerate(self.columns):
            raw = [r[j] for r in cells]
            if col.categories is None:
                for n, cell in enumerate(raw):
                    v = _number(cell) if cell else float("nan")
                    if v is None:
                        raise DltricksError(f"{path}: column {col.name!r} is not numeric (line {lines[n]}: "
                                            f"{cell!r}); features must be numbers, or text in most rows "
                                            "(then they are one-hot encoded)")
                    x[n, at] = col.fill if (np.isnan(v) and col.fill is not None) else v
            else:
                index = {c: i for i, c in enumerate(col.categories)}
                for n, cell in enumerate(raw):
                    if cell == "" and col.fill is None:
                        raise DltricksError(f"{path}, line {lines[n]}: column {col.name!r} is empty; fill it, or "
                                            "set data.impute (mean, median or most_frequent) to impute it")
                    cell = cell or str(col.fill)
                    if cell in index:
                        x[n, at + index[cell]] = 1.0
                    else:
                        self.unseen.setdefault(col.name, Counter())[cell] += 1
            at += col.width
        return x

    def unseen_note(self, where: str) -> str | None:
        """One line counting the rows with categories the training split did not have, or None."""
        if not self.unseen:
            return None
        parts = [f"{name!r}: {sum(c.values())} row(s) (e.g. {c.most_common(1)[0][0]!r})"
                 for name, c in self.unseen.items()]
        return f"{where}: categories not in the training split, encoded as all zeros: {'; '.join(parts)}"


def _is_text(values: list[str]) -> bool:
    filled = [v for v in values if v and v.lower() != "nan"]
    words = sum(_number(v) is None for v in filled)
    return bool(filled) and words * 2 > len(filled)


def fit_encoder(names: list[str], cells: list[list[str]], train: np.ndarray, impute: str) -> TableEncoder:
    """Column kinds from every row (they must not depend on the split); categories and fill values from the
    rows ``train`` (positions into ``cells``)."""
    cols = []
    for j, name in enumerate(names):
        values = [r[j] for r in cells]
        fit = [values[i] for i in train]
        if _is_text(values):
            seen = Counter(v for v in fit if v)
            cats = sorted(seen)
            fill = seen.most_common(1)[0][0] if impute != "none" and seen else None
            cols.append(Column(name, cats, fill))
            continue
        fill = None
        if impute != "none":
            nums = np.array([v for v in (_number(c) for c in fit if c) if v is not None], dtype=np.float64)
            nums = nums[np.isfinite(nums)]
            if len(nums) == 0:
                raise DltricksError(f"column {name!r} has no values in the training split to impute from")
            if impute == "mean":
                fill = float(nums.mean())
            elif impute == "median":
                fill = float(np.median(nums))
            else:
                vals, counts = np.unique(nums, return_counts=True)
                fill = float(vals[np.argmax(counts)])
        cols.append(Column(name, None, fill))
    return TableEncoder(cols)


def features_of(enc: TableEncoder, cells: list[list[str]], lines: list[int], path) -> np.ndarray:
    """(N, F') float32 features of one file; missing numbers refused with row and column unless imputed."""
    x = enc.transform(cells, lines, str(path))
    source = [j for j, c in enumerate(enc.columns) for _ in range(c.width)]  # output column -> cell column

    def describe(first: tuple) -> str:
        n, j = int(first[0]), source[int(first[1])]
        cell = cells[n][j]
        kind = "empty" if cell == "" else repr(cell)
        return f"first at line {lines[n]}, column {enc.columns[j].name!r} ({kind})"

    check_finite(x, str(path), describe)
    return x
