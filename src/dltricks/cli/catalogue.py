"""What there is to use: ``recipes`` (the bundled ones), ``show`` (one resolved), ``tricks`` (the catalogue)."""

from __future__ import annotations

import argparse
import sys

from dltricks.cli.common import Parents, command, out, page, recipe_args, recipe_of


def add_parsers(sub: argparse._SubParsersAction, parents: Parents) -> None:
    page(sub, "recipes", parents.plain, "list the bundled recipes", "dltricks recipes")
    p = page(sub, "show", parents.plain, "print a recipe fully resolved, as TOML",
             "dltricks show mnist1d-cnn\ndltricks show my.toml -o train.lr=0.01 -o model.name=resnet")
    recipe_args(p)
    p = page(sub, "tricks", parents.plain, "list the trick catalogue, or show one trick",
             "dltricks tricks\ndltricks tricks label_smoothing")
    p.add_argument("name", nargs="?", help="a trick to show: its tip, its patch on and off, its reference")


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
    sys.stdout.write(recipe_of(args).to_toml())  # plain: rich would wrap long lines and break the TOML


@command
def cmd_tricks(args: argparse.Namespace) -> None:
    from rich.markup import escape
    from rich.table import Table

    from dltricks import tricks

    if args.name:
        t = tricks.get(args.name)
        out.print(f"[bold]{escape(t.name)}[/] ({escape(t.family)})\n\n{escape(t.tip)}\n")
        out.print("on:  " + ", ".join(f"{k} = {v!r}" for k, v in t.on.items()), markup=False)
        out.print("off: " + (", ".join(f"{k} = {v!r}" for k, v in t.off.items()) or "the recipe's own values"),
                  markup=False)
        if t.reference:
            out.print(f"\nreference: {t.reference}", markup=False)
        return
    table = Table("family", "trick", "turns on", box=None)
    for t in sorted(tricks.catalogue().values(), key=lambda t: (t.family, t.name)):
        table.add_row(escape(t.family), f"[bold]{escape(t.name)}[/]",
                      escape(", ".join(f"{k}={v!r}" for k, v in t.on.items())))
    out.print(table)
