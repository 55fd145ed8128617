"""New models from finished runs: ``ensemble`` (average runs) and ``compress`` (prune, quantize)."""

from __future__ import annotations

import argparse

from rich.console import Console

from dltricks.cli.common import Parents, command, ledger_of, out, page, positive, print_line


def add_parsers(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = page(sub, "ensemble", parents.common, "average completed runs of one task into an ensemble run with its "
                                              "own metrics",
             "dltricks ensemble RUN_A RUN_B RUN_C   (completed runs of one task -> an ensemble run)\n"
             "dltricks runs --name ensemble-mnist1d-mlp")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run ids (or unique prefixes), at least 2")
    p = page(sub, "compress", parents.common, "prune and/or quantize a finished run; size, latency and accuracy "
                                              "side by side",
             "dltricks compress RUN_ID --quantize dynamic weight_only static\n"
             "dltricks compress RUN_ID --prune 0.5 --prune-mode structured --finetune-epochs 5 --quantize static")
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
    p.add_argument("--prune-steps", type=positive, default=1, help="iterative pruning: steps, fine-tuning after each")
    p.add_argument("--lottery", action="store_true", help="lottery ticket: rewind surviving weights to their init")
    p.add_argument("--finetune-epochs", type=int, default=0, metavar="N", help="fine-tuning after pruning (and QAT)")
    p.add_argument("--finetune-lr-factor", type=float, default=1.0, metavar="F",
                   help="fine-tuning lr = the recipe's train.lr x F, in (0, 1]")
    p.add_argument("--out", metavar="FOLDER", help="report folder (default dltricks-runs/reports/compress-RUN_ID)")


@command
def cmd_ensemble(args: argparse.Namespace) -> int:
    from dltricks.methods.uncertainty import ensemble_of_runs

    run_id, m = ensemble_of_runs(ledger_of(args), args.runs, progress=not args.quiet)
    shown = {k: v for k, v in m.items() if k.startswith("test_")}
    out.print(f"ensemble run [bold]{run_id}[/] of {len(args.runs)} runs: "
              + "  ".join(f"{k} {v:.4f}" for k, v in shown.items()), soft_wrap=True)
    return 0


@command
def cmd_compress(args: argparse.Namespace) -> int:
    from dltricks.compress import compress_run, variant_specs
    from dltricks.compress.report import SHOWN, format_rows

    specs = variant_specs(args.quantize, args.prune, prune_mode=args.prune_mode, prune_scope=args.prune_scope,
                          prune_steps=args.prune_steps, lottery=args.lottery, finetune_epochs=args.finetune_epochs,
                          finetune_lr_factor=args.finetune_lr_factor)
    result = compress_run(ledger_of(args), args.run_id, specs, progress=not args.quiet, out=args.out)
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
    print_line(f"report: {result.report['html']}")
    return 1 if result.failures else 0
