"""One run as the ledger keeps it: what ran (recipe, seed, code version), where, and what came out."""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dltricks.errors import DltricksError

__all__ = ["STATUSES", "RunRecord", "is_run_id", "new_run_id"]

STATUSES = ("running", "completed", "failed", "interrupted")

_RUN_ID = re.compile(r"[0-9a-f]{12}")


def new_run_id() -> str:
    """12 random lowercase hex characters (48 bits).

    Random rather than time- or host-based so that machines sharing one server never need
    to coordinate; a clash is caught by the primary key and retried.
    """
    return secrets.token_hex(6)


def is_run_id(text: str) -> bool:
    return _RUN_ID.fullmatch(text) is not None


@dataclass
class RunRecord:
    """A row of the ledger. Times are timezone-aware UTC."""

    id: str
    name: str
    status: str
    recipe: dict[str, Any]
    seed: int
    git_commit: str | None
    git_dirty: bool
    git_diff_hash: str | None
    versions: dict[str, str]
    device: str
    host: str
    pid: int
    started: datetime
    finished: datetime | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    checkpoint: str | None = None
    failure: str | None = None
    study: str | None = None
    variant: str | None = None
    active_s: float | None = None  # seconds of its attempts that have ended (None in ledgers before them)

    @property
    def duration(self) -> timedelta | None:
        """The time the run was active, its attempts summed: an interrupted run's idle time before its
        resume is not in it. None while it runs; finished - started in ledgers that did not time attempts."""
        if self.status == "running":
            return None
        if self.active_s is not None:
            return timedelta(seconds=self.active_s)
        return None if self.finished is None else self.finished - self.started

    @property
    def git_short(self) -> str:
        """``abc1234`` (``*`` appended when the tree was dirty); ``-`` when not under git."""
        base = self.git_commit[:7] if self.git_commit else "-"
        return base + ("*" if self.git_dirty else "")


# --- JSON storage helpers -------------------------------------------------------------
# PostgreSQL's json type rejects NaN and Infinity, yet a diverged run has exactly those in
# its loss. Non-finite floats are stored as the strings "nan", "inf", "-inf" and turned
# back into floats where the schema says float (metrics and curves).


def encode_json(value: Any) -> Any:
    """``value`` with non-finite floats replaced by their string names, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # 'nan', 'inf', '-inf'
    if isinstance(value, dict):
        return {str(k): encode_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode_json(v) for v in value]
    return value


def as_metrics(metrics: Any, what: str = "metrics") -> dict[str, float]:
    """``{name: float}``; numpy and 0-d torch scalars are accepted (anything ``float()`` takes)."""
    out: dict[str, float] = {}
    for k, v in dict(metrics or {}).items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise DltricksError(f"{what}[{k!r}] = {v!r} is not a number; metrics must be floats") from None
    return out


def as_curves(curves: Any) -> dict[str, list[float]]:
    """``{name: [float, ...]}``."""
    out: dict[str, list[float]] = {}
    for k, values in dict(curves or {}).items():
        out[str(k)] = list(as_metrics(dict(enumerate(values)), f"curves[{k!r}]").values())
    return out


def utc(t: datetime | None) -> datetime | None:
    """An aware UTC datetime (SQLite hands back naive ones, which the ledger wrote in UTC)."""
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
