"""Files replaced atomically: a reader (a browser refreshing a study's report) sees the old file or the
new one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def atomic_write(path: Path, text: str) -> None:
    """Write next to the target, then rename over it: readers see the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_figure(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure as PNG beside the target, then rename over it (as :func:`atomic_write`)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path
