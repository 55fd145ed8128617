"""How many CPU threads torch trains with: ``train.threads = "auto"`` or a number.

torch's default (one thread per core) is often not the fastest: a small model spends more on waking and
joining threads than it gains from them, and on a machine where other processes compute, a thread that
waits for a busy core holds up every step. ``"auto"`` times a few training steps of *this* model at 1, 2,
4, ... threads, never more than the cores that are free right now (the process's CPU affinity minus what
other processes keep busy), and keeps the fastest. The measurement is cached per model, input shape, batch
size and host, so a sweep's runs measure once.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import socket
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

SAMPLE_S = 0.15        # how long /proc/stat is watched to see how busy the cores are
STEP_BUDGET_S = 0.15   # timing per candidate thread count (at least 2 steps after a warm-up)


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


def _look() -> tuple[float, tuple[float, float], float] | None:
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
    that was between ``sample_s`` and REUSE_S seconds ago, less what this process used meanwhile (a
    sweep's worker looks once per cell: waiting each time cost 0.15 s a cell); else over ``sample_s``
    (this process is idle while it waits); else the 1-minute load average."""
    before = _last_look
    a = _look()
    if a is not None:
        if before is not None and sample_s <= a[0] - before[0] <= REUSE_S and a[1][1] > before[1][1]:
            share = (a[1][0] - before[1][0]) / (a[1][1] - before[1][1]) * (os.cpu_count() or 1)
            mine = (a[2] - before[2]) / (a[0] - before[0])  # cores this process kept busy meanwhile
            return max(0.0, share - mine)
        time.sleep(sample_s)
        b = _look()
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


def candidates(cap: int) -> list[int]:
    """1, 2, 4, ... up to ``cap``, and ``cap`` itself."""
    out, n = [], 1
    while n < cap:
        out.append(n)
        n *= 2
    return [*out, cap]


def fastest(step: Callable[[], None], counts: list[int], budget_s: float = STEP_BUDGET_S) -> tuple[int, dict]:
    """The thread count in ``counts`` that runs ``step`` fastest, and the seconds per step of each."""
    before = torch.get_num_threads()
    per_step: dict[int, float] = {}
    try:
        for n in counts:
            torch.set_num_threads(n)
            step()  # warm-up: the first call at a new count pays for the thread pool
            steps, t0 = 0, time.perf_counter()
            while steps < 2 or (time.perf_counter() - t0 < budget_s and steps < 20):
                step()
                steps += 1
            per_step[n] = (time.perf_counter() - t0) / steps
    finally:
        torch.set_num_threads(before)
    return min(per_step, key=per_step.get), per_step


def training_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One forward and backward pass of a copy of ``model`` on ``x`` (the model itself is untouched)."""
    probe = copy.deepcopy(model).train()

    def step() -> None:
        probe.zero_grad(set_to_none=True)
        out = probe(x)
        out = out[0] if isinstance(out, (tuple, list)) else out
        out.float().square().mean().backward()

    return step


def resolve(threads: int | str, *, model: nn.Module, batch: torch.Tensor, device: torch.device,
            cap: int | None = None, cache: Path | None = None, key: dict | None = None) -> int:
    """The thread count to train with: ``threads`` itself when it is a number, else the fastest for
    ``model`` on ``batch`` among 1..min(free cores, ``cap``). Draws no random numbers the run would see."""
    if threads != "auto":
        return int(threads)
    cap = max(1, min(cap or allowed_cores(), allowed_cores()))
    if cap == 1:
        return 1
    cap = min(cap, free_cores())
    if cap == 1 or device.type != "cpu":
        return cap  # on a GPU, CPU threads only feed it: no need to time them
    digest = None
    if cache is not None and key is not None:
        blob = json.dumps({**key, "cap": cap, "host": socket.gethostname(), "cpus": os.cpu_count(),
                           "machine": platform.machine(), "torch": torch.__version__}, sort_keys=True, default=str)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
        hit = _read(cache).get(digest)
        if isinstance(hit, int) and 1 <= hit <= cap:
            return hit
    with torch.random.fork_rng(devices=[]):  # dropout in the probe must not move the run's random stream
        best, _ = fastest(training_step(model, batch), candidates(cap))
    if digest is not None:
        _write(cache, digest, best)
    return best


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, digest: str, best: int) -> None:
    """Add one entry; written to a temporary file and renamed, so a reader never sees half a file
    (two workers that write at once may lose one entry: it is measured again next time)."""
    data = _read(path)
    data[digest] = best
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=0, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written is only a cache
