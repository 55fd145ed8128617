"""The ledger's sheet: ``dltricks runs`` (list, ``diff A B``, ``show ID``)."""

from __future__ import annotations

import argparse

from dltricks.cli.common import Parents, command, err, ledger_of, out, page, write
from dltricks.cli.export import add_runs_export_args, runs_export
from dltricks.errors import DltricksError


def add_parsers(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = page(sub, "runs", parents.ledgered, "the sheet of runs; `runs diff A B`, `runs show ID`",
             "dltricks runs\ndltricks runs --status failed --limit 5\ndltricks runs --format csv > runs.csv\n"
             "dltricks runs diff RUN_A RUN_B\ndltricks runs show RUN_ID\n"
             "dltricks runs export --tensorboard tb/ --mlflow file:///tmp/mlruns [--study S] [RUN_ID ...]")
    p.add_argument("action", nargs="?", help="diff (two runs: recipe keys and metrics that differ) or show "
                                              "(one run, all it recorded, as JSON), export (to TensorBoard, "
                                              "MLflow); none lists the runs")
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
    add_runs_export_args(p)


@command
def cmd_runs(args: argparse.Namespace) -> None:
    from dltricks.ledger import Ledger, sheet

    if args.action == "export":  # before the ledger is opened: exporting from no ledger creates none
        runs_export(args)
        return
    missing = Ledger.missing(args.ledger)
    if missing is not None and args.action is None:
        _no_runs(args, str(missing))  # reading an empty folder creates nothing in it
        return
    ledger = ledger_of(args)
    if args.action == "diff":
        if len(args.ids) != 2:
            raise DltricksError("usage: dltricks runs diff RUN_A RUN_B")
        a, b = (ledger.get(i) for i in args.ids)
        out.print(sheet.render_diff(sheet.diff_runs(a, b)))
        return
    if args.action == "show":
        if len(args.ids) != 1:
            raise DltricksError("usage: dltricks runs show RUN_ID")
        write(sheet.to_json([ledger.get(args.ids[0])]))
        return
    if args.action is not None:
        raise DltricksError(f"unknown runs action {args.action!r}; valid: diff, show, export (or none to list)")
    records = ledger.runs(study=args.study, status=args.status, name=args.name, limit=args.limit)
    if not records:
        _no_runs(args, ledger.where)
        return
    if args.format == "table":
        columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
        out.print(sheet.runs_table(records, width=out.width, columns=columns, fold=not (args.all or args.study)))
    else:
        render = {"csv": sheet.to_csv, "md": sheet.to_markdown, "json": sheet.to_json}[args.format]
        write(render(records))


def _no_runs(args: argparse.Namespace, where: str) -> None:
    if args.format == "json":
        write("[]")
    elif args.format == "table":
        which = " matching the filters" if (args.study or args.status or args.name) else ""
        err.print(f"no runs{which} in {where} (train one with: dltricks train RECIPE)", markup=False, soft_wrap=True)
