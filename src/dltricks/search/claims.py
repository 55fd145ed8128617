"""Claims: which worker runs which cell (variant x seed) of a study, so that no cell runs twice.

Optuna's own ways of handing out work can give one point to two workers (GridSampler, or enqueued
trials popped concurrently on SQLite). Here a claim is a row with a primary key
(study, cell, attempt): inserting it is atomic on SQLite and PostgreSQL alike, so of two workers
that race for the same cell exactly one wins. A claim whose worker died (its pid is gone on this
host, or its heartbeat stopped) can be taken over by inserting the next attempt, which again only
one worker can do.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, exc, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.schema import CreateTable

from dltricks.ledger import Ledger

HEARTBEAT_S = 5.0
STALE_S = 90.0       # no heartbeat for this long: the worker is gone (another machine, say)
MAX_ATTEMPTS = 3     # a cell whose worker died this often is given up as failed
T = TypeVar("T")

_md = MetaData()
claims = Table(
    "dltricks_claims", _md,
    Column("study", String(200), primary_key=True),
    Column("cell", String(64), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("run_id", String(12)),
    Column("heartbeat", Float),
    Column("state", String(16)),  # running | done | released
)

HOST = socket.gethostname()


@dataclass(frozen=True)
class Claim:
    study: str
    cell: str
    attempt: int
    gave_up: bool = False  # the cell's workers died MAX_ATTEMPTS times: record it failed, do not train it


def ensure_table(ledger: Ledger) -> None:
    for _ in range(3):
        try:
            return ledger.transaction(lambda c: c.execute(CreateTable(claims, if_not_exists=True)))
        except (exc.IntegrityError, exc.ProgrammingError):
            continue  # two processes creating it at once on PostgreSQL; it exists now


def _alive(row) -> bool:
    if row.state != "running":
        return False
    if row.host == HOST:
        if row.pid == os.getpid():
            return True
        try:
            os.kill(row.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not _zombie(row.pid)
    return time.time() - (row.heartbeat or 0) < STALE_S


def _zombie(pid: int) -> bool:
    """A killed worker whose parent died too waits, as a zombie, for a reaper that may never come; it
    answers signal 0 like a live one, but will never finish its cell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (not Linux), or gone meanwhile: signal 0 had the last word
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _latest(conn: Connection, study: str, cell: str):
    return conn.execute(select(claims).where(claims.c.study == study, claims.c.cell == cell)
                        .order_by(claims.c.attempt.desc()).limit(1)).first()


def try_claim(ledger: Ledger, study: str, cell: str, run_id: str) -> Claim | None:
    """Claim ``cell``: a :class:`Claim`, or None if it is done or held by a live worker.

    A claim with ``gave_up`` set means the cell's workers died :data:`MAX_ATTEMPTS` times: the
    holder records the cell as failed instead of training it. Giving up is a claim like any other
    (one more attempt row), so of several workers that find the cell given up only one records it,
    and if that worker dies too the next one takes it over."""

    def tx(conn: Connection) -> Claim | None:
        row = _latest(conn, study, cell)
        if row is not None and (row.state == "done" or _alive(row)):
            return None
        attempt = 0 if row is None else row.attempt + 1
        dead = sum(1 for r in conn.execute(select(claims.c.state).where(
            claims.c.study == study, claims.c.cell == cell)) if r.state == "running") if row is not None else 0
        conn.execute(insert(claims).values(study=study, cell=cell, attempt=attempt, host=HOST,
                                           pid=os.getpid(), run_id=run_id, heartbeat=time.time(),
                                           state="running"))
        return Claim(study, cell, attempt, gave_up=dead >= MAX_ATTEMPTS)

    try:
        return ledger.transaction(tx)
    except exc.IntegrityError:
        return None  # another worker inserted the same attempt first


def still_mine(ledger: Ledger, c: Claim) -> bool:
    """True while no other worker has taken the cell over (it would have a higher attempt)."""
    def tx(conn: Connection) -> bool:
        top = conn.execute(select(func.max(claims.c.attempt)).where(
            claims.c.study == c.study, claims.c.cell == c.cell)).scalar()
        return top == c.attempt
    return ledger.transaction(tx)


