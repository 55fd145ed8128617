"""How many cores this process may use, and how many of them other processes keep busy right now.

Free of torch, so that the command line can take its first look at /proc/stat before it imports torch:
the seconds of that import are then the window the next look measures over, and nobody waits for one.
"""

from __future__ import annotations

import os
import time

SAMPLE_S = 0.15     # how long /proc/stat is watched to see how busy the cores are
MIN_WINDOW_S = 0.1  # an earlier look at least this old serves instead (20 jiffies on 2 cores: idle or busy)


def allowed_cores() -> int:
    """Cores this process may run on (its CPU affinity; all cores where the OS cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all cores since boot, from /proc/stat (Linux); None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user time
    return total - idle, total


REUSE_S = 30.0  # a reading of /proc/stat this recent starts the next window: no need to wait again

# (monotonic time, (busy, total) jiffies, this process's CPU seconds) of the last look at /proc/stat
_last_look: tuple[float, tuple[float, float], float] | None = None


def look() -> tuple[float, tuple[float, float], float] | None:
    """Read /proc/stat now and keep the reading as the start of the next :func:`busy_cores` window."""
    global _last_look
    times = _cpu_times()
    if times is None:
        return None
    _last_look = (time.monotonic(), times, time.process_time())
    return _last_look


def _forget_last_look() -> None:
    global _last_look
    _last_look = None


if hasattr(os, "register_at_fork"):  # a forked child's CPU time starts at 0: the parent's look is no base
    os.register_at_fork(after_in_child=_forget_last_look)


def busy_cores(sample_s: float = SAMPLE_S) -> float:
    """How many cores other processes keep busy now: /proc/stat over the window since the last look, if
    that was between MIN_WINDOW_S and REUSE_S seconds ago, less what this process used meanwhile (a
    sweep's worker looks once per cell: waiting each time cost 0.15 s a cell); else over ``sample_s``
    (this process is idle while it waits); else the 1-minute load average."""
    before = _last_look
    a = look()
    if a is not None:
        if before is not None and min(sample_s, MIN_WINDOW_S) <= a[0] - before[0] <= REUSE_S and a[1][1] > before[1][1]:
            share = (a[1][0] - before[1][0]) / (a[1][1] - before[1][1]) * (os.cpu_count() or 1)
            mine = (a[2] - before[2]) / (a[0] - before[0])  # cores this process kept busy meanwhile
            return max(0.0, share - mine)
        time.sleep(sample_s)
        b = look()
        if b is not None and b[1][1] > a[1][1]:
            return (b[1][0] - a[1][0]) / (b[1][1] - a[1][1]) * (os.cpu_count() or 1)
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def free_cores(sample_s: float = SAMPLE_S) -> int:
    """Cores this process may use that nothing else is busy on (at least 1)."""
    allowed = allowed_cores()
    free = (os.cpu_count() or allowed) - busy_cores(sample_s)
    return max(1, min(allowed, int(free + 0.5)))
