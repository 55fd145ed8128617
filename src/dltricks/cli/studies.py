"""Studies of many runs: ``ablate`` and its ``worker`` and ``report``, ``tune`` and ``nas``."""

from __future__ import annotations

import argparse

from dltricks.cli import common
from dltricks.cli.common import (
    Parents,
    command,
    ledger_of,
    non_negative,
    out,
    page,
    positive,
    print_line,
    recipe_args,
    recipe_of,
    seeds,
)
from dltricks.errors import DltricksError


def add_parsers(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = page(sub, "ablate", parents.common, "which tricks help on this task? paired seeds, honest stats",
             "dltricks ablate                                   (the bundled demo study)\n"
             "dltricks ablate mnist1d-cnn --trick label_smoothing --trick one_cycle --seeds 5 --workers 2\n"
             "dltricks ablate mnist1d-cnn --trick 'lowlr:train.lr=1e-5' --mode add\n"
             "dltricks ablate my.toml --mode cumulative --metric val_loss\n"
             "dltricks ablate --command 'python train.py --seed {seed}' --trick 'ls:--label-smoothing 0.1' "
             "--metric val_accuracy --seeds auto --workers 2\n"
             "dltricks ablate study.toml                        (a study file with [ablate] command = ...)")
    recipe_args(p, required=False)
    p.add_argument("--trick", action="append", metavar="NAME", help="a catalogue trick or NAME:key=value[,...]")
    p.add_argument("--mode", choices=["add", "remove", "factorial", "cumulative"],
                   help="add: baseline + each trick; remove: all on, each taken out; factorial: every "
                        "combination (up to 5 tricks); cumulative: tricks added one after another "
                        "(default ablate.mode, add)")
    p.add_argument("--seeds", type=seeds, help='seeds per variant (paired across variants), or "auto": 3, then '
                                            "more in rounds only for inconclusive variants")
    p.add_argument("--max-seeds", type=positive, help="the most seeds per variant with --seeds auto (default 10)")
    p.add_argument("--rope", type=non_negative, help="region of practical equivalence: half-width in metric "
                                                     "units (default 0.005 for [0, 1] metrics, else 1%%)")
    p.add_argument("--workers", type=positive, help="local worker processes (cores are split between them)")
    p.add_argument("--gpus", metavar="0,1|auto", help="one CUDA device per worker, in order (auto: every device); "
                                                      "name a device twice to let two workers share it")
    p.add_argument("--study", help="study name (default: recipe, mode and a hash of the sweep)")
    p.add_argument("--storage", dest="ledger", metavar="URL", help="same as --ledger: where runs and trials live")
    p.add_argument("--metric", help="metric to compare (default eval.metric, e.g. test_accuracy)")
    p.add_argument("--out", metavar="FOLDER", help="report folder (default dltricks-runs/reports/STUDY)")
    _command_args(p)
    p = page(sub, "worker", parents.common, "join a study's work from this machine",
             "dltricks worker --study STUDY --storage postgresql://user@host/db")
    p.add_argument("--study", required=True, help="the study to work on (its name, as `dltricks ablate` printed it)")
    p.add_argument("--storage", dest="ledger", metavar="URL", help="same as --ledger")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p = page(sub, "report", parents.ledgered, "(re)write a study's report from storage",
             "dltricks report STUDY\ndltricks report STUDY --out reports/today")
    p.add_argument("study", help="the study's name, as `dltricks ablate` printed it")
    p.add_argument("--storage", dest="ledger", metavar="URL", help="same as --ledger")
    p.add_argument("--out", metavar="FOLDER", help="report folder (default dltricks-runs/reports/STUDY)")
    p.add_argument("--rope", type=non_negative, help="judge the same runs with this ROPE half-width")

    p = page(sub, "tune", parents.common, "tune hyperparameters with Optuna over the [tune] space",
             "dltricks tune mnist1d-cnn --trials 20 --best best.toml\n"
             "dltricks tune mnist1d-cnn --sampler gp --space train.lr=1e-4..0.1:log\n"
             "dltricks tune mnist1d-cnn --objective test_accuracy,params\n"
             "dltricks tune --command 'python train.py --lr {lr=0.01} --seed {seed}' --space lr=1e-5..0.1:log "
             "--metric val_accuracy\n"
             "dltricks tune study.toml                          (a study file with [tune] command and [tune.space])")
    recipe_args(p, required=False)
    _search_args(p)
    _command_args(p)
    p.add_argument("--sampler", choices=["random", "tpe", "gp", "cmaes", "nsga2"],
                   help="Optuna's sampler: random, tpe, gp (Gaussian process), cmaes, nsga2 (several "
                        "objectives); default the recipe's tune.sampler")
    p.add_argument("--objective", metavar="M1,M2", help="several objectives, e.g. test_accuracy,params: a Pareto front")
    p.add_argument("--pruner", choices=["median", "hyperband", "none"],
                   help="stop unpromising trials early on their validation curve (none: train every trial fully)")
    p = page(sub, "nas", parents.common, "search architectures over the model's keys within a budget",
             "dltricks nas mnist1d-cnn --strategy evolution --trials 30 --max-params 50000 --best arch.toml")
    recipe_args(p)
    _search_args(p)
    p.add_argument("--strategy", choices=["evolution", "reinforce", "random"],
                   help="how candidates are proposed: evolution (mutate the best), reinforce (a learned "
                        "controller) or random")
    p.add_argument("--max-params", type=int, help="never train a candidate with more parameters")
    p.add_argument("--max-flops", type=int, help="never train a candidate with more FLOPs (one sample)")


def _command_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--command", dest="command_line", metavar="LINE",
                   help="study any training script: the command line, with {seed} and {name} placeholders; it "
                        "reports its metrics as JSON (see docs: command studies)")
    p.add_argument("--cell-timeout", type=seconds, metavar="SECONDS",
                   help="with --command: stop a cell's process group after this long (the cell fails)")


