"""One command cell's process: started in a process group of its own, watched (a time limit, a pruner's
ticks), stopped as a whole group (Ctrl-C, SIGTERM, timeout), its output kept and its metrics read.

On Linux the kernel also ends a cell's process when its worker dies (kill -9): no orphan keeps training.
Imports no torch.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dltricks.errors import DltricksError
from dltricks.search.command import parse_metrics

TAIL_LINES = 20
GRACE_S = 3.0  # how long a stopped cell's process group has to exit before SIGKILL


@dataclass
class Outcome:
    """What a cell's process did: exit code (None when it was stopped), wall time, timed out or not, the
    last lines of its output and the metrics it reported (or why they could not be read)."""

    exit_code: int | None
    wall_s: float
    timed_out: bool
    stdout_tail: list[str]
    stderr_tail: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    failure: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "wall_s": self.wall_s, "timed_out": self.timed_out,
                "stdout_tail": self.stdout_tail, "stderr_tail": self.stderr_tail, "failure": self.failure}


_PRCTL: list[Any] = []  # libc's prctl, looked up here: the child between fork and exec must not load anything


def _death_signal() -> Callable[[], None] | None:
    """What the cell's child runs before exec: if its worker is killed (kill -9), the kernel ends the cell's
    process too, so no orphan keeps training. None off Linux."""
    if not _PRCTL:
        try:
            import ctypes

            _PRCTL.append(ctypes.CDLL(None, use_errno=True).prctl)
        except (OSError, AttributeError):
            _PRCTL.append(None)
    prctl = _PRCTL[0]
    if prctl is None or not sys.platform.startswith("linux"):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextmanager
def shielded() -> Iterator[None]:
    """Ctrl-C and SIGTERM held off while a stopped cell's process group is being ended: a second Ctrl-C must
    not cut the clean-up short and leave the group running (main thread only; elsewhere a no-op)."""
    try:
        before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-n:]


def stop_group(proc: subprocess.Popen, sig: int, grace: float = GRACE_S) -> None:
    """Send ``sig`` to the cell's whole process group, then SIGKILL whatever is left after ``grace``."""
    for s, wait in ((sig, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, s)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(wait)
            # the leader is gone; children it left in the group get the same signal
            os.killpg(proc.pid, signal.SIGKILL)
        except subprocess.TimeoutExpired:
            continue
        except (ProcessLookupError, PermissionError):
            pass
        return


def _wait(proc: subprocess.Popen, pidfd: int | None, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``proc`` to exit; True once it has."""
    if pidfd is not None:
        select.select([pidfd], [], [], max(0.0, seconds))
        return proc.poll() is not None
    try:
        proc.wait(max(0.0, seconds))
        return True
    except subprocess.TimeoutExpired:
        return False


def run_process(argv: list[str], *, cwd: str, env: dict[str, str], folder: Path, timeout: float | None,
                on_tick: Callable[[], str | None] | None = None, tick_s: float = 0.5) -> Outcome:
    """Run one cell's command, output to ``folder``/stdout.log and stderr.log, metrics read from
    ``folder``/metrics.json (``$DLTRICKS_METRICS``) or the last line of standard output.

    ``on_tick`` is called every ``tick_s`` while it runs; a reason it returns stops the cell (a pruner).
    Ctrl-C (or SIGTERM turned into KeyboardInterrupt) stops the whole group and re-raises."""
    folder.mkdir(parents=True, exist_ok=True)
    out_path, err_path, metrics_path = folder / "stdout.log", folder / "stderr.log", folder / "metrics.json"
    metrics_path.unlink(missing_ok=True)
    env = {**os.environ, **env, "DLTRICKS_METRICS": str(metrics_path)}
    env.pop("DLTRICKS_NO_PROGRESS", None)
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True, preexec_fn=_death_signal())
        except OSError as e:
            return Outcome(None, 0.0, False, [], [], failure=f"could not start {argv[0]!r}: {e.strerror or e}")
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None
    timed_out, stopped = False, None
    try:
        while True:
            left = None if timeout is None else timeout - (time.monotonic() - started)
            step = tick_s if on_tick is not None else (left if left is not None else 3600.0)
            if _wait(proc, pidfd, step if left is None else min(step, left)):
                break
            if left is not None and time.monotonic() - started >= timeout:
                timed_out = True
                stop_group(proc, signal.SIGTERM)
                break
            if on_tick is not None:
                stopped = on_tick()
                if stopped:
                    stop_group(proc, signal.SIGTERM)
                    break
    except BaseException:
        with shielded():
            stop_group(proc, signal.SIGINT)  # as a Ctrl-C in its terminal would: it may save, then it ends
        raise
    finally:
        if pidfd is not None:
            os.close(pidfd)
    wall = time.monotonic() - started
    o = Outcome(None if (timed_out or stopped) else proc.returncode, wall, timed_out, tail(out_path), tail(err_path))
    if stopped:
        o.failure = stopped
        read_metrics(o, metrics_path, out_path, partial=True)
    elif timed_out:
        o.failure = f"timed out after {timeout:g} s (--cell-timeout){_last_lines(o.stderr_tail or o.stdout_tail)}"
    elif proc.returncode != 0:
        how = (f"was killed by signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
               else f"exited with code {proc.returncode}")
        o.failure = f"the command {how}{_last_lines(o.stderr_tail or o.stdout_tail, 'standard error')}"
    else:
        read_metrics(o, metrics_path, out_path)
    return o


def _last_lines(lines: list[str], what: str = "output", n: int = 5) -> str:
    return f"; last lines of its {what}: " + " | ".join(lines[-n:]) if lines else ""


def read_metrics(o: Outcome, metrics_path: Path, out_path: Path, *, partial: bool = False) -> None:
    """Fill ``o.metrics`` and ``o.curves`` from the metrics file or the last line of standard output, or set
    ``o.failure`` saying which of: no metrics, unparsable JSON, a metric that is NaN or infinite."""
    try:
        text = metrics_path.read_text() if metrics_path.is_file() else ""
        source = "$DLTRICKS_METRICS"
        if not text.strip():
            text, source = (o.stdout_tail[-1] if o.stdout_tail else ""), "the last line of standard output"
        if not text.strip():
            raise DltricksError("the command printed no metrics: write a JSON object to $DLTRICKS_METRICS "
                                "(dltricks.report_metrics does) or print one as its last line of output")
        o.metrics, o.curves = parse_metrics(text, source)
    except DltricksError as e:
        if not partial:
            o.failure = str(e)
