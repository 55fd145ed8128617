"""``dltricks train``: one recipe, one recorded run."""

from __future__ import annotations

import argparse

from dltricks.cli.common import Parents, command, err, ledger_of, out, page, recipe_args, recipe_of
from dltricks.errors import DltricksError


def add_parsers(sub, parents: Parents) -> None:
    p = page(sub, "train", parents.common, "train a recipe and record the run",
             "dltricks train mnist1d-cnn\ndltricks train my.toml -o train.epochs=5 -o train.lr=3e-3\n"
             "dltricks train --resume 3f2a9c   (after Ctrl-C: continues where it stopped)")
    recipe_args(p, required=False)
    p.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run from its checkpoint")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the resume checkpoint (optimiser and RNG state) of a completed run; by default "
                        "only its weights stay")


@command
def cmd_train(args: argparse.Namespace) -> int:
    if not args.recipe and not args.resume:
        raise DltricksError("train needs a RECIPE (a bundled name or a .toml path) or --resume RUN_ID")
    if args.resume and (args.recipe or args.override):
        raise DltricksError("--resume continues a run with its own recipe; give no RECIPE or -o with it")
    recipe = recipe_of(args) if args.recipe else ""  # a bad recipe fails here, before torch loads

    from dltricks.loop.training import TrainingInterrupted
    from dltricks.runner.run import train

    ledger = ledger_of(args)
    try:
        result = train(recipe, ledger=ledger, progress=not args.quiet, resume=args.resume,
                       keep_checkpoint=args.keep_checkpoint)
    except TrainingInterrupted as e:
        run_id = getattr(e, "run_id", "?")
        where = f" {e.where}" if getattr(e, "where", "") else ""
        err.print(f"interrupted{where}: run {run_id} saved; continue with: dltricks train --resume {run_id}",
                  soft_wrap=True)
        return 130
    m = result.metrics
    shown = {k: v for k, v in m.items() if k.startswith("test_")}
    out.print(f"run [bold]{result.run_id}[/] completed: " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()),
              soft_wrap=True)
    out.print(f"weights: {result.run_dir / 'model.safetensors'}", markup=False, soft_wrap=True)
    return 0
