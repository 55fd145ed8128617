"""What every command shares: the consoles, the command registry, the ledger and recipe from the
arguments, plain output, and the argument parsers that several commands inherit."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:  # the CLI starts fast: the ledger and the schema load when a command needs them
    from dltricks.ledger import Ledger
    from dltricks.recipe import Recipe

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

Command = Callable[[argparse.Namespace], "int | None"]
COMMANDS: dict[str, Command] = {}

# True in a process started as `dltricks ...`; False where main() is called from Python (a test, a
# notebook) that may have run torch already. Set by :func:`dltricks.cli.main.main`.
process_entry = False


def command(fn: Command) -> Command:
    """Register ``cmd_NAME`` as the command ``dltricks NAME``."""
    COMMANDS[fn.__name__.removeprefix("cmd_")] = fn
    return fn


def ledger_of(args: argparse.Namespace) -> Ledger:
    from dltricks.ledger import Ledger

    return Ledger(url=args.ledger)


def recipe_of(args: argparse.Namespace) -> Recipe:
    from dltricks.recipe import Recipe

    return Recipe.load(args.recipe, args.override)


def write(text: str) -> None:
    """Machine-readable output as is (rich would wrap it at the terminal's width), ending in a newline."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def print_line(text: str) -> None:
    """One line that must stay whole (a path to copy): never wrapped or cut at the terminal's width."""
    out.print(text, markup=False, soft_wrap=True)


# ---- argument parsing shared by the verb families ---------------------------------------------------------

@dataclass
class Parents:
    """The parent parsers a command page inherits its common options from."""

    plain: argparse.ArgumentParser  # commands that neither train nor read the ledger
    ledgered: argparse.ArgumentParser  # commands that read the ledger
    common: argparse.ArgumentParser  # commands that train


def parents() -> Parents:
    plain = argparse.ArgumentParser(add_help=False)
    plain.add_argument("--debug", action="store_true", help="show the traceback of an error")
    ledgered = argparse.ArgumentParser(add_help=False, parents=[plain])
    ledgered.add_argument("--ledger", metavar="URL", default=os.environ.get("DLTRICKS_LEDGER"),
                          help="where runs are recorded: sqlite:///path or postgresql://user@host/db "
                               "(default $DLTRICKS_LEDGER, else ./dltricks-runs/ledger.db)")
    common = argparse.ArgumentParser(add_help=False, parents=[ledgered])
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    return Parents(plain, ledgered, common)


def page(sub: argparse._SubParsersAction, name: str, parent: argparse.ArgumentParser, help: str,
         examples: str) -> argparse.ArgumentParser:
    """A command's parser and its --help page: the one-line help as its description, examples at the end."""
    return sub.add_parser(name, parents=[parent], help=help, description=help,
                          epilog="examples:\n" + "\n".join("  " + line for line in examples.splitlines()),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def recipe_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("recipe", nargs=None if required else "?", default="",
                   help="a bundled recipe name (see `dltricks recipes`) or a path to a .toml file")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="set a recipe key, e.g. -o train.lr=0.01 (TOML values)")


def whole_number(text: str, least: int) -> int:
    """An argparse type: a whole number of at least ``least``, else one line that says so."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < least:
        raise argparse.ArgumentTypeError(f"{text} must be {least} or more")
    return n


def positive(text: str) -> int:
    return whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return whole_number(text, 0)


def seeds(text: str) -> int | str:
    return "auto" if text.strip().lower() == "auto" else positive(text)


def non_negative(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (x >= 0 and x != float("inf")):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number >= 0")
    return x
