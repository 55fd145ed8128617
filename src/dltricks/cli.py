"""The ``dltricks`` command: one thin function per verb over the Python API.

A user's mistake prints one line and exits 2; a failed run exits 1; Ctrl-C exits 130 after saving.
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from rich.console import Console

from dltricks import __version__
from dltricks.errors import DltricksError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


def command(fn: Callable[[argparse.Namespace], int | None]) -> Callable:
    COMMANDS[fn.__name__.removeprefix("cmd_")] = fn
    return fn


def _ledger(args: argparse.Namespace):
    from dltricks.ledger import Ledger

    return Ledger(url=args.ledger)


def _recipe(args: argparse.Namespace):
    from dltricks.recipe import Recipe

    return Recipe.load(args.recipe, args.override)


# ---- recipes and tricks -----------------------------------------------------------------------

@command
def cmd_recipes(args: argparse.Namespace) -> None:
    from rich.table import Table

    from dltricks.recipe import bundled_recipes

    t = Table("recipe", "what it is", box=None)
    for name, desc in bundled_recipes().items():
        t.add_row(f"[bold]{name}[/]", desc)
    out.print(t)


@command
def cmd_show(args: argparse.Namespace) -> None:
    sys.stdout.write(_recipe(args).to_toml())  # plain: rich would wrap long lines and break the TOML


@command
def cmd_tricks(args: argparse.Namespace) -> None:
    from rich.markup import escape
    from rich.table import Table

    from dltricks import tricks

    if args.name:
        t = tricks.get(args.name)
        out.print(f"[bold]{escape(t.name)}[/] ({escape(t.family)})\n\n{escape(t.tip)}\n")
        out.print("on:  " + ", ".join(f"{k} = {v!r}" for k, v in t.on.items()), markup=False)
        out.print("off: " + ", ".join(f"{k} = {v!r}" for k, v in t.off.items()), markup=False)
        if t.reference:
            out.print(f"\nreference: {t.reference}", markup=False)
        return
    table = Table("family", "trick", "turns on", box=None)
    for t in sorted(tricks.catalogue().values(), key=lambda t: (t.family, t.name)):
        table.add_row(escape(t.family), f"[bold]{escape(t.name)}[/]",
                      escape(", ".join(f"{k}={v!r}" for k, v in t.on.items())))
    out.print(table)


# ---- training and the ledger ----------------------------------------------------------------------

@command
def cmd_train(args: argparse.Namespace) -> int:
    if not args.recipe and not args.resume:
        raise DltricksError("train needs a RECIPE (a bundled name or a .toml path) or --resume RUN_ID")
    if args.resume and (args.recipe or args.override):
        raise DltricksError("--resume continues a run with its own recipe; give no RECIPE or -o with it")
    recipe = _recipe(args) if args.recipe else ""  # a bad recipe fails here, before torch loads

    from dltricks.loop.training import TrainingInterrupted
    from dltricks.runner.run import train

    ledger = _ledger(args)
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


@command
def cmd_runs(args: argparse.Namespace) -> None:
    from dltricks.ledger import Ledger, sheet

    missing = Ledger.missing(args.ledger)
    if missing is not None and args.action is None:
        _no_runs(args, str(missing))  # reading an empty folder creates nothing in it
        return
    ledger = _ledger(args)
    if args.action == "diff":
        if len(args.ids) != 2:
            raise DltricksError("usage: dltricks runs diff RUN_A RUN_B")
        a, b = (ledger.get(i) for i in args.ids)
        out.print(sheet.render_diff(sheet.diff_runs(a, b)))
        return
    if args.action == "show":
        if len(args.ids) != 1:
            raise DltricksError("usage: dltricks runs show RUN_ID")
        _write(sheet.to_json([ledger.get(args.ids[0])]))
        return
    if args.action is not None:
        raise DltricksError(f"unknown runs action {args.action!r}; valid: diff, show (or none to list)")
    records = ledger.runs(study=args.study, status=args.status, name=args.name, limit=args.limit)
    if not records:
        _no_runs(args, ledger.where)
        return
    if args.format == "table":
        columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
        out.print(sheet.runs_table(records, width=out.width, columns=columns, fold=not (args.all or args.study)))
    else:
        render = {"csv": sheet.to_csv, "md": sheet.to_markdown, "json": sheet.to_json}[args.format]
        _write(render(records))


def _no_runs(args: argparse.Namespace, where: str) -> None:
    if args.format == "json":
        _write("[]")
    elif args.format == "table":
        which = " matching the filters" if (args.study or args.status or args.name) else ""
        err.print(f"no runs{which} in {where} (train one with: dltricks train RECIPE)", markup=False, soft_wrap=True)


def _write(text: str) -> None:
    """Machine-readable output as is (rich would wrap it at the terminal's width), ending in a newline."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


# ---- ablation studies ------------------------------------------------------------------------------

@command
def cmd_ablate(args: argparse.Namespace) -> int:
    from dltricks.search import local
    from dltricks.search.ablate import ablate

    if _process_entry:  # this command is the process: torch imported, nothing run, no thread pool started
        local.mark_fresh()

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


def _print_study(result) -> int:
    out.print(result.rich_table())
    for line in result.lines():
        out.print(line, markup=False, soft_wrap=True)
    for f in result.failures:
        out.print(f"[red]failed[/] {f['variant']} seed {f['seed']}: {f['reason']}", soft_wrap=True)
    out.print(f"report: {result.report['html']}", markup=False)
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
        ledger = _ledger(args)
    n = work(ledger, args.study, threads=args.threads, progress=not args.quiet)
    out.print(f"worker done: ran {n} cells of {args.study}")
    return 0


@command
def cmd_report(args: argparse.Namespace) -> int:
    from dltricks.search import trials
    from dltricks.search.ablate import report

    ledger = _ledger(args)
    if trials.is_search(ledger, args.study):  # a tune or nas study
        from dltricks.search.results import rewrite_report

        return _print_search(rewrite_report(ledger, args.study, out=args.out))
    result = report(args.study, ledger=ledger, out=args.out, rope=args.rope)
    _print_study(result)
    return 1 if result.failures else 0  # as ablate: a script must see that cells failed


# ---- tuning and architecture search -----------------------------------------------------------------

@command
def cmd_tune(args: argparse.Namespace) -> int:
    from dltricks.search.tune import tune

    result = tune(_recipe(args), space=args.space, sampler=args.sampler, trials=args.trials,
                  seeds_per_trial=args.seeds_per_trial, metric=args.metric or "",
                  objective=args.objective.split(",") if args.objective else None, pruner=args.pruner,
                  search_seed=args.search_seed, workers=args.workers, study=args.study or "",
                  rerun_seeds=args.rerun_seeds, best=args.best, ledger=args.ledger, out=args.out,
                  progress=not args.quiet)
    return _print_search(result)


@command
def cmd_nas(args: argparse.Namespace) -> int:
    from dltricks.search.nas import nas

    result = nas(_recipe(args), space=args.space, strategy=args.strategy, trials=args.trials,
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
        out.print(f"best recipe: {result.best_path} (train it: dltricks train {result.best_path})", markup=False)
    out.print(f"report: {result.report['html']}", markup=False)
    return 0


# ---- model analysis -------------------------------------------------------------------------------

@command
def cmd_ensemble(args: argparse.Namespace) -> int:
    from dltricks.methods.uncertainty import ensemble_of_runs

    run_id, m = ensemble_of_runs(_ledger(args), args.runs, progress=not args.quiet)
    shown = {k: v for k, v in m.items() if k.startswith("test_")}
    out.print(f"ensemble run [bold]{run_id}[/] of {len(args.runs)} runs: "
              + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()), soft_wrap=True)
    return 0


@command
def cmd_inspect(args: argparse.Namespace) -> None:
    from dltricks.analysis import compare_recipes, inspect_recipe
    from dltricks.recipe import Recipe

    if args.compare:
        if args.recipe:
            raise DltricksError("give either RECIPE or --compare A B, not both")
        a = Recipe.load(args.compare[0], args.override + args.override_a)
        b = Recipe.load(args.compare[1], args.override + args.override_b)
        result = compare_recipes(a, b, latency=not args.no_latency)
    else:
        if not args.recipe:
            raise DltricksError("inspect needs a RECIPE (a bundled name or a .toml path) or --compare A B")
        result = inspect_recipe(_recipe(args), latency=not args.no_latency)
    if args.json:
        import json

        _write(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        out.print(result)


@command
def cmd_advise(args: argparse.Namespace) -> None:
    from pathlib import Path

    from dltricks.analysis import advice_to_json, advise, apply_advice, render_advice

    recipe = _recipe(args)
    advice = advise(recipe)
    if args.json:
        _write(advice_to_json(advice, recipe))
    else:
        out.print(render_advice(advice, recipe))
    if args.fix:
        fixed = apply_advice(recipe, advice)
        path = Path(args.fix)
        try:
            path.write_text(fixed.to_toml())
        except OSError as e:
            raise DltricksError(f"cannot write {path}: {e.strerror or e}") from None
        n = sum(len(a.patch) for a in advice)
        (err if args.json else out).print(f"wrote {path} ({n} key{'s' if n != 1 else ''} changed)", markup=False)


# ---- compression ----------------------------------------------------------------------------------

@command
def cmd_compress(args: argparse.Namespace) -> int:
    from dltricks.compress import compress_run, variant_specs
    from dltricks.compress.report import SHOWN, format_rows

    specs = variant_specs(args.quantize, args.prune, prune_mode=args.prune_mode, prune_scope=args.prune_scope,
                          prune_steps=args.prune_steps, lottery=args.lottery, finetune_epochs=args.finetune_epochs,
                          finetune_lr_factor=args.finetune_lr_factor)
    result = compress_run(_ledger(args), args.run_id, specs, progress=not args.quiet, out=args.out)
    from rich.table import Table

    table = Table(box=None)
    for column in SHOWN:
        table.add_column(column, no_wrap=True)
    for row in format_rows(result.rows):
        table.add_row(*row)
    # a table that is read across: wider than a narrow terminal rather than squeezed into ellipses
    Console(highlight=False, width=max(out.width, 130), file=out.file).print(table)
    for f in result.failures:
        out.print(f"[red]failed[/] {f['variant']} (run {f['run']}): {f['reason']}", soft_wrap=True)
    out.print(f"report: {result.report['html']}", markup=False, soft_wrap=True)
    return 1 if result.failures else 0


# ---- the parser -----------------------------------------------------------------------------------

DESCRIPTION = """\
Deep learning tips and tricks as components that run, and experiments that measure whether
each trick helps on your task. An experiment is a recipe (TOML: data, model, train, eval);
every run is recorded with its recipe, seed, git version and results."""

START = """\
start here:
  dltricks recipes                          the bundled recipes
  dltricks train mnist1d-cnn                train one and record the run
  dltricks runs                             the sheet of runs
  dltricks ablate                           the demo study: which tricks help, with paired seeds
  dltricks COMMAND --help                   each command's options and examples"""

# examples at the end of each command's --help
EXAMPLES = {
    "ensemble": "dltricks ensemble RUN_A RUN_B RUN_C   (completed runs of one task -> an ensemble run)\n"
                "dltricks runs --name ensemble-mnist1d-mlp",
    "recipes": "dltricks recipes",
    "show": "dltricks show mnist1d-cnn\ndltricks show my.toml -o train.lr=0.01 -o model.name=resnet",
    "tricks": "dltricks tricks\ndltricks tricks label_smoothing",
    "train": "dltricks train mnist1d-cnn\ndltricks train my.toml -o train.epochs=5 -o train.lr=3e-3\n"
             "dltricks train --resume 3f2a9c   (after Ctrl-C: continues where it stopped)",
    "runs": "dltricks runs\ndltricks runs --status failed --limit 5\ndltricks runs --format csv > runs.csv\n"
            "dltricks runs diff RUN_A RUN_B\ndltricks runs show RUN_ID",
    "ablate": "dltricks ablate                                   (the bundled demo study)\n"
              "dltricks ablate mnist1d-cnn --trick label_smoothing --trick one_cycle --seeds 5 --workers 2\n"
              "dltricks ablate mnist1d-cnn --trick 'lowlr:train.lr=1e-5' --mode add\n"
              "dltricks ablate my.toml --mode cumulative --metric val_loss",
    "worker": "dltricks worker --study STUDY --storage postgresql://user@host/db",
    "tune": "dltricks tune mnist1d-cnn --trials 20 --best best.toml\n"
            "dltricks tune mnist1d-cnn --sampler gp --space train.lr=1e-4..0.1:log\n"
            "dltricks tune mnist1d-cnn --objective test_accuracy,params",
    "compress": "dltricks compress RUN_ID --quantize dynamic weight_only static\n"
                "dltricks compress RUN_ID --prune 0.5 --prune-mode structured --finetune-epochs 5 --quantize static",
    "nas": "dltricks nas mnist1d-cnn --strategy evolution --trials 30 --max-params 50000 --best arch.toml",
    "report": "dltricks report STUDY\ndltricks report STUDY --out reports/today",
    "inspect": "dltricks inspect mnist1d-cnn\n"
               "dltricks inspect --compare mnist1d-cnn mnist1d-cnn -b model.kernel_size=7 -b model.stack_3x3=true",
    "advise": "dltricks advise seg3d-unet -o train.batch_size=2\ndltricks advise my.toml --fix fixed.toml",
}


def build_parser() -> argparse.ArgumentParser:
    plain = argparse.ArgumentParser(add_help=False)  # commands that neither train nor read the ledger
    plain.add_argument("--debug", action="store_true", help="show the traceback of an error")
    ledgered = argparse.ArgumentParser(add_help=False, parents=[plain])  # commands that read the ledger
    ledgered.add_argument("--ledger", metavar="URL", default=os.environ.get("DLTRICKS_LEDGER"),
                          help="where runs are recorded: sqlite:///path or postgresql://user@host/db "
                               "(default $DLTRICKS_LEDGER, else ./dltricks-runs/ledger.db)")
    common = argparse.ArgumentParser(add_help=False, parents=[ledgered])  # commands that train
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bars")

    def recipe_args(p: argparse.ArgumentParser, required: bool = True) -> None:
        p.add_argument("recipe", nargs=None if required else "?", default="",
                       help="a bundled recipe name (see `dltricks recipes`) or a path to a .toml file")
        p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                       help="set a recipe key, e.g. -o train.lr=0.01 (TOML values)")

    parser = argparse.ArgumentParser(prog="dltricks", description=DESCRIPTION, epilog=START,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dltricks {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    sub.add_parser("recipes", parents=[plain], help="list the bundled recipes")
    p = sub.add_parser("show", parents=[plain], help="print a recipe fully resolved, as TOML")
    recipe_args(p)
    p = sub.add_parser("tricks", parents=[plain], help="list the trick catalogue, or show one trick")
    p.add_argument("name", nargs="?", help="a trick to show: its tip, its patch on and off, its reference")
    p = sub.add_parser("train", parents=[common], help="train a recipe and record the run")
    recipe_args(p, required=False)
    p.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run from its checkpoint")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the resume checkpoint (optimiser and RNG state) of a completed run; by default "
                        "only its weights stay")
    p = sub.add_parser("runs", parents=[ledgered], help="the sheet of runs; `runs diff A B`, `runs show ID`")
    p.add_argument("action", nargs="?", help="diff (two runs: recipe keys and metrics that differ) or show "
                                              "(one run, all it recorded, as JSON); none lists the runs")
    p.add_argument("ids", nargs="*", help="run ids (a unique prefix is enough)")
    p.add_argument("--format", choices=["table", "csv", "md", "json"], default="table",
                   help="table for the terminal (default), or csv, md (Markdown), json to save or parse")
    p.add_argument("--study", help="only the runs of this ablation study")
    p.add_argument("--status", choices=["running", "completed", "failed", "interrupted"],
                   help="only runs in this state")
    p.add_argument("--name", help="only runs of the recipe with this name")
    p.add_argument("--limit", type=int, help="at most this many runs, newest first")
    p.add_argument("--all", action="store_true", help="every run of a study on its own line (default: one line "
                                                      "per study)")
    p.add_argument("--columns", metavar="A,B,...", help="columns to show, e.g. id,name,status,test_accuracy,failure "
                                                        "(default: those that fit the terminal)")

    p = sub.add_parser("ablate", parents=[common], help="which tricks help on this task? paired seeds, honest stats")
    recipe_args(p, required=False)
    p.add_argument("--trick", action="append", metavar="NAME", help="a catalogue trick or NAME:key=value[,...]")
    p.add_argument("--mode", choices=["add", "remove", "factorial", "cumulative"],
                   help="add: baseline + each trick; remove: all on, each taken out; factorial: every "
                        "combination (up to 5 tricks); cumulative: tricks added one after another "
                        "(default ablate.mode, add)")
    p.add_argument("--seeds", type=_seeds, help='seeds per variant (paired across variants), or "auto": 3, then '
                                             "more in rounds only for inconclusive variants")
    p.add_argument("--max-seeds", type=_positive, help="the most seeds per variant with --seeds auto (default 10)")
    p.add_argument("--rope", type=_non_negative, help="region of practical equivalence: half-width in metric "
                                                      "units (default 0.005 for [0, 1] metrics, else 1%%)")
    p.add_argument("--workers", type=_positive, help="local worker processes (cores are split between them)")
    p.add_argument("--study", help="study name (default: recipe, mode and a hash of the sweep)")
    p.add_argument("--storage", dest="ledger", metavar="URL", help="same as --ledger: where runs and trials live")
    p.add_argument("--metric", help="metric to compare (default eval.metric, e.g. test_accuracy)")
    p.add_argument("--out", metavar="FOLDER", help="report folder (default dltricks-runs/reports/STUDY)")
    p = sub.add_parser("worker", parents=[common], help="join a study's work from this machine")
    p.add_argument("--study", required=True, help="the study to work on (its name, as `dltricks ablate` printed it)")
    p.add_argument("--storage", dest="ledger", metavar="URL", help="same as --ledger")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p = sub.add_parser("report", parents=[ledgered], help="(re)write a study's report from storage")
    p.add_argument("study", help="the study's name, as `dltricks ablate` printed it")
    p.add_argument("--storage", dest="ledger", metavar="URL", help="same as --ledger")
    p.add_argument("--out", metavar="FOLDER", help="report folder (default dltricks-runs/reports/STUDY)")
    p.add_argument("--rope", type=_non_negative, help="judge the same runs with this ROPE half-width")

    def search_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--space", action="append", metavar="KEY=SPEC",
                       help="a search dimension: train.lr=1e-4..0.1:log, 'model.norm=[\"batch\", \"group\"]' "
                            "or KEY={low = .., high = .., log = true}")
        p.add_argument("--trials", type=_positive, help="trials in the study (more on a rerun extend it)")
        p.add_argument("--seeds-per-trial", type=_positive, help="paired seeds each trial is averaged over")
        p.add_argument("--metric", help="metric to optimise (default eval.metric)")
        p.add_argument("--search-seed", type=int, help="seed of the sampler or strategy")
        p.add_argument("--workers", type=_positive, help="local worker processes")
        p.add_argument("--study", help="study name (default: recipe, kind and a hash of the search)")
        p.add_argument("--storage", dest="ledger", metavar="URL", help="same as --ledger")
        p.add_argument("--rerun-seeds", type=int, help="fresh seeds for the best vs the start recipe (0 = skip)")
        p.add_argument("--best", metavar="OUT.toml", help="write the best recipe here")
        p.add_argument("--out", help="report folder (default dltricks-runs/reports/STUDY)")

    p = sub.add_parser("tune", parents=[common], help="tune hyperparameters with Optuna over the [tune] space")
    recipe_args(p)
    search_args(p)
    p.add_argument("--sampler", choices=["random", "tpe", "gp", "cmaes", "nsga2"],
                   help="Optuna's sampler: random, tpe, gp (Gaussian process), cmaes, nsga2 (several "
                        "objectives); default the recipe's tune.sampler")
    p.add_argument("--objective", metavar="M1,M2", help="several objectives, e.g. test_accuracy,params: a Pareto front")
    p.add_argument("--pruner", choices=["median", "hyperband", "none"],
                   help="stop unpromising trials early on their validation curve (none: train every trial fully)")
    p = sub.add_parser("nas", parents=[common], help="search architectures over the model's keys within a budget")
    recipe_args(p)
    search_args(p)
    p.add_argument("--strategy", choices=["evolution", "reinforce", "random"],
                   help="how candidates are proposed: evolution (mutate the best), reinforce (a learned "
                        "controller) or random")
    p.add_argument("--max-params", type=int, help="never train a candidate with more parameters")
    p.add_argument("--max-flops", type=int, help="never train a candidate with more FLOPs (one sample)")
    p = sub.add_parser("ensemble", parents=[common], help="average completed runs of one task into an ensemble "
                                                          "run with its own metrics")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run ids (or unique prefixes), at least 2")
    p = sub.add_parser("inspect", parents=[plain], help="layer table with receptive field, params and FLOPs; "
                                                         "--compare A B side by side")
    recipe_args(p, required=False)
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two recipes side by side (-o sets a key in "
                                                                   "both, -a only in A, -b only in B)")
    p.add_argument("-a", "--override-a", action="append", default=[], metavar="KEY=VALUE",
                   help="with --compare: set a recipe key in A only")
    p.add_argument("-b", "--override-b", action="append", default=[], metavar="KEY=VALUE",
                   help="with --compare: set a recipe key in B only")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-latency", action="store_true", help="skip timing the model on the CPU")
    p = sub.add_parser("advise", parents=[plain], help="check a recipe against the tips; --fix writes the patched one")
    recipe_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--fix", metavar="OUT.toml", help="write the recipe with every advice's patch applied")
    p = sub.add_parser("compress", parents=[common], help="prune and/or quantize a finished run; size, latency "
                                                          "and accuracy side by side")
    p.add_argument("run_id", metavar="RUN_ID", help="a completed run (see `dltricks runs`); its weights are compressed")
    p.add_argument("--quantize", nargs="+", action="extend", choices=["dynamic", "static", "qat", "weight_only"],
                   help="int8 kinds to compare (several values: several variants)")
    p.add_argument("--prune", nargs="+", action="extend", type=float, metavar="FRACTION",
                   help="share of weights (or channels) to remove, in (0, 1); several values: several variants")
    p.add_argument("--prune-mode", choices=["unstructured", "structured"], default="unstructured",
                   help="unstructured: single weights (default); structured: whole channels, so the model shrinks")
    p.add_argument("--prune-scope", choices=["layer", "global"], default="layer",
                   help="layer: the same share in every layer (default); global: the smallest weights of the "
                        "whole model")
    p.add_argument("--prune-steps", type=_positive, default=1, help="iterative pruning: steps, fine-tuning after each")
    p.add_argument("--lottery", action="store_true", help="lottery ticket: rewind surviving weights to their init")
    p.add_argument("--finetune-epochs", type=int, default=0, metavar="N", help="fine-tuning after pruning (and QAT)")
    p.add_argument("--finetune-lr-factor", type=float, default=1.0, metavar="F",
                   help="fine-tuning lr = the recipe's train.lr x F, in (0, 1]")
    p.add_argument("--out", metavar="FOLDER", help="report folder (default dltricks-runs/reports/compress-RUN_ID)")
    _pages(sub)
    return parser


def _pages(sub) -> None:
    """Each command's --help: its one-line help as the description, and examples at the end."""
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name, p in sub.choices.items():
        p.description = p.description or helps.get(name)
        if name in EXAMPLES:
            p.epilog = "examples:\n" + "\n".join("  " + line for line in EXAMPLES[name].splitlines())
            p.formatter_class = argparse.RawDescriptionHelpFormatter


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return n


def _seeds(text: str) -> int | str:
    return "auto" if text.strip().lower() == "auto" else _positive(text)


def _non_negative(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (x >= 0 and x != float("inf")):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number >= 0")
    return x


def main(argv: list[str] | None = None) -> int:
    """Run one command; ``argv=None`` is the process's own command line (the ``dltricks`` script,
    ``python -m dltricks.cli``), after which the process exits."""
    global _process_entry
    _process_entry = argv is None
    try:
        return _main(argv)
    finally:
        if argv is None:
            _before_exit()


# True in a process started as `dltricks ...`; False where main() is called from Python (a test, a
# notebook) that may have run torch already
_process_entry = False


def _before_exit() -> None:
    """Move every object into the permanent generation (:func:`gc.freeze`), so that the interpreter's
    final garbage collections skip them. With torch and torch._dynamo loaded they walk some 300 000
    objects, several times over: 1-2 s of CPU at the end of every command (and of every local worker)
    on a 2-core machine, measured. Nothing is lost: the process is about to exit, and exit handlers
    still run."""
    import gc

    gc.freeze()


def _main(argv: list[str] | None) -> int:
    from dltricks import cores

    cores.look()  # before torch is imported: its seconds become the window that sizes the workers
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "quiet", False):
        os.environ["DLTRICKS_NO_PROGRESS"] = "1"
    try:
        return COMMANDS[args.command](args) or 0
    except DltricksError as e:
        if args.debug:
            raise
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as e:  # a bug, not the user's mistake: still one line, with the way to see more
        if args.debug:
            raise
        err.print(f"internal error: {type(e).__name__}: {e} (run again with --debug for the traceback)",
                  markup=False, soft_wrap=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
