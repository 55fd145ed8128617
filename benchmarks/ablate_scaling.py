"""How much faster an ablation study runs with 2 local workers than with 1.

    python benchmarks/ablate_scaling.py                  # 4 variants x 8 seeds, runs of ~2-3 s
    python benchmarks/ablate_scaling.py --one-thread     # every process limited to 1 torch thread

The same sweep (MNIST-1D CNN, 3 custom tricks in add mode, so 4 variants, x 8 paired seeds = 32
cells; --seeds 4 for 16) is run by `dltricks ablate --workers 1` and then `--workers 2`, each into its own fresh
temporary ledger, timing the whole command (process start-up included). It prints both wall times,
the speed-up (target >= 1.8x on 2 cores), and checks that each study has every cell exactly once
and that both gave the same scores. Run it on a quiet machine: other load skews the numbers (the
load average is printed before and after).

Reading the numbers (measured on the 2-core CI machine when it was quiet):
- The whole command has serial parts both runs pay alike: imports and creating the study before the
  first run (~2-3 s), the report after the last (~3-4 s). "of the sweep alone" leaves them out.
- The second process starts while the first trains (`--workers N` is this process and N-1
  `dltricks worker` children) and joins ~4 s later (importing torch, its first model build).
- With `--workers 1` the one process gets both cores as torch threads (about 1.25x faster per run
  on a quiet machine, far slower on a busy one), so `--one-thread` compares processes alone.
- 16 cells of ~2 s, --one-thread: ~1.6x whole command, ~1.7x sweep alone; --seeds 8 (32 cells):
  ~1.8x whole command, ~1.95x sweep alone. The fixed costs weigh less as the sweep grows.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

RECIPE = "mnist1d-cnn"
OVERRIDES = ["train.epochs=4"]  # 5000 samples, channels [32, 64, 128]: ~2-3 s a run on one core
TRICKS = ["ls:train.label_smoothing=0.1", "wd:train.weight_decay=0.01", "clip:train.grad_clip=1.0"]


def run_study(workers: int, seeds: int, epochs: int | None, env: dict[str, str]) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"dltricks-bench-w{workers}-"))
    overrides = [o for o in OVERRIDES if not (epochs and o.startswith("train.epochs="))]
    if epochs:
        overrides.append(f"train.epochs={epochs}")
    cmd = [sys.executable, "-m", "dltricks.cli", "ablate", RECIPE, *[a for o in overrides for a in ("-o", o)],
           *[a for t in TRICKS for a in ("--trick", t)], "--seeds", str(seeds), "--workers", str(workers),
           "--study", "bench", "--quiet"]
    env = {**env, "DLTRICKS_HOME": str(home)}
    env.pop("DLTRICKS_LEDGER", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=home, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes included: ablate waited for them
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"workers={workers} failed ({done.returncode}):\n{done.stderr}")

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trials = optuna.load_study(study_name="bench", storage=f"sqlite:///{home / 'ledger.db'}").get_trials()
    per_cell = Counter(t.user_attrs["cell"] for t in trials)
    expected = (len(TRICKS) + 1) * seeds
    if len(per_cell) != expected or set(per_cell.values()) != {1}:
        sys.exit(f"workers={workers}: cells are not each run exactly once: {dict(per_cell)}")
    train_s = [t.user_attrs["metrics"]["wall_time_s"] for t in trials]
    # The sweep itself, from the first run's start to the last run's end: without the fixed costs
    # that one process pays whatever the number of workers (imports, creating the study, the report).
    from dltricks.ledger import Ledger

    runs = Ledger(f"sqlite:///{home / 'ledger.db'}", root=home).runs(study="bench")
    span = (max(r.finished for r in runs) - min(r.started for r in runs)).total_seconds()
    scores = {t.user_attrs["cell"]: t.value for t in trials}
    return {"wall": wall, "span": span, "cpu": cpu, "load": load, "cells": len(trials), "train_s": train_s,
            "scores": scores, "home": home}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--epochs", type=int, default=0, help="override the runs' epochs (default 4)")
    p.add_argument("--one-thread", action="store_true",
                   help="OMP_NUM_THREADS=1 for every process (else 1 worker may use 2 threads)")
    args = p.parse_args()
    env = dict(os.environ)
    if args.one_thread:
        env["OMP_NUM_THREADS"] = "1"
    print(f"cpus {os.cpu_count()}, load average before {os.getloadavg()[0]:.2f}, "
          f"sweep: {len(TRICKS) + 1} variants x {args.seeds} seeds of {RECIPE} {' '.join(OVERRIDES)}")
    results = {}
    for workers in (1, 2):
        r = results[workers] = run_study(workers, args.seeds, args.epochs or None, env)
        print(f"workers={workers}: {r['wall']:6.1f} s wall ({r['span']:6.1f} s from the first run's start to the "
              f"last run's end), {r['cpu']:6.1f} s CPU for {r['cells']} cells "
              f"(training itself {statistics.mean(r['train_s']):.2f} s a run, {sum(r['train_s']):.1f} s in all; "
              f"load average at start {r['load']:.2f})", flush=True)
    speedup = results[1]["wall"] / results[2]["wall"]
    same = results[1]["scores"] == results[2]["scores"]
    print(f"speed-up with 2 workers: {speedup:.2f}x (target >= 1.8x on 2 cores); "
          f"of the sweep alone: {results[1]['span'] / results[2]['span']:.2f}x; "
          f"load average after {os.getloadavg()[0]:.2f}")
    # Where other processes share the cores, wall times say more about them than about dltricks. The
    # CPU seconds do not: 2 workers on 2 free cores take about max(CPU/2, the busier worker) of wall time.
    print(f"CPU seconds, 2 workers / 1 worker: {results[2]['cpu'] / results[1]['cpu']:.2f} "
          f"(overhead of the second process: {results[2]['cpu'] - results[1]['cpu']:+.1f} s)")
    print(f"scores identical with 1 and 2 workers: {same}")


if __name__ == "__main__":
    main()
