"""How much does ``dltricks.fit`` cost over a hand-written PyTorch loop?

Both train the same model on the same MNIST-1D-sized data (4000 x 1 x 40, 10 classes) already on the
device, with the same batches (``x[perm[i:i+b]]`` from a seeded permutation each epoch), the same
AdamW and one ``loss.item()`` per step, as any loop that logs its loss does. Each measurement is one
whole call (a few epochs, setup included) divided by its number of steps; the variants are run in
turn, in a fresh random order every repetition, after a warm-up, so that drift on a shared machine
hits them alike. The report is the median per-step time of each and its ratio to the bare loop.

    python benchmarks/overhead.py                 # cnn and mlp, 2 threads, CPU
    python benchmarks/overhead.py --model cnn --reps 15 --threads 1 --device cuda

Target: fit (progress off) / bare <= 1.05.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


def make_model(kind: str) -> nn.Module:
    """The bundled mnist1d-cnn's architecture (32-64-128, BatchNorm, max-pool, average head), or an MLP."""
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(),
                             nn.Linear(100, 10))

    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv1d(i, o, 3, padding=1, bias=False), nn.BatchNorm1d(o), nn.ReLU()]

    return nn.Sequential(*block(1, 32), nn.MaxPool1d(2), *block(32, 64), nn.MaxPool1d(2), *block(64, 128),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(128, 10))


def bare_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, lr: float,
              seed: int) -> int:
    """What a careful user writes by hand. Returns the number of steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    model.train()
    n, steps = len(x), 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g).to(x.device)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
            steps += 1
    return steps


def fit_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, lr: float,
             seed: int, progress: bool, device: str) -> int:
    from dltricks.loop.training import fit

    h = fit(model, (x, y), epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adamw", seed=seed,
            device=device, progress=progress)
    n = len(x)
    full, rest = divmod(n, batch_size)
    return h.epochs * (full + (1 if rest > 1 or (rest == 1 and full == 0) else 0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["cnn", "mlp", "both"], default="both")
    ap.add_argument("--reps", type=int, default=9, help="timed repetitions of each variant")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per timed call")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--samples", type=int, default=4000, help="MNIST-1D's training set size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-progress-variant", action="store_true", help="skip timing fit with its progress bar")
    args = ap.parse_args(argv)

    os.environ.pop("DLTRICKS_NO_PROGRESS", None)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.samples, 1, 40, generator=g).to(dev)
    y = torch.randint(0, 10, (args.samples,), generator=g).to(dev)
    lr, b, ep = 1e-3, args.batch_size, args.epochs

    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, load average {load:.2f}; {args.samples} samples, batch {b}, {ep} epochs "
          f"per call, {args.reps} reps", file=sys.stderr)

    results = {}
    for kind in (["cnn", "mlp"] if args.model == "both" else [args.model]):
        torch.manual_seed(0)
        init = make_model(kind).to(dev)

        def sync() -> None:
            if dev.type == "cuda":
                torch.cuda.synchronize()

        variants = {
            "bare": lambda m: bare_loop(m, x, y, ep, b, lr, 0),
            "fit": lambda m: fit_loop(m, x, y, ep, b, lr, 0, False, args.device),
        }
        if not args.no_progress_variant:
            variants["fit+progress"] = lambda m: fit_loop(m, x, y, ep, b, lr, 0, True, args.device)
        wall: dict[str, list[float]] = {k: [] for k in variants}
        cpu: dict[str, list[float]] = {k: [] for k in variants}
        order = list(variants)
        for rep in range(args.reps + 1):  # rep 0 warms up (allocator, kernels, imports)
            random.Random(rep).shuffle(order)
            for name in order:
                model = copy.deepcopy(init)
                sync()
                t, c = time.perf_counter(), time.process_time()
                steps = variants[name](model)
                sync()
                if rep > 0:
                    wall[name].append((time.perf_counter() - t) / steps)
                    cpu[name].append((time.process_time() - c) / steps)
        results[kind] = {}
        for clock, times in (("wall", wall), ("cpu", cpu)):
            med = {k: statistics.median(v) for k, v in times.items()}
            results[kind][clock] = med
            print(f"\n{kind}: median per-step {clock} time over {args.reps} interleaved reps")
            low = {k: min(v) for k, v in times.items()}
            for name, v in med.items():
                spread = statistics.quantiles(times[name], n=4) if len(times[name]) >= 4 else [v, v, v]
                print(f"  {name:13s} {v * 1e3:8.3f} ms  (IQR {spread[0] * 1e3:.3f}-{spread[2] * 1e3:.3f})"
                      f"  ratio {v / med['bare']:.3f}   min {low[name] * 1e3:.3f} ms, ratio of mins "
                      f"{low[name] / low['bare']:.3f}")
    for clock in ("wall", "cpu"):
        worst = max(r[clock]["fit"] / r[clock]["bare"] for r in results.values())
        print(f"worst fit/bare ratio ({clock} clock): {worst:.3f} (target <= 1.05)")
    print("(the process CPU clock is the steadier one on a shared machine; with one thread it is the compute "
          "time itself)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
