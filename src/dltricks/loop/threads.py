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

from dltricks.cores import allowed_cores, free_cores

# timing per candidate thread count (at least 2 steps after a warm-up): counts too close to tell apart
# in this time train about as fast, so a wrong pick between them costs little
STEP_BUDGET_S = 0.08


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


def cache_path() -> Path:
    """Where the timed choices are kept: one file per user and machine (``$XDG_CACHE_HOME/dltricks``, by
    default ``~/.cache/dltricks``), not per ledger, since the answer depends on the machine and the model
    only: a study in a new project folder need not time the same model again."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "dltricks" / "threads.json"


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
