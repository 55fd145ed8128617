"""The run ledger: every run, its git version and its results, in SQLite or a shared PostgreSQL.

    ledger = Ledger()                                   # $DLTRICKS_LEDGER, else sqlite:///<root>/ledger.db
    run_id = ledger.start_run(name="mnist1d-cnn", recipe=recipe.to_dict(), seed=0, device="cpu")
    ledger.update(run_id, curves={"val_loss": [0.9, 0.7]})
    ledger.finish(run_id, "completed", metrics={"test_accuracy": 0.91})
    ledger.runs(study="ablate-1")                       # newest first

SQLite serves one machine, including several worker processes writing at once: the file is
in WAL mode, every connection waits on a busy timeout, and a write that still finds the
database locked is retried. (WAL needs a local filesystem; use PostgreSQL across machines.)
PostgreSQL (``postgresql://user@host:port/db``) serves many machines; run ids are random so
they never need to coordinate. Files that belong to a run live under ``root/runs/<id>``.
"""

from __future__ import annotations

import os
import platform
import random
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Self, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    exc,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.schema import CreateIndex, CreateTable

from dltricks.errors import DltricksError, one_of
from dltricks.ledger.database import add_column, is_busy, make_engine, reason
from dltricks.ledger.gitinfo import git_state, keep_out_of_git
from dltricks.ledger.record import (
    STATUSES,
    RunRecord,
    as_curves,
    as_metrics,
    encode_json,
    is_run_id,
    new_run_id,
    utc,
)

__all__ = ["UPDATABLE", "Ledger", "RunExistsError"]

UPDATABLE = ("status", "metrics", "curves", "checkpoint", "failure", "finished", "device")
# Columns newer than the first ledgers: a ledger without them gets them when opened.
ADDED_COLUMNS = ("active_s", "attempt_started")
# How long a write keeps retrying a locked SQLite database (on top of each try's busy timeout).
LOCK_WAIT_S = 120.0

T = TypeVar("T")


class RunExistsError(DltricksError):
    """start_run(run_id=...) named an id the ledger already holds (another worker claimed it)."""


