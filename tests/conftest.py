"""Shared test fixtures: a throwaway PostgreSQL server and an isolated ledger home.

``postgres_url`` (session): a real PostgreSQL server started for the test session, on
127.0.0.1 and a free port, with trust auth and its data, socket and log in a temp folder.
It fails (never skips) when PostgreSQL is missing: CI must exercise the shared-ledger path.
``fresh_postgres_url`` (function): a new empty database on that server per test.
``ledger_home``: DLTRICKS_HOME in a temp folder, which is also the working directory.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Tests run on 2 shared cores: one thread per process keeps parallel workers from thrashing.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The per-machine cache of timed thread counts (dltricks.loop.threads): the suite's own, not the user's
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="dltricks-test-cache-")
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a dependency; keep conftest usable without it
    pass

PG_USER = "postgres"


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C as a terminal delivers it, however pytest was started: a shell starts a background job (`cmd &`)
    with SIGINT ignored, children inherit that, and the tests that stop a run or a study with SIGINT (and
    check the handler is put back) would then see nothing happen."""
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)


def _pg_bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not candidates:
        return None
    newest = max(candidates, key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit()
                 else 0)
    return Path(newest).parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _PgServer:
    """initdb + pg_ctl in a temp folder. As root, the server runs as the postgres user
    (initdb refuses root) through runuser, and owns its folder."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="dltricks-pg-"))
        self.data, self.log = self.dir / "data", self.dir / "server.log"
        self.port = _free_port()
        self._names = itertools.count()
        if self.as_root:
            shutil.chown(self.dir, user=PG_USER, group=None)
            self.dir.chmod(0o700)

    def _cmd(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir, check=False)

    def _check(self, done: subprocess.CompletedProcess, what: str) -> None:
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            pytest.fail(f"PostgreSQL {what} failed ({done.returncode}): {done.stderr.strip()}\n{log}",
                        pytrace=False)

    def start(self) -> None:
        # --no-sync and fsync=off: a test server holds nothing worth a disk flush.
        self._check(self._cmd("initdb", "-D", str(self.data), "-A", "trust", "-U", PG_USER, "-E", "UTF8",
                              "--locale=C", "--no-sync"), "initdb")
        opts = (f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=60")
        self._check(self._cmd("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "-t", "60",
                              "start"), "start")

    def create_db(self, prefix: str = "dltricks") -> str:
        name = f"{prefix}_{next(self._names)}"
        self._check(self._cmd("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, name),
                    f"createdb {name}")
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._cmd("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def _pg_server() -> Iterator[_PgServer]:
    bindir = _pg_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed (no initdb found); run .ci/postgres.sh", pytrace=False)
    server = _PgServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(_pg_server: _PgServer) -> str:
    """``postgresql://postgres@127.0.0.1:PORT/dbname``: one database shared by the session."""
    return _pg_server.create_db("session")


@pytest.fixture
def fresh_postgres_url(_pg_server: _PgServer) -> str:
    """A new, empty database on the session's server, for tests that need a clean slate."""
    return _pg_server.create_db("test")


@pytest.fixture
def ledger_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DLTRICKS_HOME = a fresh temp folder, also the working directory; DLTRICKS_LEDGER unset."""
    home = tmp_path / "dltricks-home"
    home.mkdir()
    monkeypatch.setenv("DLTRICKS_HOME", str(home))
    monkeypatch.delenv("DLTRICKS_LEDGER", raising=False)
    monkeypatch.chdir(home)
    return home


@pytest.fixture(scope="session")
def shared_data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MNIST-1D cache for the session's method tests: each variant of the data is generated once."""
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture
def home_ledger(ledger_home: Path, shared_data_cache: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh ledger in ``ledger_home``, with the session's shared data cache."""
    from dltricks.ledger import Ledger

    monkeypatch.setenv("DLTRICKS_CACHE", str(shared_data_cache))
    return Ledger()
