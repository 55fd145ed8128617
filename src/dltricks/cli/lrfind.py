"""``dltricks lr-find RECIPE``: the LR range test on a recipe's model and data (exponential ramp, smoothed
loss, a suggestion with its rule, a PNG). ``train.lr = "find"`` in a recipe runs the same test before training."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dltricks.cli.common import COMMANDS, Parents, command, page, print_line, recipe_args, recipe_of
from dltricks.errors import DltricksError


def _rate(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < x < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a learning rate > 0")
    return x


def add_parsers(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = page(sub, "lr-find", parents.plain, "LR range test: the loss against an exponentially growing learning "
             "rate, and a suggested rate",
             "dltricks lr-find mnist1d-cnn\n"
             "dltricks lr-find my.toml --steps 200 --end 1 --out lr.png\n"
             "dltricks train my.toml -o train.lr=find   (the same test before training; the run records lr_found)")
    recipe_args(p)
    p.add_argument("--steps", type=int, default=100, help="optimiser steps of the ramp (default 100)")
    p.add_argument("--start", type=_rate, default=1e-7, help="the first learning rate (default 1e-7)")
    p.add_argument("--end", type=_rate, default=10.0, help="the last learning rate (default 10)")
    p.add_argument("--out", metavar="PNG", help="the plot (default lr-find-RECIPE.png here)")


@command
def cmd_lr_find(args: argparse.Namespace) -> int:
    if args.steps < 5:
        raise DltricksError(f"--steps {args.steps}: too few to see a minimum; take 5 or more (100 is usual)")
    if args.start >= args.end:
        raise DltricksError(f"--start {args.start:g} must be below --end {args.end:g}: the ramp goes up")
    recipe = recipe_of(args)  # a bad recipe fails here, before torch loads
    png = Path(args.out or f"lr-find-{recipe.name}.png")
    if png.suffix.lower() != ".png":
        raise DltricksError(f"--out {png}: the plot is a PNG; give a path ending in .png")
    folder = png.parent if str(png.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise DltricksError(f"--out {png}: cannot write into {folder} (not a writable directory)")

    from dltricks.loop.lr_find import RULE, lr_range_test, plot_lr_range
    from dltricks.runner.run import build, make_augment

    bundle, model, task = build(recipe)
    spec = recipe.train.model_copy(update={"lr": 1e-3})  # the ramp sets the rate; "find" is no number
    found = lr_range_test(model, bundle.train_source or bundle.train, spec=spec, task=task, seed=recipe.seed,
                          augment=make_augment(recipe, bundle), start=args.start, end=args.end, steps=args.steps)
    plot_lr_range(found, png, title=f"LR range test: {recipe.name}")
    why = f" (stopped: {found.stopped})" if found.stopped else ""
    print_line(f"{recipe.name}: {len(found.lrs)} steps from lr {found.lrs[0]:.3g} to {found.lrs[-1]:.3g}{why}")
    print_line(f"suggestion: train.lr = {found.suggestion:.3g}  (rule: {RULE})")
    print_line(f"plot: {png}")
    return 0


COMMANDS["lr-find"] = COMMANDS.pop("lr_find")  # the verb has a hyphen; a function name cannot
