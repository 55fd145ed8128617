"""Where the ledger lives: an engine for its URL (an SQLite file in WAL mode, or PostgreSQL), the driver's
errors in one line, and columns added to the runs table of an older ledger."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Engine, create_engine, event, exc
from sqlalchemy import text as sql_text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import NullPool, StaticPool
from sqlalchemy.schema import CreateColumn

from dltricks.errors import DltricksError

__all__ = ["BUSY_TIMEOUT_S", "VALID_URLS", "add_column", "bad_url", "is_busy", "make_engine", "reason"]

VALID_URLS = "sqlite:///path/to/ledger.db, postgresql://user@host:port/db"
BUSY_TIMEOUT_S = 30.0  # each SQLite statement waits this long for a lock


def reason(e: BaseException) -> str:
    """The driver's message, first line only."""
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def is_busy(e: exc.DBAPIError) -> bool:
    text = reason(e).lower()
    return any(s in text for s in ("database is locked", "database is busy", "deadlock detected",
                                    "could not serialize"))


def bad_url(url: str) -> DltricksError:
    return DltricksError(f"bad ledger URL {url!r}; valid forms: {VALID_URLS}")


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        # WAL lets readers and one writer work at once; it persists in the file, so this is a
        # no-op after the first connection. NORMAL sync is safe in WAL (a power cut may lose the
        # last commits, never corrupt the file).
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
    finally:
        cur.close()


def add_column(conn: Connection, column: Column) -> None:
    """``ALTER TABLE runs ADD COLUMN``: idempotent, for two processes that open an older ledger at once."""
    spec = CreateColumn(column).compile(dialect=conn.dialect)
    if conn.dialect.name == "postgresql":
        conn.execute(sql_text(f"ALTER TABLE runs ADD COLUMN IF NOT EXISTS {spec}"))
        return
    try:
        conn.execute(sql_text(f"ALTER TABLE runs ADD COLUMN {spec}"))
    except exc.OperationalError as e:
        if "duplicate column" not in str(e):  # another process added it first
            raise


def make_engine(url: str) -> tuple[Engine, str]:
    """An engine for ``url`` and a password-free description of where the ledger is."""
    text = url.strip()
    if text.startswith("postgres://"):  # the spelling Heroku and others hand out
        text = "postgresql://" + text[len("postgres://"):]
    try:
        u: URL = make_url(text)
        backend = u.get_backend_name()
    except (exc.ArgumentError, ValueError):
        raise bad_url(url) from None
    serializer = functools.partial(json.dumps, default=str)

    if backend == "sqlite":
        if u.database in (None, "", ":memory:"):
            # One shared connection, or every checkout would see a different empty database.
            engine = create_engine(u, poolclass=StaticPool, json_serializer=serializer,
                                   connect_args={"check_same_thread": False})
            return engine, "in-memory SQLite"
        path = Path(u.database).expanduser().resolve()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DltricksError(f"cannot create the ledger folder {path.parent}: {e.strerror}") from None
        if path.is_dir():
            raise DltricksError(f"ledger path {path} is a folder; give a file, e.g. sqlite:///{path}/ledger.db")
        # NullPool: a connection per operation, so a forked worker never shares a parent's socket.
        engine = create_engine(u.set(database=str(path)), poolclass=NullPool, json_serializer=serializer)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine, str(path)

    if backend == "postgresql":
        try:
            engine = create_engine(u, pool_pre_ping=True, json_serializer=serializer)
        except (ImportError, exc.NoSuchModuleError) as e:
            raise DltricksError(f"a PostgreSQL ledger needs psycopg: pip install 'dltricks[postgres]' ({e})") from None
        return engine, u.render_as_string(hide_password=True)

    raise bad_url(url)
