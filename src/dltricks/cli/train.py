"""``dltricks train``: one recipe, one recorded run.

Rerunning an interrupted ``dltricks train RECIPE`` resumes it: when the ledger holds an interrupted run of
the same resolved recipe (seed included) outside any study, that run continues from its checkpoint, as a
study's cells do on a rerun of ``dltricks ablate``, and one line says so. ``--fresh`` starts a new run
instead; ``--resume RUN_ID`` or ``--resume last`` names the run to continue.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from dltricks.cli.common import Parents, command, err, ledger_of, out, page, recipe_args, recipe_of
from dltricks.errors import DltricksError

if TYPE_CHECKING:
    from dltricks.ledger import Ledger
    from dltricks.ledger.record import RunRecord
    from dltricks.recipe import Recipe

RERUN = """\
Rerunning an interrupted `dltricks train RECIPE` resumes it: the newest interrupted run of the
same resolved recipe and seed (outside any study) continues from its checkpoint, and a line says
so; --fresh starts a new run instead."""


def add_parsers(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = page(sub, "train", parents.common, "train a recipe and record the run",
             "dltricks train mnist1d-cnn\ndltricks train my.toml -o train.epochs=5 -o train.lr=3e-3\n"
             "dltricks train my.toml           (again, after Ctrl-C: resumes the interrupted run)\n"
             "dltricks train my.toml --fresh   (a new run, the interrupted one left as it is)\n"
             "dltricks train --resume 3f2a9c   (continues that run where it stopped)\n"
             "dltricks train --resume last     (continues the newest interrupted run)")
    p.description = f"train a recipe and record the run\n\n{RERUN}"
    recipe_args(p, required=False)
    p.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run from its checkpoint: a run id, "
                                                      "or 'last' (the newest interrupted run outside any study)")
    p.add_argument("--fresh", action="store_true",
                   help="start a new run even where an interrupted run of the same recipe and seed could resume")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the resume checkpoint (optimiser and RNG state) of a completed run; by default "
                        "only its weights stay")


@command
def cmd_train(args: argparse.Namespace) -> int:
    if not args.recipe and not args.resume:
        raise DltricksError("train needs a RECIPE (a bundled name or a .toml path) or --resume RUN_ID")
    if args.resume and (args.recipe or args.override):
        raise DltricksError("--resume continues a run with its own recipe; give no RECIPE or -o with it")
    if args.resume and args.fresh:
        raise DltricksError("--fresh starts a new run and --resume continues one: give one of them")
    recipe = recipe_of(args) if args.recipe else ""  # a bad recipe fails here, before torch loads

    from dltricks.loop.training import TrainingInterrupted
    from dltricks.runner.run import train

    ledger = ledger_of(args)
    resume = args.resume
    if resume == "last":
        resume = _last_interrupted(ledger).id
    elif recipe and not args.fresh:
        stopped = _interrupted_run_of(ledger, recipe)
        if stopped is not None:
            resume = stopped.id
            err.print(f"resuming run {stopped.id}, interrupted earlier with the same recipe and seed "
                      f"(--fresh starts a new run)", markup=False, soft_wrap=True)
    try:
        result = train("" if resume else recipe, ledger=ledger, progress=not args.quiet, resume=resume,
                       keep_checkpoint=args.keep_checkpoint)
    except TrainingInterrupted as e:
        run_id = getattr(e, "run_id", "?")
        where = f" {e.where}" if getattr(e, "where", "") else ""
        again = "the same command (it resumes the run), or " if args.recipe else ""
        err.print(f"interrupted{where}: run {run_id} saved; continue with: {again}dltricks train --resume {run_id}",
                  markup=False, soft_wrap=True)
        return 130
    m = result.metrics
    shown = {k: v for k, v in m.items() if k.startswith("test_")}
    out.print(f"run [bold]{result.run_id}[/] completed: " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()),
              soft_wrap=True)
    out.print(f"weights: {result.run_dir / 'model.safetensors'}", markup=False, soft_wrap=True)
    return 0


def _interrupted_run_of(ledger: Ledger, recipe: Recipe) -> RunRecord | None:
    """The newest interrupted run of ``recipe`` as resolved (its seed included) that no study owns, or None.
    A study's cells resume through their study (a rerun of ``dltricks ablate``), never here."""
    for rec in ledger.runs(status="interrupted", name=recipe.name):
        if rec.study is not None:
            continue
        try:
            same = type(recipe).from_dict(rec.recipe, source=f"run {rec.id}").digest() == recipe.digest()
        except DltricksError:  # recorded by an older schema that no longer validates: not this recipe
            same = False
        if same:
            return rec
    return None


def _last_interrupted(ledger: Ledger) -> RunRecord:
    """``--resume last``: the newest interrupted run that no study owns."""
    for rec in ledger.runs(status="interrupted"):
        if rec.study is None:
            return rec
    raise DltricksError(f"--resume last: no interrupted run to resume in {ledger.where} "
                        "(dltricks runs --status interrupted lists the runs that stopped)")
