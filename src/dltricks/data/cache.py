"""Decoded-once arrays of the user's files (images, sounds), memory-mapped by every epoch and every run.

Decoding a folder of PNGs costs far more than training a small model on it, and an ablation runs the same
recipe many times in several processes. So the files are decoded once, by a pool of processes, into one
``.npy`` array (float32, one row per file, in the order given) in the cache folder: ``DLTRICKS_CACHE``, else
``cache/`` in the ledger's home (``DLTRICKS_HOME``, default ``dltricks-runs``). Its name is a hash of the
files' paths, sizes and modification times and of the decoding settings, so an edited, added or removed
file makes a new array. Later loads memory-map it (``np.load(mmap_mode="c")``: pages shared between
processes, copy-on-write so that nothing can change the file); nothing is ever pickled.

A file that cannot be decoded is one line naming it, or, with ``skip`` set, left out and counted.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dltricks.cores import allowed_cores
from dltricks.errors import DltricksError
from dltricks.locks import exclusive

__all__ = ["Cached", "cache_dir", "cached_array"]

# fewer files than this decode in this process: starting a pool would cost more than it saves
_POOL_MIN = 256
# a decoder returns the row, or raises this with the reason the file is unusable
Decoder = Callable[..., np.ndarray]


class Unreadable(Exception):
    """A file the decoder cannot use; its message says why (corrupt, truncated, wrong rate ...)."""


@dataclass
class Cached:
    """The memory-mapped rows (N_kept, *shape) float32, which input positions they are, the files skipped."""

    array: np.ndarray
    kept: np.ndarray        # (N_kept,) int64 positions into the file list
    skipped: list[str]      # "name: reason" of each file left out
    path: Path


def cache_dir() -> Path:
    """DLTRICKS_CACHE, else ``cache`` in the ledger's home."""
    env = os.environ.get("DLTRICKS_CACHE")
    root = Path(env) if env else Path(os.environ.get("DLTRICKS_HOME") or "dltricks-runs") / "cache"
    return root.expanduser().resolve()


def _key(files: list[Path], settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for f in files:
        name = os.path.abspath(f)  # no per-file resolve: a stat each is all the key needs
        st = os.stat(name)
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _decode_rows(args: tuple) -> list[tuple[int, str]]:
    """Decode files[i] for i in ``idx`` straight into the array at ``out`` (a pool worker); the failures."""
    out, files, idx, decode, settings = args
    arr = np.load(out, mmap_mode="r+")
    bad = []
    for i in idx:
        try:
            arr[i] = decode(files[i], **settings)
        except Unreadable as e:
            bad.append((i, str(e)))
    arr.flush()
    return bad


def _build(files: list[Path], shape: tuple[int, ...], decode: Decoder, settings: dict, out: Path) -> list:
    arr = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(len(files), *shape))
    del arr  # the workers open it themselves
    names = [str(f) for f in files]
    workers = min(allowed_cores(), max(1, len(files) // 64))
    if len(files) < _POOL_MIN or workers == 1:
        return _decode_rows((out, names, range(len(files)), decode, settings))
    chunks = [range(s, min(s + 256, len(files))) for s in range(0, len(files), 256)]
    # fork: the children need only numpy and the decoder, which this process already imported
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        parts = pool.map(_decode_rows, [(out, names, c, decode, settings) for c in chunks])
        return [b for part in parts for b in part]


def cached_array(files: list[Path], shape: tuple[int, ...], decode: Decoder, settings: dict,
                 what: str, skip: bool = False) -> Cached:
    """The rows ``decode(file, **settings)`` of ``files`` (each of ``shape``), decoded once and memory-mapped.

    ``decode`` must be a module-level function (it runs in pool workers). A file it refuses is one line
    naming it (``what`` says which key it came from), unless ``skip`` leaves it out."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DltricksError(f"cannot create the cache folder {folder} ({e.strerror}); set DLTRICKS_CACHE "
                            "to a writable folder") from None
    key = _key(files, {**settings, "shape": list(shape), "decoder": f"{decode.__module__}.{decode.__name__}"})
    path, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    with exclusive(folder / f"{key}.lock"):
        if not (path.exists() and meta_path.exists()):
            tmp = folder / f"{key}.{os.getpid()}.tmp.npy"
            try:
                bad = sorted(_build(files, shape, decode, settings, tmp))
                if bad and not skip:
                    i, why = bad[0]
                    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
                    raise DltricksError(f"{what}: {files[i]}: {why}{more}; fix or remove it, or set "
                                        "data.skip_corrupt = true to leave such files out")
                if len(bad) == len(files):
                    raise DltricksError(f"{what}: none of the {len(files)} files could be read (first: "
                                        f"{files[bad[0][0]]}: {bad[0][1]})")
                kept = np.setdiff1d(np.arange(len(files)), [i for i, _ in bad])
                if bad:  # compact once, at creation: every later load maps the rows it uses
                    full = np.load(tmp, mmap_mode="r")
                    np.save(tmp.with_suffix(".kept.npy"), full[kept])
                    del full
                    os.replace(tmp.with_suffix(".kept.npy"), tmp)
                meta = {"kept": kept.tolist(), "skipped": [f"{files[i].name}: {why}" for i, why in bad]}
                meta_path.with_suffix(".json.tmp").write_text(json.dumps(meta))
                os.replace(tmp, path)
                os.replace(meta_path.with_suffix(".json.tmp"), meta_path)
            finally:
                tmp.unlink(missing_ok=True)
                tmp.with_suffix(".kept.npy").unlink(missing_ok=True)
    meta = json.loads(meta_path.read_text())
    if meta["skipped"] and not skip:  # decoded earlier with skip_corrupt on: the same files are still bad
        raise DltricksError(f"{what}: {meta['skipped'][0]}" + (f" (and {len(meta['skipped']) - 1} more)"
                            if len(meta["skipped"]) > 1 else "") + "; fix or remove it, or set "
                            "data.skip_corrupt = true to leave such files out")
    # copy-on-write: a tensor made from it may be written in place without touching the file
    arr = np.load(path, mmap_mode="c")
    return Cached(arr, np.asarray(meta["kept"], dtype=np.int64), list(meta["skipped"]), path)
