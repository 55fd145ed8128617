"""Looking at a recipe before training it: ``inspect`` (layers, receptive field, cost) and ``advise``."""

from __future__ import annotations

import argparse

from dltricks.cli.common import Parents, command, err, out, page, recipe_args, recipe_of, write
from dltricks.errors import DltricksError


def add_parsers(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = page(sub, "inspect", parents.plain, "layer table with receptive field, params and FLOPs; "
                                            "--compare A B side by side",
             "dltricks inspect mnist1d-cnn\n"
             "dltricks inspect --compare mnist1d-cnn mnist1d-cnn -b model.kernel_size=7 -b model.stack_3x3=true")
    recipe_args(p, required=False)
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two recipes side by side (-o sets a key in "
                                                                   "both, -a only in A, -b only in B)")
    p.add_argument("-a", "--override-a", action="append", default=[], metavar="KEY=VALUE",
                   help="with --compare: set a recipe key in A only")
    p.add_argument("-b", "--override-b", action="append", default=[], metavar="KEY=VALUE",
                   help="with --compare: set a recipe key in B only")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-latency", action="store_true", help="skip timing the model on the CPU")
    p = page(sub, "advise", parents.plain, "check a recipe against the tips; --fix writes the patched one",
             "dltricks advise seg3d-unet -o train.batch_size=2\ndltricks advise my.toml --fix fixed.toml")
    recipe_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--fix", metavar="OUT.toml", help="write the recipe with every advice's patch applied")


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
        result = inspect_recipe(recipe_of(args), latency=not args.no_latency)
    if args.json:
        import json

        write(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        out.print(result)


@command
def cmd_advise(args: argparse.Namespace) -> None:
    from pathlib import Path

    from dltricks.analysis import advice_to_json, advise, apply_advice, render_advice

    recipe = recipe_of(args)
    advice = advise(recipe)
    if args.json:
        write(advice_to_json(advice, recipe))
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
