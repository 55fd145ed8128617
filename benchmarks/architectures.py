"""Architecture choice on MNIST-1D: every bundled mnist1d architecture recipe, trained as a user would.

Each recipe (``mnist1d-mlp``, ``mnist1d-cnn``, ``mnist1d-gru``, ``mnist1d-transformer``) is trained once with
``dltricks.train`` into a throwaway ledger, on ``--threads`` CPU threads (default 2), one after another so
that they share the machine alike. The table gives test accuracy, parameters, FLOPs of one forward pass per
sample (torch's flop counter, through ``dltricks.analysis.cost``), epochs and wall time of training, next to
the MNIST-1D paper's figures (Greydanus & Kobak 2020: MLP 68%, CNN 94%, GRU 91%). It is the README's table
"Architecture choice on MNIST-1D":

    python benchmarks/architectures.py                     # prints the Markdown table
    python benchmarks/architectures.py --out table.md      # and writes it
    python benchmarks/architectures.py --epochs 2          # a quick check that every recipe runs

Wall times are of one shared 2-core machine: compare them with each other, not with another machine's.
On a machine that other processes keep busy, use ``--threads 1``: two torch threads then wait on each
other and small models train several times slower.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

RECIPES = ["mnist1d-mlp", "mnist1d-cnn", "mnist1d-gru", "mnist1d-transformer"]
PAPER = {"mnist1d-mlp": "68%", "mnist1d-cnn": "94%", "mnist1d-gru": "91%", "mnist1d-transformer": "-"}


def measure(name: str, threads: int, epochs: int | None, ledger) -> dict:
    from dltricks.analysis import cost
    from dltricks.analysis.inspect import data_info
    from dltricks.nn import build_model
    from dltricks.recipe import Recipe
    from dltricks.runner.run import train

    overrides = [f"train.threads={threads}"] + ([f"train.epochs={epochs}"] if epochs else [])
    recipe = Recipe.load(name, overrides)
    info = data_info(recipe)
    flops = cost(build_model(recipe.model, info.in_shape, info.num_classes), info.in_shape, latency=False).flops
    result = train(recipe, ledger=ledger, progress=False)
    m = result.metrics
    return {"recipe": name, "model": _describe(recipe), "accuracy": m["test_accuracy"], "params": m["params"],
            "flops": flops, "epochs": int(m["epochs"]), "seconds": m["wall_time_s"]}


def _describe(recipe) -> str:
    md = recipe.model
    if md.name == "mlp":
        return f"MLP {'-'.join(map(str, md.hidden))}, dropout {md.dropout:g}"
    if md.name == "cnn":
        return f"CNN {'-'.join(map(str, md.channels))}, {md.norm} norm"
    if md.name == "rnn":
        return f"{'bidirectional ' if md.bidirectional else ''}{md.cell.upper()} {md.hidden}"
    if md.name == "transformer":
        return f"transformer d{md.d_model} x{md.num_layers}, patches of {md.patch_size}"
    return md.name


def table(rows: list[dict], threads: int) -> str:
    from dltricks.analysis.cost import human

    cores = f"{threads} thread{'s' if threads != 1 else ''}"
    lines = [f"| recipe | model | test accuracy | paper | params | FLOPs | epochs | time ({cores}) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| `{r['recipe']}` | {r['model']} | {r['accuracy']:.1%} | {PAPER.get(r['recipe'], '-')} | "
                     f"{human(r['params'])} | {human(r['flops'])} | {r['epochs']} | {r['seconds']:.0f} s |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads per run (default 2)")
    ap.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs (a quick check)")
    ap.add_argument("--recipes", nargs="+", default=RECIPES, help="recipes to train (default: all four)")
    ap.add_argument("--out", help="also write the Markdown table to this file")
    args = ap.parse_args(argv)
    os.environ.setdefault("DLTRICKS_NO_PROGRESS", "1")
    from dltricks.ledger import Ledger

    with tempfile.TemporaryDirectory(prefix="dltricks-arch-") as home:
        ledger = Ledger(f"sqlite:///{home}/ledger.db", root=home)
        rows = []
        for name in args.recipes:
            rows.append(measure(name, args.threads, args.epochs, ledger))
            r = rows[-1]
            print(f"{name}: {r['accuracy']:.4f} in {r['seconds']:.0f} s", file=sys.stderr, flush=True)
    text = table(rows, args.threads)
    sys.stdout.write(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
