"""Doors out of the ledger: runs already recorded, written where other tools read them.

- :mod:`~dltricks.ledger.export.tensorboard`: event files per run (scalars per epoch, the recipe as text);
- :mod:`~dltricks.ledger.export.mlflow`: MLflow runs (params, per-epoch metrics, git and study tags),
  idempotent on re-export.

Both take :class:`~dltricks.ledger.record.RunRecord` objects, so they need no model and no data; their
libraries are the optional extra ``dltricks[export]``, imported only when an export runs.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from dltricks.errors import DltricksError

__all__ = ["flat_params", "needs", "writable_dir"]


def needs(module: str, package: str) -> ModuleType:
    """Import an optional library, or refuse in one line naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DltricksError(f"this export needs the package {package!r}: pip install 'dltricks[export]' "
                            f"(or pip install {package})") from None


def writable_dir(path: str | Path, what: str) -> Path:
    """``path`` as a folder that exists (created) and can be written, or one line saying why not."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise DltricksError(f"{what} {p} is a file, not a folder; give a folder to write into")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DltricksError(f"cannot create {what} {p}: {e.strerror or e}") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise DltricksError(f"{what} {p} is not writable; give a folder you can write to")
    return p.resolve()


def flat_params(recipe: dict) -> dict[str, str]:
    """The resolved recipe as ``{"train.lr": "0.001", ...}`` (lists as their JSON text)."""
    import json

    from dltricks.ledger.writers import flatten

    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in flatten(recipe).items()}
