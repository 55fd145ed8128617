"""``dltricks evidence``: the catalogue's tips re-tested, one study per claim, one table of verdicts."""

from __future__ import annotations

import argparse

from dltricks.cli import common
from dltricks.cli.common import Parents, command, non_negative_int, out, page, positive, print_line, seeds


def add_parsers(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = page(sub, "evidence", parents.common, "re-test every tip of the catalogue: one table of verdicts",
             "dltricks evidence --quick                 (every row on tiny data, a few minutes: checks they run)\n"
             "dltricks evidence                         (the full table, seeds auto, about an hour on 2 cores)\n"
             "dltricks evidence --only group_norm_small_batch --only label_smoothing --seeds 6\n"
             "dltricks evidence --tuned 8               (each arm's learning rate tuned on validation first)\n"
             "dltricks evidence --storage postgresql://me@db/dltricks   (run it on every machine: they share cells)\n"
             "dltricks evidence --list")
    p.add_argument("--only", action="append", metavar="CLAIM", help="run this claim only (repeatable; see --list)")
    p.add_argument("--quick", action="store_true", help="tiny data, 2 seeds: checks every row runs; no verdicts "
                                                        "meant (its own table, evidence-quick/)")
    p.add_argument("--seeds", type=seeds, default="auto", help='paired seeds per arm, or "auto" (default): 3, then '
                                                             "more for undecided arms, up to each claim's limit")
    p.add_argument("--tuned", type=non_negative_int, default=0, metavar="N",
                   help="give the baseline and every arm N trials of learning-rate tuning on validation before "
                        "the seeds (default 0: the recipe's settings)")
    p.add_argument("--workers", type=positive, default=2, help="local worker processes (default 2)")
    p.add_argument("--storage", dest="ledger", metavar="URL", help="same as --ledger: where runs and studies live")
    p.add_argument("--out", metavar="FOLDER", help="the table's folder (default dltricks-runs/evidence)")
    p.add_argument("--docs", metavar="FOLDER", help="also write the docs' generated tables there (docs/evidence)")
    p.add_argument("--list", action="store_true", help="list the claims and exit")


@command
def cmd_evidence(args: argparse.Namespace) -> int:
    from dltricks.search import local
    from dltricks.search.evidence import Options, claims, evidence

    if args.list:
        for c in claims(args.only):
            print_line(f"{c.name:28} {c.family:18} {c.kind:7} {c.recipe}: {c.source or c.search.get('kind', '')}")
        return 0
    if common.process_entry:
        local.mark_fresh()
    options = Options(seeds=args.seeds, quick=args.quick, tuned=args.tuned, workers=args.workers,
                      progress=not args.quiet)
    rows = evidence(args.only, options=options, ledger=args.ledger, out=args.out, docs=args.docs)
    from dltricks.ledger.evidence import summary

    out.print(f"{len(rows)} rows; against the papers: {summary(rows)}")
    from dltricks.ledger import Ledger
    from dltricks.search.evidence.run import table_folder

    folder = table_folder(Ledger(url=args.ledger), args.out, args.quick)
    out.print(f"table: {folder / 'evidence.md'}, {folder / 'evidence.html'}")
    return 1 if any(r.verdict in ("failed", "not run") for r in rows) else 0