metadata_obj = MetaData()
runs_table = Table(
    "runs",
    metadata_obj,
    Column("id", String(12), primary_key=True),
    Column("name", String, nullable=False),
    Column("status", String(16), nullable=False),
    Column("recipe", JSON, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("git_commit", String(64)),
    Column("git_dirty", Boolean, nullable=False),
    Column("git_diff_hash", String(64)),
    Column("versions", JSON, nullable=False),
    Column("device", String, nullable=False),
    Column("host", String, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started", DateTime(timezone=True), nullable=False),
    Column("finished", DateTime(timezone=True)),
    Column("metrics", JSON, nullable=False),
    Column("curves", JSON, nullable=False),
    Column("checkpoint", Text),
    Column("failure", Text),
    Column("study", String),
    Column("variant", String),
    # Seconds of the attempts that have ended, and when the current attempt began: the run's duration
    # leaves out the idle time between an interrupt and its resume. Added to older ledgers on open.
    Column("active_s", Float),
    Column("attempt_started", DateTime(timezone=True)),
    Index("ix_runs_started", "started"),
    Index("ix_runs_study", "study"),
)


def _now() -> datetime:
    return datetime.now(UTC)


def versions() -> dict[str, str]:
    """Versions that change results: dltricks, torch, python (and CUDA when torch is loaded)."""
    from dltricks import __version__

    out = {"dltricks": __version__, "python": platform.python_version()}
    torch = sys.modules.get("torch")  # never import torch just to read its version
    if torch is not None and getattr(torch, "__version__", None):
        out["torch"] = str(torch.__version__)
        if getattr(getattr(torch, "version", None), "cuda", None):
            out["cuda"] = str(torch.version.cuda)
    else:
        try:
            out["torch"] = metadata.version("torch")
        except metadata.PackageNotFoundError:
            pass
    return out


class Ledger:
    """Every run, its git version and results. See the module docstring."""

    root: Path
    url: str

    def __init__(self, url: str | None = None, root: str | Path | None = None):
        home = root if root is not None else (os.environ.get("DLTRICKS_HOME") or "dltricks-runs")
        # Absolute, so a later chdir (a worker, a notebook) still finds the same files.
        self.root = Path(home).expanduser().resolve()
        self.url = url or os.environ.get("DLTRICKS_LEDGER") or f"sqlite:///{self.root / 'ledger.db'}"
        self._engine, self.where = make_engine(self.url)
        self._pid = os.getpid()
        self._ensure_schema()
        keep_out_of_git(self.root)  # if it exists: a ledger elsewhere does not create this folder

    def __repr__(self) -> str:
        return f"Ledger({self.where!r}, root={str(self.root)!r})"

    @staticmethod
    def missing(url: str | None = None, root: str | Path | None = None) -> Path | None:
        """The SQLite file a :class:`Ledger` with these arguments would create, if it does not exist yet
        (so that reading an empty folder creates nothing); None when it exists or the ledger is not a file."""
        home = root if root is not None else (os.environ.get("DLTRICKS_HOME") or "dltricks-runs")
        url = url or os.environ.get("DLTRICKS_LEDGER") or f"sqlite:///{Path(home).expanduser().resolve() / 'ledger.db'}"
        try:
            u = make_url(url.strip())
        except (exc.ArgumentError, ValueError):
            return None  # Ledger() says what is wrong with it
        if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:"):
            return None
        path = Path(u.database).expanduser().resolve()
        return None if path.exists() else path

    def close(self) -> None:
        """Release pooled connections (the ledger reconnects if used again)."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- plumbing --------------------------------------------------------------------

    def _error(self, e: exc.DBAPIError) -> DltricksError:
        why = reason(e)
        if "file is not a database" in why or "malformed" in why:
            return DltricksError(
                f"ledger file {self.where} is not an SQLite database or is corrupt ({why}); "
                "move it away or set DLTRICKS_LEDGER to another file")
        return DltricksError(f"ledger {self.where}: {why}")

    def _tx(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction, retrying while another process holds the lock."""
        if os.getpid() != self._pid:
            # A forked child must not reuse the parent's pooled connections (SQLAlchemy's advice).
            self._engine.dispose(close=False)
            self._pid = os.getpid()
        delay, deadline = 0.02, time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                with self._engine.begin() as conn:
                    return fn(conn)
            except exc.IntegrityError:
                raise  # a real conflict (duplicate id): the caller decides
            except (exc.OperationalError, exc.DatabaseError) as e:
                if isinstance(e, exc.ProgrammingError):
                    raise
                if is_busy(e) and time.monotonic() < deadline:
                    time.sleep(delay * (0.5 + random.random()))  # jitter: workers must not retry in step
                    delay = min(delay * 2, 1.0)
                    continue
                raise self._error(e) from None

    def transaction(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in one transaction on the ledger's database, retried while it is locked.
        Sweeps keep their claim table here, beside the runs."""
        return self._tx(fn)

    def _ensure_schema(self) -> None:
        def create(conn: Connection) -> None:
            conn.execute(CreateTable(runs_table, if_not_exists=True))
            have = {c["name"] for c in inspect(conn).get_columns("runs")}
            missing = [c.name for c in runs_table.c if c.name not in have and c.name not in ADDED_COLUMNS]
            if missing:
                raise DltricksError(
                    f"{self.where} has a 'runs' table that is not a dltricks ledger (no column "
                    f"{', '.join(missing[:3])}); set DLTRICKS_LEDGER to another database")
            for name in ADDED_COLUMNS:
                if name not in have:
                    add_column(conn, runs_table.c[name])
            for ix in runs_table.indexes:
                conn.execute(CreateIndex(ix, if_not_exists=True))

        for attempt in range(3):
            try:
                return self._tx(create)
            except (exc.IntegrityError, exc.ProgrammingError):
                # Two processes creating the table at once on PostgreSQL: the loser sees a
                # duplicate catalog entry. The table exists now; try again.
                if attempt == 2:
                    raise

    def _resolve(self, run_id: str) -> str:
        return self.get(run_id).id if not is_run_id(run_id) else self._resolve_full(run_id)

    def _resolve_full(self, run_id: str) -> str:
        found = self._tx(lambda c: c.execute(select(runs_table.c.id).where(runs_table.c.id == run_id)).first())
        if found is None:
            raise DltricksError(f"no run {run_id!r} in the ledger {self.where}")
        return run_id

    # --- writing ---------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        """``root/runs/<id>``, created: where a run's checkpoint, diff and artefacts go."""
        if not is_run_id(run_id):
            raise DltricksError(f"bad run id {run_id!r}; a run id is 12 lowercase hex characters")
        path = self.root / "runs" / run_id
        path.mkdir(parents=True, exist_ok=True)
        keep_out_of_git(self.root)
        return path

    def start_run(self, *, name: str, recipe: Mapping[str, Any], seed: int, device: str,
                  study: str | None = None, variant: str | None = None, cwd: str | Path | None = None,
                  run_id: str | None = None) -> str:
        """Record a new run as "running", with the git state of ``cwd``; return its id.

        If the tree is dirty, the uncommitted changes are saved to ``run_dir(id)/uncommitted.diff``.
        Passing ``run_id`` claims that id: :class:`RunExistsError` if another process has it.
        """
        if run_id is not None and not is_run_id(run_id):
            raise DltricksError(f"bad run id {run_id!r}; a run id is 12 lowercase hex characters")
        if hasattr(recipe, "to_dict"):  # a Recipe object
            recipe = recipe.to_dict()
        git = git_state(cwd, exclude=(self.root,))  # the ledger's own files are not the user's code
        row = {
            "name": str(name), "status": "running", "recipe": encode_json(dict(recipe)), "seed": int(seed),
            "git_commit": git.commit, "git_dirty": git.dirty, "git_diff_hash": git.diff_hash,
            "versions": versions(), "device": str(device), "host": socket.gethostname(),
            "pid": os.getpid(), "started": _now(), "finished": None, "metrics": {}, "curves": {},
            "checkpoint": None, "failure": None, "study": study, "variant": variant,
        }
        row.update(active_s=0.0, attempt_started=row["started"])
        for _ in range(5):
            rid = run_id or new_run_id()
            try:
                self._tx(lambda c, rid=rid: c.execute(insert(runs_table).values(id=rid, **row)))
                break
            except exc.IntegrityError:
                if run_id is not None:
                    raise RunExistsError(f"run {run_id} already exists in the ledger {self.where}") from None
                # else: 48 random bits collided; draw again
        else:  # pragma: no cover - would need five 2^-48 events in a row
            raise DltricksError(f"could not allocate a run id in {self.where}")
        if git.dirty and git.diff:
            # Bytes exactly as git printed them (surrogateescape keeps non-UTF-8 content intact).
            (self.run_dir(rid) / "uncommitted.diff").write_bytes(git.diff.encode("utf-8", "surrogateescape"))
        return rid

    def update(self, run_id: str, **fields: Any) -> None:
        """Set fields of a run: any of status, metrics, curves, checkpoint, failure, finished, device.

        ``metrics`` and ``curves`` replace what was stored (pass the whole dict).
        """
        unknown = sorted(set(fields) - set(UPDATABLE))
        if unknown:
            raise DltricksError(f"cannot update run field {unknown[0]!r}; updatable: {one_of(UPDATABLE)}")
        values: dict[str, Any] = {}
        for key, value in fields.items():
            if key == "status":
                if value not in STATUSES:
                    raise DltricksError(f"bad run status {value!r}; valid: {one_of(STATUSES)}")
                values[key] = value
            elif key == "metrics":
                values[key] = encode_json(as_metrics(value))
            elif key == "curves":
                values[key] = encode_json(as_curves(value))
            elif key == "finished":
                values[key] = utc(value)
            elif key in ("checkpoint", "failure"):
                values[key] = None if value is None else str(value)
            else:
                values[key] = str(value)
        full = self._resolve(run_id)
        if "status" in values:
            self._tx(lambda c: c.execute(update(runs_table).where(runs_table.c.id == full)
                                         .values(**values, **_attempt_times(c, full, values))))
        elif values:
            self._tx(lambda c: c.execute(update(runs_table).where(runs_table.c.id == full).values(**values)))

    def finish(self, run_id: str, status: str, *, metrics: dict | None = None, curves: dict | None = None,
               failure: str | None = None, checkpoint: str | None = None) -> None:
        """Close a run: set its status and finish time, and whichever results are given."""
        fields: dict[str, Any] = {"status": status, "finished": _now()}
        for key, value in (("metrics", metrics), ("curves", curves), ("failure", failure),
                           ("checkpoint", checkpoint)):
            if value is not None:
                fields[key] = value
        self.update(run_id, **fields)

    def delete(self, run_id: str, *, files: bool = True) -> None:
        """Remove a run from the ledger and, unless ``files=False``, its folder."""
        full = self._resolve(run_id)
        self._tx(lambda c: c.execute(delete(runs_table).where(runs_table.c.id == full)))
        if files:
            shutil.rmtree(self.root / "runs" / full, ignore_errors=True)

    # --- reading ---------------------------------------------------------------------

    def get(self, run_id: str) -> RunRecord:
        """The run with this id or unique id prefix."""
        key = str(run_id).strip().lower()
        if not re.fullmatch(r"[0-9a-f]{1,12}", key):
            raise DltricksError(f"no run {run_id!r}: a run id is 12 hex characters (or a unique prefix of one)")
        query = select(runs_table).where(runs_table.c.id.startswith(key)).order_by(runs_table.c.id).limit(6)
        rows = self._tx(lambda c: c.execute(query).all())
        if not rows:
            raise DltricksError(f"no run {run_id!r} in the ledger {self.where}")
        if len(rows) > 1:
            ids = ", ".join(r.id for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise DltricksError(f"run id prefix {run_id!r} is ambiguous: it matches {ids}; give more characters")
        return _record(rows[0])

    def runs(self, *, study: str | None = None, status: str | None = None, name: str | None = None,
             limit: int | None = None) -> list[RunRecord]:
        """Runs matching every filter given, newest first."""
        if status is not None and status not in STATUSES:
            raise DltricksError(f"bad run status {status!r}; valid: {one_of(STATUSES)}")
        query = select(runs_table).order_by(runs_table.c.started.desc(), runs_table.c.id.desc())
        for column, value in (("study", study), ("status", status), ("name", name)):
            if value is not None:
                query = query.where(runs_table.c[column] == value)
        if limit is not None:
            query = query.limit(int(limit))
        return [_record(r) for r in self._tx(lambda c: c.execute(query).all())]


def _attempt_times(conn: Connection, run_id: str, values: dict[str, Any]) -> dict[str, Any]:
    """The run's active time on a change of status: a run that stops running adds the attempt that ends
    (up to ``finished`` when given); a run that starts running again (a resume) begins a new attempt."""
    row = conn.execute(select(runs_table.c.status, runs_table.c.active_s, runs_table.c.attempt_started)
                       .where(runs_table.c.id == run_id)).one()
    now = values.get("finished") or _now()
    if values["status"] == "running":
        return {} if row.status == "running" and row.attempt_started else {"attempt_started": now}
    if row.status != "running" or row.attempt_started is None:
        return {}
    if row.active_s is None:  # a run from before attempts were timed: its duration stays finished - started
        return {"attempt_started": None}
    ended = max(0.0, (now - utc(row.attempt_started)).total_seconds())
    return {"active_s": row.active_s + ended, "attempt_started": None}


def _record(row: Any) -> RunRecord:
    return RunRecord(
        id=row.id, name=row.name, status=row.status, recipe=dict(row.recipe or {}), seed=row.seed,
        git_commit=row.git_commit, git_dirty=bool(row.git_dirty), git_diff_hash=row.git_diff_hash,
        versions=dict(row.versions or {}), device=row.device, host=row.host, pid=row.pid,
        started=utc(row.started), finished=utc(row.finished), metrics=as_metrics(row.metrics),
        curves=as_curves(row.curves), checkpoint=row.checkpoint, failure=row.failure,
        study=row.study, variant=row.variant, active_s=row.active_s,
    )
