"""``dltricks launch``: a study's workers placed by submitit (a Slurm job array, or processes here)."""

from __future__ import annotations

import argparse
import os

from dltricks.cli.common import Parents, command, out, page, positive, print_line, seeds
from dltricks.errors import DltricksError


def add_parsers(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = page(sub, "launch", parents.common, "run a study's workers on a Slurm cluster (submitit) or here",
             "dltricks launch mnist1d-cnn --trick label_smoothing --seeds 5 --workers 8 --slurm \\\n"
             "    --partition gpu --gpus-per-worker 1 --time 120 --storage postgresql://me@db/dltricks\n"
             "dltricks launch STUDY --workers 4 --slurm        (tops up the workers of an existing study)\n"
             "dltricks launch mnist1d-cnn --trick one_cycle --workers 2 --storage postgresql://...  (here)")
    p.add_argument("target", metavar="RECIPE|STUDY", help="a recipe (bundled name or .toml) to define an ablation "
                                                          "study from, or the name of a study in the storage")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="set a recipe key, e.g. -o train.epochs=5")
    p.add_argument("--trick", action="append", metavar="NAME", help="as for ablate")
    p.add_argument("--mode", choices=["add", "remove", "factorial", "cumulative"], help="as for ablate")
    p.add_argument("--seeds", type=seeds, help="as for ablate")
    p.add_argument("--metric", help="as for ablate")
    p.add_argument("--study", help="study name (default: as ablate names it)")
    p.add_argument("--storage", dest="ledger", metavar="URL", help="the shared ledger (PostgreSQL for --slurm)")
    p.add_argument("--workers", type=positive, required=True, help="worker processes (Slurm array tasks)")
    p.add_argument("--slurm", action="store_true", help="submit the workers as a Slurm job array (else: here)")
    p.add_argument("--partition", help="Slurm partition")
    p.add_argument("--time", type=positive, default=60, metavar="MIN", help="minutes per worker (default 60)")
    p.add_argument("--gpus-per-worker", type=int, default=0, metavar="N", help="GPUs per Slurm worker")
    p.add_argument("--cpus-per-worker", type=positive, default=1, metavar="N", help="CPUs per Slurm worker")
    p.add_argument("--sbatch", action="append", default=[], metavar="NAME=VALUE",
                   help="an extra #SBATCH option, e.g. --sbatch account=proj --sbatch qos=low")
    p.add_argument("--no-wait", action="store_true", help="submit and return (the report: dltricks report STUDY)")
    p.add_argument("--out", metavar="FOLDER", help="report folder (default dltricks-runs/reports/STUDY)")


@command
def cmd_launch(args: argparse.Namespace) -> int:
    sbatch = {}
    for item in args.sbatch:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise DltricksError(f"--sbatch {item!r}: give NAME=VALUE, e.g. --sbatch account=proj")
        sbatch[name.strip().lstrip("-")] = value
    url = args.ledger or os.environ.get("DLTRICKS_LEDGER") or ""
    if args.slurm and (not url or url.startswith("sqlite")):
        raise DltricksError("--slurm: the ledger is a SQLite file, which workers on other machines cannot share; "
                            "give --storage postgresql://USER@HOST/DB")
    from dltricks.search import launch as ln

    if args.slurm:
        import shutil

        if shutil.which("sbatch") is None:
            raise DltricksError("--slurm: no sbatch on PATH (this machine is not a Slurm login node); run the "
                                "study on this machine with the same command without --slurm")
    from dltricks.ledger import Ledger
    from dltricks.search.worker import open_job

    ledger = Ledger(url=args.ledger)
    name = args.target if ln.study_exists(ledger, args.target, open_job) else _define(args, ledger)
    place = ln.Placement(workers=args.workers, slurm=args.slurm, partition=args.partition, time_min=args.time,
                         gpus=args.gpus_per_worker, cpus=args.cpus_per_worker, sbatch=sbatch,
                         wait=not args.no_wait)
    n = ln.launch(ledger, name, place, open_job, progress=not args.quiet)
    where = "as a Slurm job array" if args.slurm else "on this machine"
    out.print(f"study {name}: {n} worker(s) submitted {where} (logs: {ln.folder_of(ledger, name)})",
              markup=False, soft_wrap=True)
    if args.no_wait:
        print_line(f"when they are done: dltricks report {name}")
        return 0
    from dltricks.cli.studies import _print_search, _print_study
    from dltricks.search.definition import is_search

    if is_search(ledger, name):
        from dltricks.search.results import rewrite_report

        return _print_search(rewrite_report(ledger, name, out=args.out))
    from dltricks.search.ablate import report

    result = report(name, ledger=ledger, out=args.out)
    _print_study(result)
    return 1 if result.failures else 0


def _define(args: argparse.Namespace, ledger) -> str:
    """An ablation study from a recipe, as ``ablate`` defines it, created in the ledger; its name."""
    from dltricks.recipe import Recipe
    from dltricks.search import claims
    from dltricks.search import study as st
    from dltricks.search.ablate import checked_definition

    recipe = Recipe.load(args.target, args.override)
    definition = checked_definition(recipe, args.trick, mode=args.mode, seeds=args.seeds, metric=args.metric,
                                    study=args.study)
    claims.ensure_table(ledger)
    st.create_or_load(ledger, definition)
    return definition.name
