"""Is augmentation the bottleneck? Augmented samples/s against the model's training samples/s.

For each recipe: one training batch of its data (a batch of patches when it trains on patches), its
model, and an augmentation (the recipe's own when it has one, else a heavy medical-style set: flip,
rotate, scale, elastic, gamma, noise). It times

- ``augment``: the whole augmentation on the batch, image and mask, where the loop runs it (per batch,
  on the training device);
- each op on its own, to see which one costs;
- ``train step``: forward, backward and AdamW step of the recipe's model on the same batch;

as the median over repetitions, and reports samples/s and the ratio augment / train. A ratio well
above 1 means augmentation keeps up (the loop runs it in the same thread, so its time adds to the
step: at ratio r, augmentation costs 1/r of the step time).

    python benchmarks/augment.py                              # seg2d-unet and seg3d-unet on the CPU
    python benchmarks/augment.py mnist1d-cnn --device cuda --reps 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dltricks.data import load_data
from dltricks.data.augment import Augment, from_spec
from dltricks.nn import build_model
from dltricks.recipe import AugmentSpec, Recipe
from dltricks.runner.run import make_task

HEAVY = AugmentSpec(flip=0.5, rotate=15.0, scale=0.15, elastic=0.02, gamma=0.3, noise=0.1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, reps: int) -> float:
    """Median seconds of ``fn()`` after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def batch_of(recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor, object]:
    bundle = load_data(recipe.data, recipe.seed)
    b = recipe.train.batch_size
    if bundle.train_source is not None:
        items = [bundle.train_source[i] for i in range(b)]
        x, y = torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items])
    else:
        x, y = bundle.train[0][:b], bundle.train[1][:b]
    return x, y, bundle


def bench(name: str, device: torch.device, reps: int) -> list[tuple[str, float, float]]:
    recipe = Recipe.load(name)
    x, y, bundle = batch_of(recipe)
    x, y = x.to(device), y.to(device)
    dims = x.dim() - 2
    spec = recipe.data.augment
    if from_spec(spec, dims, bundle.task) is None:  # nothing on: measure a heavy set instead
        spec = HEAVY if dims > 1 else AugmentSpec(flip=0.5, shift=0.1, scale=0.15, noise=0.1)
    aug = from_spec(spec, dims, bundle.task, seed=0)
    n = len(x)
    rows = [(f"augment ({', '.join(aug.aug.ops)})", n / timed(lambda: aug(x, y), device, reps), 0.0)]
    for op in aug.aug.ops:
        one = Augment([op], dims, seed=0, **{op: getattr(spec, op)})
        mask = y if bundle.task == "segmentation" else None
        rows.append((f"  {op}", n / timed(lambda a=one, m=mask: a(x, m), device, reps), 0.0))

    torch.manual_seed(0)
    model = build_model(recipe.model, bundle.in_shape, bundle.num_classes).to(device).train()
    task = make_task(recipe, bundle)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.train.lr)

    def step() -> None:
        loss = task.loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    train_rate = n / timed(step, device, max(3, reps // 2))
    rows.append(("train step", train_rate, 1.0))
    return [(label, rate, rate / train_rate) for label, rate, _ in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="*", default=["seg2d-unet", "seg3d-unet"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, threads {torch.get_num_threads()}, torch {torch.__version__}")
    for name in args.recipes:
        print(f"\n{name}")
        print(f"  {'what':<52} {'samples/s':>10} {'x train':>8}")
        for label, rate, ratio in bench(name, device, args.reps):
            print(f"  {label:<52} {rate:>10.1f} {ratio:>8.1f}")


if __name__ == "__main__":
    main()