def seconds(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a number of seconds > 0")
    return x


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", action="append", metavar="KEY=SPEC",
                   help="a search dimension: train.lr=1e-4..0.1:log, 'model.norm=[\"batch\", \"group\"]' "
                        "or KEY={low = .., high = .., log = true}")
    p.add_argument("--trials", type=positive, help="trials in the study (more on a rerun extend it)")
    p.add_argument("--seeds-per-trial", type=positive, help="paired seeds each trial is averaged over")
    p.add_argument("--metric", help="metric to optimise (default eval.metric)")
    p.add_argument("--search-seed", type=int, help="seed of the sampler or strategy")
    p.add_argument("--workers", type=positive, help="local worker processes")
    p.add_argument("--study", help="study name (default: recipe, kind and a hash of the search)")
    p.add_argument("--storage", dest="ledger", metavar="URL", help="same as --ledger")
    p.add_argument("--rerun-seeds", type=int, help="fresh seeds for the best vs the start recipe (0 = skip)")
    p.add_argument("--best", metavar="OUT.toml", help="write the best recipe here")
    p.add_argument("--out", help="report folder (default dltricks-runs/reports/STUDY)")


# ---- ablation studies ------------------------------------------------------------------------------

@command
def cmd_ablate(args: argparse.Namespace) -> int:
    from dltricks.search import command_file, local
    from dltricks.search.ablate import ablate

    if args.command_line or command_file.is_command_file(args.recipe, "ablate"):
        return _ablate_command(args)
    if args.cell_timeout is not None:
        raise DltricksError("--cell-timeout is for command studies (--command); a recipe's run has no time limit")
    if common.process_entry:  # this command is the process: torch imported, nothing run, no thread pool started
        local.mark_fresh()

    if args.gpus:  # before the recipe, the ledger or CUDA: a missing device is one line, nothing written
        import os

        gpus = local.parse_gpus(args.gpus, args.workers)
        args.workers = args.workers or len(gpus)
        os.environ["DLTRICKS_GPUS"] = ",".join(gpus)
    recipe = args.recipe or "mnist1d-ablate-demo"
    if not args.recipe:
        out.print("no recipe given: running the bundled demo study [bold]mnist1d-ablate-demo[/] "
                  "(see `dltricks show mnist1d-ablate-demo`)")
    from dltricks.recipe import Recipe

    result = ablate(Recipe.load(recipe, args.override), args.trick or None, mode=args.mode, seeds=args.seeds,
                    workers=args.workers, metric=args.metric or "", study=args.study or "",
                    ledger=args.ledger, out=args.out, progress=not args.quiet, rope=args.rope,
                    max_seeds=args.max_seeds)
    code = _print_study(result)
    return 1 if result.failures else code  # a script must see that cells failed


