"""The image path: decoding a folder of PNGs once, loading it from the cache, and an epoch from the memory map.

    python benchmarks/images.py                    # 10,000 64x64 RGB PNGs in 3 classes
    python benchmarks/images.py --n 600 --reps 1   # a quick check that it all runs

Generates the folder (discs, squares, triangles) in a temporary directory, then, in one run, side by side:
- first load: ``load_data`` with an empty cache (every file decoded by the process pool into the .npy cache);
- cached load: ``load_data`` again (the same files: the array is memory-mapped, nothing decoded);
- an epoch (shuffled batches of 64 through a small CNN, forward, backward and SGD step) on the cached,
  memory-mapped tensors against the same data copied into ordinary in-memory tensors (target: within 1.1x);
  also the data path alone (the same batches gathered, no model). Epochs alternate cache, memory, memory, cache
  (``--reps`` times), one thread; medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_folder(root: Path, n: int, size: int) -> None:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    classes = ("disc", "square", "triangle")
    for c in classes:
        (root / c).mkdir(parents=True)
    for i in range(n):
        c = classes[i % 3]
        im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 80, 3)))
        d = ImageDraw.Draw(im)
        r = rng.uniform(size * 0.2, size * 0.4)
        cx, cy = rng.uniform(r, size - r, 2)
        fill = tuple(int(v) for v in rng.integers(128, 256, 3))
        if c == "disc":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif c == "square":
            d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
        else:
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        im.save(root / c / f"{i}.png")


def epoch(x, y, model, opt, batches: int | None, train: bool) -> float:
    import torch

    from dltricks.loop.batches import Batches

    b = Batches((x, y), 64, seed=0, device=torch.device("cpu"))
    t = time.perf_counter()
    for step, (xb, yb) in enumerate(b.epoch(0, b.new_order())):
        if batches is not None and step >= batches:
            break
        if train:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        else:
            float(xb[:, :, 0, 0].sum())  # touch the batch
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["DLTRICKS_CACHE"] = str(tmp / "cache")
        t = time.perf_counter()
        make_folder(tmp / "images", args.n, args.size)
        made = time.perf_counter() - t
        import torch

        from dltricks.data import load_data
        from dltricks.recipe import Recipe

        torch.set_num_threads(1)  # one thread: steadier on a shared machine, and the same for both sides
        recipe = Recipe.from_dict({"name": "bench", "data": {"name": "images", "root": str(tmp / "images"),
                                                             "size": args.size, "channels": 3},
                                   "model": {"name": "cnn"}})
        t = time.perf_counter()
        load_data(recipe.data, 0)
        first = time.perf_counter() - t
        t = time.perf_counter()
        b = load_data(recipe.data, 0)
        cached = time.perf_counter() - t
        xm, y = b.train
        xr = xm.clone()  # the same data in ordinary memory
        torch.manual_seed(0)
        # small on purpose: the lighter the model, the more the data path shows in the epoch's time
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
                                    torch.nn.Conv2d(8, 16, 3), torch.nn.ReLU(),
                                    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        times: dict[str, list[float]] = {k: [] for k in ("epoch, cache", "epoch, memory", "data, cache",
                                                           "data, memory")}
        # warm up: this process's page mappings of the cache (a training run's first epoch pays them once) and
        # the kernels
        epoch(xm, y, model, opt, None, False)
        epoch(xm, y, model, opt, 3, True)
        for _ in range(args.reps):  # ABBA: a drift in the machine's load hits both sides alike
            for src in ("cache", "memory", "memory", "cache"):
                x = xm if src == "cache" else xr
                times[f"epoch, {src}"].append(epoch(x, y, model, opt, None, True))
                times[f"data, {src}"].append(epoch(x, y, model, opt, None, False))
        med = {k: statistics.median(v) for k, v in times.items()}
        gb = xm.numel() * 4 / 2**30
        print(f"{args.n} {args.size}x{args.size} RGB PNGs ({made:.1f} s to write), {len(y)} training samples, "
              f"cache {gb:.2f} GiB float32; {len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.1f}")
        print(f"{'first load (decode)':<24}{first:>9.2f} s   ({args.n / first:,.0f} files/s)")
        print(f"{'cached load (mmap)':<24}{cached:>9.2f} s   ({first / cached:,.0f}x faster)")
        print(f"{'':<24}{'cache':>9}  {'memory':>9}  {'ratio':>6}")
        for what in ("epoch", "data"):
            c, m = med[f"{what}, cache"], med[f"{what}, memory"]
            label = "epoch (train a CNN)" if what == "epoch" else "data only (batches)"
            print(f"{label:<24}{c:>8.2f}s  {m:>8.2f}s  {c / m:>5.2f}x" + ("   target <= 1.10x" if what == "epoch"
                                                                         else ""))


if __name__ == "__main__":
    sys.exit(main())
