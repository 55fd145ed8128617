"""Training speed at 1 thread against N (all allowed cores) for each bundled recipe, on a quiet machine and
beside a busy neighbour, and what ``train.threads = "auto"`` picks in each case.

    python benchmarks/threads.py                    # every bundled recipe, 20 steps per measurement
    python benchmarks/threads.py --steps 20 mnist1d-mlp mnist1d-cnn

Each measurement times real training steps of the recipe (its model, data, batch size, optimiser: forward,
loss, backward, step) after a few warm-up steps. The busy neighbour is a process that spins on one core;
this script starts it before and stops it after its measurements. Both conditions are measured in one run,
side by side, so their ratio means something even on a machine that other jobs share (the load average
before each is printed: a quiet measurement on a loaded machine is not quiet).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from contextlib import contextmanager

import torch

from dltricks import cores
from dltricks.loop import threads as th
from dltricks.loop.batches import Batches
from dltricks.loop.optim import build_optimizer
from dltricks.recipe import Recipe, bundled_recipes
from dltricks.runner.run import build


@contextmanager
def busy_neighbour():
    """One process spinning on a core for the duration of the block."""
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)  # let the scheduler see it
    try:
        yield
    finally:
        spin.kill()
        spin.wait()


def step_timer(name: str):
    """A function ``(threads, steps) -> seconds per training step`` for the bundled recipe ``name``."""
    recipe = Recipe.load(name)
    bundle, model, task = build(recipe)
    device = torch.device("cpu")
    batches = Batches(bundle.train_source or bundle.train, recipe.train.batch_size, recipe.seed, device)
    x, y = next(batches.epoch(0, torch.arange(batches.n)))
    opt = build_optimizer(model, recipe.train)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        task.loss(model(x), y).backward()
        opt.step()

    def timed(threads: int, steps: int) -> float:
        torch.set_num_threads(threads)
        for _ in range(3):
            step()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - t0) / steps

    return timed, model, x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipes", nargs="*", help="bundled recipes (default: all but the ablation demo)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per measurement")
    args = p.parse_args()
    names = args.recipes or [n for n in bundled_recipes() if "ablate" not in n]
    n = cores.allowed_cores()
    print(f"cpus {os.cpu_count()}, allowed {n}, torch {torch.__version__}; 1 vs {n} threads, "
          f"{args.steps} steps each; load average {os.getloadavg()[0]:.2f}")
    if n < 2:
        sys.exit("only one core allowed: nothing to compare")
    print(f"{'recipe':14s} {'condition':10s} {'1 thread':>10s} {f'{n} threads':>10s} {'N/1':>6s}  auto picks")
    for name in names:
        timed, model, x = step_timer(name)
        for condition in ("quiet", "busy"):
            ctx = busy_neighbour() if condition == "busy" else contextmanager(lambda: (yield))()
            with ctx:
                one, many = timed(1, args.steps), timed(n, args.steps)
                auto = th.resolve("auto", model=model, batch=x, device=torch.device("cpu"), cap=n)
            print(f"{name:14s} {condition:10s} {one * 1e3:8.1f}ms {many * 1e3:8.1f}ms {many / one:6.2f}  {auto}",
                  flush=True)


if __name__ == "__main__":
    main()
