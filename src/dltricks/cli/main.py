"""The ``dltricks`` parser and entry point: each verb family adds its own pages and commands.

A user's mistake prints one line and exits 2; a failed run exits 1; Ctrl-C exits 130 after saving.
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os

from dltricks import __version__
from dltricks.cli import (analysis, catalogue, common, evidence, export, init, launch, lrfind, models, runs, studies,
                          train)
from dltricks.cli.common import COMMANDS, err
from dltricks.errors import DltricksError

# the order of the command list in --help
FAMILIES = (catalogue, init, train, runs, studies, evidence, launch, models, analysis, lrfind, export)

DESCRIPTION = """\
Deep learning tips and tricks as components that run, and experiments that measure whether
each trick helps on your task. An experiment is a recipe (TOML: data, model, train, eval);
every run is recorded with its recipe, seed, git version and results."""

START = """\
start here:
  dltricks recipes                          the bundled recipes
  dltricks train mnist1d-cnn                train one and record the run
  dltricks init DATA                        a starter recipe for your data (CSV, .npz, image or WAV folders)
  dltricks runs                             the sheet of runs
  dltricks ablate                           the demo study: which tricks help, with paired seeds
  dltricks COMMAND --help                   each command's options and examples"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dltricks", description=DESCRIPTION, epilog=START,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"dltricks {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    parents = common.parents()
    for family in FAMILIES:
        family.add_parsers(sub, parents)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; ``argv=None`` is the process's own command line (the ``dltricks`` script,
    ``python -m dltricks.cli``), after which the process exits."""
    common.process_entry = argv is None
    try:
        return _main(argv)
    finally:
        if argv is None:
            _before_exit()


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
