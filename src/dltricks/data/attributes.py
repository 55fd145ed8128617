"""Class descriptions for zero-shot learning: ``data.attributes``, a file mapping each class name to a
vector of attributes (binary or real), as JSON (``{"cat": [1, 0, 0.5], ...}``) or CSV (one row per
class: ``name,v1,v2,...``; a first row that is not numbers is a header).

Every class of the dataset (seen and unseen) must have a vector, all of one length; names are the
dataset's class names (``"0"``-``"9"`` for MNIST-1D and digits).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from dltricks.errors import DltricksError

__all__ = ["read_attributes", "check_attributes"]


def read_attributes(path: str | Path) -> dict[str, torch.Tensor]:
    """The class -> (A,) vector table in ``path`` (.json or .csv)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DltricksError(f"data.attributes: file not found: {p}")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DltricksError(f"data.attributes: cannot read {p}: {e}") from None
    rows: dict[str, list] = {}
    if p.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise DltricksError(f"data.attributes: {p} is not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise DltricksError(f"data.attributes: {p} must hold an object mapping class name to a list of numbers")
        rows = {str(k): v for k, v in doc.items()}
    elif p.suffix.lower() == ".csv":
        for i, row in enumerate(csv.reader(text.splitlines())):
            if not row:
                continue
            try:
                rows[row[0].strip()] = [float(v) for v in row[1:]]
            except ValueError:
                if i == 0:
                    continue  # a header
                raise DltricksError(f"data.attributes: {p} line {i + 1}: values after the class name must be "
                                    "numbers") from None
    else:
        raise DltricksError(f"data.attributes: {p} must be a .json or .csv file")
    out = {}
    for name, v in rows.items():
        if not isinstance(v, list) or not v or not all(isinstance(a, (int, float)) for a in v):
            raise DltricksError(f"data.attributes: class {name!r} in {p} needs a non-empty list of numbers")
        out[name] = torch.tensor(v, dtype=torch.float32)
    return out


def check_attributes(table: dict[str, torch.Tensor], class_names: list[str], source: str) -> None:
    """Every class has a vector and all vectors have one length."""
    missing = [n for n in class_names if n not in table]
    if missing:
        raise DltricksError(f"data.attributes: {source} has no attributes for class {missing[0]!r}"
                            f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; every class "
                            f"needs a vector (classes: {', '.join(class_names)})")
    widths = {len(table[n]) for n in class_names}
    if len(widths) > 1:
        raise DltricksError(f"data.attributes: {source} has vectors of lengths {sorted(widths)}; all classes need "
                            "the same number of attributes")