def set_state(ledger: Ledger, c: Claim, state: str) -> None:
    ledger.transaction(lambda conn: conn.execute(
        update(claims).where(claims.c.study == c.study, claims.c.cell == c.cell, claims.c.attempt == c.attempt)
        .values(state=state, heartbeat=time.time())))


def running(ledger: Ledger, study: str) -> list[tuple[str, str]]:
    """(cell, run_id) of the claims whose workers are alive right now."""
    rows = ledger.transaction(lambda conn: conn.execute(
        select(claims).where(claims.c.study == study, claims.c.state == "running")).all())
    return [(r.cell, r.run_id) for r in rows if _alive(r)]


def stale_runs(ledger: Ledger, study: str) -> list[str]:
    """Ledger run ids of claims whose worker died mid-run (to mark those runs failed)."""
    rows = ledger.transaction(lambda conn: conn.execute(
        select(claims).where(claims.c.study == study, claims.c.state == "running")).all())
    return [r.run_id for r in rows if not _alive(r)]


class Heartbeat:
    """Touches the claim every few seconds from a daemon thread while the cell trains."""

    def __init__(self, ledger: Ledger, c: Claim):
        self.ledger, self.c = ledger, c
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.ledger.transaction(lambda conn: conn.execute(
                    update(claims).where(claims.c.study == self.c.study, claims.c.cell == self.c.cell,
                                         claims.c.attempt == self.c.attempt, claims.c.state == "running")
                    .values(heartbeat=time.time())))
            except Exception:  # a missed beat is not fatal; STALE_S allows many
                pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def set_run_id(ledger: Ledger, c: Claim, run_id: str) -> None:
    """Point the claim at the run it trains now: a tuning trial trains one run per seed, and a worker
    that dies mid-trial leaves the run of the seed it was on to be marked failed."""
    ledger.transaction(lambda conn: conn.execute(
        update(claims).where(claims.c.study == c.study, claims.c.cell == c.cell, claims.c.attempt == c.attempt)
        .values(run_id=run_id, heartbeat=time.time())))


# ---- the claiming loop every worker runs -----------------------------------------------------------

def mark_dead(ledger: Ledger, run_id: str | None) -> None:
    """Mark the run of a dead worker's claim failed (it stays 'running' in the ledger otherwise)."""
    from dltricks.errors import DltricksError

    if not run_id:
        return
    try:
        if ledger.get(run_id).status == "running":
            ledger.finish(run_id, "failed", failure="its worker process died (killed or crashed)")
    except DltricksError:
        pass  # the worker died before it recorded the run


def claim_each(ledger: Ledger, study: str, cells: Iterable[tuple[str, T]],
               done: Callable[[], set[str]]) -> Iterator[tuple[T, Claim, str]]:
    """Claim, in order, each cell that is not done and not held by a live worker; yield ``(item, claim,
    run_id)`` for the caller to run inside :func:`settle`.

    ``done()`` reads the finished cells; it is read once, and again only after a won claim: a done cell
    has a "done" claim, so :func:`try_claim` already refuses it, and the re-read catches a cell whose
    worker recorded its result and died before marking the claim done. (Reading every result for every
    cell made a worker's bookkeeping grow with the square of the study's size.)"""
    from dltricks.ledger.record import new_run_id

    finished = done()
    for cell, item in cells:
        if cell in finished:
            continue
        run_id = new_run_id()
        claim = try_claim(ledger, study, cell, run_id)
        if claim is None:
            continue
        finished = done()
        if cell in finished:  # finished just before our claim
            set_state(ledger, claim, "done")
            continue
        for dead in stale_runs(ledger, study):
            mark_dead(ledger, dead)
        yield item, claim, run_id


@contextmanager
def settle(ledger: Ledger, claim: Claim) -> Iterator[None]:
    """Run a claimed cell: marked done when the block ends, released at once when it raises (Ctrl-C, a
    lost database), so that the next worker need not wait for this live process to die."""
    try:
        yield
    except BaseException:
        try:
            set_state(ledger, claim, "released")
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        raise
    set_state(ledger, claim, "done")
