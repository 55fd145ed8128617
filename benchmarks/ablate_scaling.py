"""The fixed cost of a small ablation study, and how much faster 2 local workers are than 1, in one run.

    python benchmarks/ablate_scaling.py                  # fixed cost, then 8 and 32 cells with 1 and 2 workers
    python benchmarks/ablate_scaling.py --sizes 8        # only the 8-cell sweep
    python benchmarks/ablate_scaling.py --epochs 1 --sizes 8 --reps 1   # a quick check that it all runs

Every study is a whole `dltricks ablate ... --quiet` command in a fresh temporary ledger (process start-up,
storage, report included), as a user runs it.

- Fixed cost: a 2-cell study (mnist1d-cnn, 1 epoch, 1 seed, a label-smoothing trick) minus the time its two
  runs spent in their training loops, against `python -c "import torch"` timed alternately with it
  (target: at most 2.5x).
- Scaling: mnist1d-cnn, 4 epochs; 8 cells = 2 variants x 4 seeds, 32 cells = 4 variants x 8 seeds; the
  same sweep with `--workers 1` and `--workers 2`, back to back (target: >= 1.5x on 8 cells, >= 1.8x on
  32 on 2 cores, and never slower). Each study is checked to have every cell exactly once. Printed beside
  each speed-up: its ceiling, what the cells' own training loops allow (2 x the loop time per cell of the
  1-worker sweep, which may use both cores, over that of the 2-worker sweep, whose workers have 1 each).

Threads are left to `train.threads = "auto"` and the sweep's split (a single worker may use both cores).
Its timed choice is cached per machine and model, in a cache folder of this run's own: the first study
times the model's steps (a few tenths of a second), the others find the answer, as every study after the
first does on a user's machine.
On a machine that other jobs share, every figure is skewed by them: the load average is printed with
each measurement, and the ratios, measured side by side, are what to read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

RECIPE = "mnist1d-cnn"
TRICKS = ["ls:train.label_smoothing=0.1", "wd:train.weight_decay=0.01", "clip:train.grad_clip=1.0"]
SIZES = {8: (1, 4), 32: (3, 8)}  # cells -> (tricks, seeds); variants = tricks + 1
TARGETS = {8: 1.5, 32: 1.8}


def import_time(modules: str = "torch") -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {modules}"], check=True)
    return time.perf_counter() - t0


# What every study imports whatever dltricks does: torch; torch._dynamo, which every torch.optim optimiser
# imports on construction and on step() (torch 2.13); Optuna for the storage; scipy.special (the t
# distribution) and matplotlib for the report.
FLOOR = "torch, torch._dynamo, scipy.special, matplotlib.figure, optuna"
# What a worker must import before its first step; the command imports the rest meanwhile on the other core.
CRITICAL = "torch, torch._dynamo"


def run_study(workers: int, tricks: int, seeds: int, epochs: int, recipe: str = RECIPE) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"dltricks-bench-w{workers}-"))
    cmd = [sys.executable, "-m", "dltricks.cli", "ablate", recipe, "-o", f"train.epochs={epochs}",
           *[a for t in TRICKS[:tricks] for a in ("--trick", t)], "--seeds", str(seeds),
           "--workers", str(workers), "--study", "bench", "--quiet"]
    env = {**os.environ, "DLTRICKS_HOME": str(home)}
    env.pop("DLTRICKS_LEDGER", None)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=home, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"workers={workers} failed ({done.returncode}):\n{done.stderr}")

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name="bench", storage=f"sqlite:///{home / 'ledger.db'}").get_trials()
    per_cell = Counter(t.user_attrs["cell"] for t in trials)
    if len(per_cell) != (tricks + 1) * seeds or set(per_cell.values()) != {1}:
        sys.exit(f"workers={workers}: cells are not each run exactly once: {dict(per_cell)}")
    train_s = [t.user_attrs["metrics"]["wall_time_s"] for t in trials]  # each cell's training loop
    threads = sorted({int(t.user_attrs["metrics"].get("threads", 0)) for t in trials})
    from dltricks.ledger import Ledger

    runs = Ledger(f"sqlite:///{home / 'ledger.db'}", root=home).runs(study="bench")
    return {"wall": wall, "train": sum(train_s), "per_cell": statistics.mean(train_s), "load": load,
            "cells": len(trials), "threads": threads, "workers_used": len({r.pid for r in runs})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[8, 32], choices=sorted(SIZES))
    p.add_argument("--epochs", type=int, default=4, help="epochs of each run in the scaling sweeps")
    p.add_argument("--recipe", default=RECIPE, help="the recipe of the scaling sweeps (the fixed cost is always "
                   f"{RECIPE}'s)")
    p.add_argument("--reps", type=int, default=3, help="repetitions of the fixed-cost measurement")
    p.add_argument("--no-fixed", action="store_true", help="skip the fixed-cost measurement")
    args = p.parse_args()
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="dltricks-bench-cache-")  # see the docstring
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, recipe {args.recipe}", flush=True)

    if not args.no_fixed:
        torch_s, floor_s, path_s, fixed_s, whole_s = [], [], [], [], []
        for _ in range(args.reps):  # alternate, so that all see the same load
            torch_s.append(import_time())
            floor_s.append(import_time(FLOOR))
            path_s.append(import_time(CRITICAL))
            r = run_study(1, 1, 1, 1)
            fixed_s.append(r["wall"] - r["train"])
            whole_s.append(r["wall"])
            print(f"  rep: import torch {torch_s[-1]:.2f} s, study {r['wall']:.2f} s of which training loops "
                  f"{r['train']:.2f} s (load {r['load']:.2f})", flush=True)
        t, fl, f = statistics.median(torch_s), statistics.median(floor_s), statistics.median(fixed_s)
        print(f"fixed cost of a 2-cell study: {f:.2f} s (median of {args.reps}; whole command minus training "
              f"loops); import torch: {t:.2f} s; ratio {f / t:.2f}x (target <= 2.5x); the whole command "
              f"{statistics.median(whole_s):.2f} s", flush=True)
        print(f"  of which no study avoids: import {FLOOR}: {fl:.2f} s ({fl / t:.2f}x import torch) in one "
              f"process; on the critical path, where the worker and the command import side by side: "
              f"import {CRITICAL}: {statistics.median(path_s):.2f} s "
              f"({statistics.median(path_s) / t:.2f}x)", flush=True)

    rows = []
    for cells in args.sizes:
        tricks, seeds = SIZES[cells]
        one = run_study(1, tricks, seeds, args.epochs, args.recipe)
        two = run_study(2, tricks, seeds, args.epochs, args.recipe)
        rows.append((cells, one, two))
        print(f"{cells} cells: 1 worker {one['wall']:.1f} s (threads {one['threads']}, load {one['load']:.2f}), "
              f"2 workers {two['wall']:.1f} s (threads {two['threads']}, {two['workers_used']} processes ran "
              f"cells, load {two['load']:.2f})", flush=True)
    if rows:
        # The most 2 workers can gain: each trains its cells with 1 thread, where 1 worker had both cores.
        # Their cells' training loops, measured in the same sweeps, set it: 2 x (loop with 2 threads) /
        # (loop with 1 thread) when the single worker chose 2 threads; below 2x by what the second
        # thread bought. A study's start-up and report, paid once either way, take more off small ones.
        print(f"\n{'cells':>5s} {'1 worker':>10s} {'2 workers':>10s} {'speed-up':>9s} {'target':>7s} "
              f"{'ceiling':>8s}  (loop per cell: 1 worker, 2 workers)")
        for cells, one, two in rows:
            ceiling = 2 * one["per_cell"] / two["per_cell"]
            print(f"{cells:5d} {one['wall']:9.1f}s {two['wall']:9.1f}s {one['wall'] / two['wall']:8.2f}x "
                  f"{TARGETS[cells]:6.1f}x {ceiling:7.2f}x  ({one['per_cell']:.2f} s, {two['per_cell']:.2f} s)")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