def _ablate_command(args: argparse.Namespace) -> int:
    """`dltricks ablate --command LINE` or `dltricks ablate study.toml` (with [ablate] command = ...)."""
    from dltricks.search.command_file import is_command_file, settings
    from dltricks.search.command_job import ablate_command

    file = args.recipe if is_command_file(args.recipe, "ablate") else None
    if args.recipe and not file:
        raise DltricksError(f"give a recipe or --command, not both: {args.recipe!r} is not a study file with "
                            "[ablate] command = ...")
    if args.override:
        raise DltricksError("-o sets recipe keys; a command study has none (add arguments with --trick NAME:ARGS)")
    c = settings("ablate", file=file, command=args.command_line, tricks=args.trick, timeout=args.cell_timeout)
    s = c.settings
    result = ablate_command(c.spec, c.tricks, mode=args.mode or s.get("mode", "add"),
                            seeds=args.seeds or s.get("seeds", 5), metric=args.metric or s.get("metric", ""),
                            study=args.study or s.get("study", ""),
                            rope=args.rope if args.rope is not None else s.get("rope"),
                            max_seeds=args.max_seeds or s.get("max_seeds", 10),
                            workers=args.workers or s.get("workers", 1), ledger=args.ledger, out=args.out,
                            progress=not args.quiet)
    code = _print_study(result)
    return 1 if result.failures else code


def _print_study(result) -> int:
    out.print(result.rich_table())
    for line in result.lines():
        out.print(line, markup=False, soft_wrap=True)
    for f in result.failures:
        out.print(f"[red]failed[/] {f['variant']} seed {f['seed']}: {f['reason']}", soft_wrap=True)
    print_line(f"report: {result.report['html']}")
    return 0


@command
def cmd_worker(args: argparse.Namespace) -> int:
    from dltricks.search.worker import work

    if args.study == "-":  # started by `dltricks ablate --workers N`: warm up, then read the study from stdin
        from dltricks.search.local import receive

        job = receive()
        if job is None:
            return 0
        ledger, args.study = job
    else:
        ledger = ledger_of(args)
    n = work(ledger, args.study, threads=args.threads, progress=not args.quiet)
    out.print(f"worker done: ran {n} cells of {args.study}")
    return 0


@command
def cmd_report(args: argparse.Namespace) -> int:
    from dltricks.search import trials
    from dltricks.search.ablate import report

    ledger = ledger_of(args)
    if trials.is_search(ledger, args.study):  # a tune or nas study
        from dltricks.search.results import rewrite_report

        return _print_search(rewrite_report(ledger, args.study, out=args.out))
    result = report(args.study, ledger=ledger, out=args.out, rope=args.rope)
    _print_study(result)
    return 1 if result.failures else 0  # as ablate: a script must see that cells failed


# ---- tuning and architecture search -----------------------------------------------------------------

