"""One process at a time on this machine: an exclusive lock on a file (``fcntl.flock``), held for a block.

Workers that need the same expensive thing at once (a ``recipe:NAME`` run to train, a folder of images to
decode) take it: one does the work, the others wait and then reuse what it made. Bottom layer: it imports
nothing of dltricks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["exclusive"]


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created, with its folder) for the block. Without POSIX locks
    (Windows) the block runs unlocked: at worst two processes do the same work, each writing by rename."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
