"""Files sorted into classes (one sub-folder per class, or a CSV of ``path,label``), split, decoded once.

Shared by the image and sound loaders (:mod:`dltricks.data.images`, :mod:`dltricks.data.audio`). The split
is made on the file list, before decoding: test (without a ``test_root``) and validation are stratified by
class and fixed by ``data.split_seed``, and the files are decoded in the order train | validation | test into
one cached array (:mod:`dltricks.data.cache`), so that each split is a slice of the memory map, not a copy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dltricks.data.bundle import DataBundle
from dltricks.data.cache import cached_array
from dltricks.data.splits import carve_val
from dltricks.errors import DltricksError

__all__ = ["class_files", "bundle_from_files"]


def _exts(exts: tuple[str, ...]) -> str:
    return "/".join(exts)


def _from_csv(path: Path, key: str, exts: tuple[str, ...]) -> tuple[list[Path], list[str]]:
    from dltricks.data.tables import csv_rows

    rows = csv_rows(path, key)
    if len(rows) < 2:
        raise DltricksError(f"{key} = {str(path)!r} needs a header row 'path,label' and one row per file")
    header = [h.strip().lower() for h in rows[0][1]]
    if "path" not in header or "label" not in header:
        raise DltricksError(f"{path}: the header is {', '.join(header)}; it needs columns 'path' and 'label'")
    pi, li = header.index("path"), header.index("label")
    files, labels = [], []
    for line, r in rows[1:]:
        if len(r) <= max(pi, li) or not r[pi].strip() or not r[li].strip():
            raise DltricksError(f"{path}, line {line}: needs a path and a label")
        f = Path(r[pi].strip()).expanduser()
        f = f if f.is_absolute() else path.parent / f
        if not f.is_file():
            raise DltricksError(f"{path}, line {line}: no such file {str(f)!r}")
        files.append(f)
        labels.append(r[li].strip())
    return files, labels


def _walk(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    """The files under ``folder`` with one of ``exts``, hidden ones left out; os.walk reads each folder once
    without a stat per file (10,000 files: a few milliseconds)."""
    out = []
    for here, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out += [os.path.join(here, n) for n in names
                if not n.startswith(".") and os.path.splitext(n)[1].lower() in exts]
    return [Path(f) for f in sorted(out)]  # sorted as text: Path comparisons cost more than the walk


def class_files(root: str, key: str, exts: tuple[str, ...], kind: str,
                csv_ok: bool = True) -> tuple[list[Path], list[str]]:
    """The files (sorted) and each one's class name, from a folder of class folders or a ``path,label`` CSV.
    ``exts``: lower-case suffixes that count as ``kind`` files (other files are ignored)."""
    p = Path(root).expanduser()
    if not p.exists():
        raise DltricksError(f"{key} = {root!r}: no such folder (looked for {p.resolve()})")
    if p.is_file():
        if csv_ok and p.suffix.lower() in (".csv", ".tsv", ".txt"):
            return _from_csv(p, key, exts)
        what = "a folder with one sub-folder per class" + (", or a CSV of path,label" if csv_ok else "")
        raise DltricksError(f"{key} = {root!r} is a file; give {what}")
    subs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subs:
        loose = [f for f in p.iterdir() if f.suffix.lower() in exts]
        if loose:
            raise DltricksError(f"{key} = {root!r} holds {len(loose)} {kind} files but no class folders; put "
                                f"each class's files in a sub-folder named after the class")
        raise DltricksError(f"{key} = {root!r} holds no {kind} files ({_exts(exts)}) and no class folders")
    files, labels, empty = [], [], []
    for d in subs:
        found = _walk(d, exts)
        if not found:
            empty.append(d.name)
        files += found
        labels += [d.name] * len(found)
    if not files:
        raise DltricksError(f"{key} = {root!r} holds no {kind} files ({_exts(exts)}) in its {len(subs)} "
                            "sub-folder(s)")
    if empty:
        raise DltricksError(f"{key} = {root!r}: class folder{'s' if len(empty) > 1 else ''} "
                            f"{', '.join(repr(e) for e in empty)} hold{'' if len(empty) > 1 else 's'} no {kind} "
                            f"files ({_exts(exts)}); add some or remove the folder")
    return files, labels


def _split(y: torch.Tensor, spec, has_test: bool) -> tuple[torch.Tensor, list[int]]:
    """The order train | val | test of positions into ``y`` and the length of each part."""
    idx = torch.arange(len(y))
    rest, test = idx, idx[:0]
    if not has_test:
        (rest, _), (test, _) = carve_val((idx, y), spec.test_fraction, spec.split_seed, key="data.test_fraction")
    train, val = rest, rest[:0]
    if spec.val_fraction > 0:
        (train, _), (val, _) = carve_val((rest, y[rest]), spec.val_fraction, spec.split_seed + 1)
    return torch.cat([train, val, test]), [len(train), len(val), len(test)]


def bundle_from_files(spec, files: list[Path], labels: list[str], test: tuple[list[Path], list[str]] | None,
                      shape: tuple[int, ...], decode: Callable[..., np.ndarray], settings: dict,
                      what: str) -> DataBundle:
    """Train, validation and test as slices of memory-mapped arrays of decoded files; labels by class name.
    ``spec`` has test_fraction, val_fraction, split_seed and skip_corrupt."""
    names = sorted(set(labels))
    if len(names) < 2:
        raise DltricksError(f"{what} has {len(names)} class ({', '.join(names)}); classification needs at least 2")
    index = {n: i for i, n in enumerate(names)}
    y = torch.tensor([index[n] for n in labels], dtype=torch.long)
    order, sizes = _split(y, spec, test is not None)
    notes = []

    def load(fs: list[Path], ys: torch.Tensor, key: str) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        c = cached_array(fs, shape, decode, settings, key, skip=spec.skip_corrupt)
        if c.skipped:
            notes.append(f"{key}: skipped {len(c.skipped)} of {len(fs)} unreadable files (first: {c.skipped[0]})")
        return torch.from_numpy(c.array), ys[torch.from_numpy(c.kept)], c.kept

    x, ys, kept = load([files[i] for i in order], y[order], what)
    # the kept rows stay in order, so each split is still one slice
    ends = np.searchsorted(kept, np.cumsum(sizes))
    parts = [(x[a:b], ys[a:b]) for a, b in zip([0, *ends[:-1]], ends)]
    train, val, held = parts
    if test is not None:
        unknown = sorted(set(test[1]) - set(names))
        if unknown:
            raise DltricksError(f"data.test_root has class folder(s) {', '.join(map(repr, unknown))} that "
                                f"{what} does not; classes: {', '.join(names)}")
        tx, ty, _ = load(test[0], torch.tensor([index[n] for n in test[1]], dtype=torch.long), "data.test_root")
        held = (tx, ty)
    for part, n in (("training", len(train[1])), ("test", len(held[1]))):
        if n == 0:
            raise DltricksError(f"{what}: no {part} samples are left (after skipping unreadable files)")
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    return DataBundle(train=train, test=held, val=val if len(val[1]) else None, num_classes=len(names),
                      class_names=names)