@command
def cmd_tune(args: argparse.Namespace) -> int:
    from dltricks.search.command_file import is_command_file
    from dltricks.search.tune import tune

    if args.command_line or is_command_file(args.recipe, "tune"):
        return _tune_command(args)
    if args.cell_timeout is not None:
        raise DltricksError("--cell-timeout is for command searches (--command); a recipe's run has no time limit")
    if not args.recipe:
        raise DltricksError("dltricks tune needs a recipe (e.g. dltricks tune mnist1d-cnn), --command LINE, or a "
                            "study file with [tune] command = ...")
    result = tune(recipe_of(args), space=args.space, sampler=args.sampler, trials=args.trials,
                  seeds_per_trial=args.seeds_per_trial, metric=args.metric or "",
                  objective=args.objective.split(",") if args.objective else None, pruner=args.pruner,
                  search_seed=args.search_seed, workers=args.workers, study=args.study or "",
                  rerun_seeds=args.rerun_seeds, best=args.best, ledger=args.ledger, out=args.out,
                  progress=not args.quiet)
    return _print_search(result)


def _tune_command(args: argparse.Namespace) -> int:
    """`dltricks tune --command LINE --space KEY=SPEC` or `dltricks tune study.toml` ([tune] command, space)."""
    from dltricks.search.command_file import is_command_file, settings
    from dltricks.search.command_tune import parse_space, space_entries, tune_command

    file = args.recipe if is_command_file(args.recipe, "tune") else None
    if args.recipe and not file:
        raise DltricksError(f"give a recipe or --command, not both: {args.recipe!r} is not a study file with "
                            "[tune] command = ...")
    if args.override:
        raise DltricksError("-o sets recipe keys; a command search has none (its space: --space KEY=SPEC)")
    if args.objective:
        raise DltricksError("--objective (several objectives) is for recipes; a command search optimises --metric")
    c = settings("tune", file=file, command=args.command_line, tricks=None, timeout=args.cell_timeout)
    s = c.settings
    space = parse_space(space_entries(s.get("space"), args.space))
    result = tune_command(c.spec, space, sampler=args.sampler or s.get("sampler", "tpe"),
                          trials=args.trials or s.get("trials", 20),
                          seeds_per_trial=args.seeds_per_trial or s.get("seeds_per_trial", 1),
                          metric=args.metric or s.get("metric", ""), pruner=args.pruner or s.get("pruner", "none"),
                          search_seed=args.search_seed if args.search_seed is not None else s.get("search_seed", 0),
                          study=args.study or s.get("study", ""), workers=args.workers or s.get("workers", 1),
                          rerun_seeds=args.rerun_seeds if args.rerun_seeds is not None else s.get("rerun_seeds", 6),
                          best=args.best, ledger=args.ledger, out=args.out, progress=not args.quiet)
    values, result.best_path = result.best_path, None  # not a recipe: `dltricks train` cannot take it
    code = _print_search(result)
    if values is not None:
        print_line(f"best values: {values} (the command with them filled in, and each value)")
    return code


@command
def cmd_nas(args: argparse.Namespace) -> int:
    from dltricks.search.nas import nas

    result = nas(recipe_of(args), space=args.space, strategy=args.strategy, trials=args.trials,
                 seeds_per_trial=args.seeds_per_trial, metric=args.metric or "", max_params=args.max_params,
                 max_flops=args.max_flops, search_seed=args.search_seed, workers=args.workers,
                 study=args.study or "", rerun_seeds=args.rerun_seeds, best=args.best, ledger=args.ledger,
                 out=args.out, progress=not args.quiet)
    return _print_search(result)


def _print_search(result) -> int:
    out.print(result.table())
    for t in result.trials:
        if t.state != "complete":
            out.print(f"[yellow]{t.state}[/] t{t.number}: {t.failure}", soft_wrap=True, markup=True)
    if result.best is not None:
        out.print(f"best: t{result.best.number} " + ", ".join(f"{k}={v!r}" for k, v in result.best.config.items()),
                  markup=False, soft_wrap=True)
    if result.rerun is not None:
        out.print(result.rerun.summary(), markup=False, soft_wrap=True)
    elif result.rerun_note:
        out.print(result.rerun_note, markup=False)
    if result.best_path is not None:
        print_line(f"best recipe: {result.best_path} (train it: dltricks train {result.best_path})")
    print_line(f"report: {result.report['html']}")
    return 0
