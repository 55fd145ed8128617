"""``dltricks init PATH``: survey a data path and write a commented starter recipe that trains on it."""

from __future__ import annotations

import argparse
import os
import shlex
import tempfile
from pathlib import Path

from dltricks.cli.common import Parents, command, out, page, print_line
from dltricks.errors import DltricksError


def add_parsers(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = page(sub, "init", parents.plain, "look at a data path (CSV, .npz, a folder of images or WAV files per "
                                         "class, NIfTI) and write a starter recipe for it",
             "dltricks init wine.csv                     writes wine.toml next to it\n"
             "dltricks init photos/ -o photos-cnn.toml   a folder with one sub-folder per class\n"
             "dltricks init table.csv --label species --force")
    p.add_argument("path", help="the data: a .csv or .npz file, or a folder of images, WAV files or NIfTI volumes")
    p.add_argument("-o", "--output", metavar="FILE", help="the recipe to write (default: PATH's name + .toml, next "
                                                           "to it)")
    p.add_argument("--force", action="store_true", help="overwrite the recipe file if it exists")
    p.add_argument("--label", default="", metavar="COLUMN", help="a CSV table's label column (default: a column "
                                                                 "named label, class, target, ..., else the last)")
    p.add_argument("--no-advice", action="store_true", help="skip the advisor (it loads the data and builds the "
                                                            "model)")


def default_output(path: Path) -> Path:
    """``data.csv`` -> ``data.toml`` beside it; a folder ``pics/`` -> ``pics.toml`` beside it."""
    stem = path.resolve().name.split(".")[0] or "data"
    return path.resolve().parent / f"{stem}.toml"


def show_survey(s) -> None:
    from dltricks.data.survey_checks import balance

    print_line(f"{s.path}: {s.what}")
    rows = [("task", s.task), ("samples", f"{s.samples}" + (f" (+ {s.test} to test)" if s.test else
                                                           " (20% will be held out to test)")),
            ("input", "x".join(map(str, s.shape)))]
    if s.classes:
        shown = ", ".join(f"{c} {n}" for c, n in list(s.classes.items())[:12])
        more = f", ... ({len(s.classes)} in all)" if len(s.classes) > 12 else ""
        unit = " voxels" if s.task == "segmentation" else ""
        rows.append(("classes", f"{len(s.classes)}{unit and ' (voxels)'}: {shown}{more}"
                                + (f"; {balance(s.classes)}" if balance(s.classes) and not unit else "")))
    rows += s.facts
    for name, text in rows:
        print_line(f"  {name:<9} {text}")
    if s.problems:
        print_line(f"  problems ({len(s.problems)}):")
        for p in s.problems:
            print_line(f"  - {p}")
    else:
        print_line("  problems: none found")


def advisor_notes(recipe_file: Path) -> tuple[list[str], str]:
    """The advisor's notes on the recipe at ``recipe_file`` (one line each), and why it could not run ("" when it
    did): the data as the recipe reads it is loaded here, so a loader's refusal is said before training."""
    from dltricks.analysis import advise
    from dltricks.recipe import Recipe

    try:
        advice = advise(Recipe.load(str(recipe_file)))
    except DltricksError as e:
        return [], str(e).replace(str(recipe_file), "the recipe")
    notes = []
    for a in advice:
        fix = ", ".join(f"{k} = {v!r}" for k, v in a.patch.items())
        notes.append(f"{a.title}: {a.evidence}" + (f" (fix: {fix})" if fix else ""))
    return notes, ""


def write_new(path: Path, text: str, force: bool) -> None:
    """Write ``text`` at ``path`` whole (a temporary file renamed over it): never half a recipe, never over a file
    that is there unless ``force``."""
    tmp = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.stem}-", suffix=".toml", delete=False)
    try:
        with tmp:
            tmp.write(text)
        if force:
            os.replace(tmp.name, path)
        else:
            try:
                os.link(tmp.name, path)  # fails where the file exists: no race with another writer
            except FileExistsError:
                raise DltricksError(f"{path} exists; give --force to overwrite it or -o FILE to write another") \
                    from None
    finally:
        Path(tmp.name).unlink(missing_ok=True)


@command
def cmd_init(args: argparse.Namespace) -> None:
    from dltricks.data.starter import starter_recipe
    from dltricks.data.survey import survey

    target = Path(args.output).expanduser() if args.output else default_output(Path(args.path).expanduser())
    if not target.name.endswith(".toml"):
        raise DltricksError(f"-o {args.output}: a recipe file ends in .toml (e.g. {target.name}.toml)")
    if target.exists() and not args.force:
        raise DltricksError(f"{target} exists; give --force to overwrite it or -o FILE to write another")
    if not target.parent.is_dir():
        raise DltricksError(f"-o {args.output}: no folder {target.parent}")
    if not os.access(target.parent, os.W_OK):
        raise DltricksError(f"cannot write in {target.parent}: give -o FILE in a folder you can write to")
    s = survey(args.path, args.label)
    show_survey(s)
    said = "dltricks init " + " ".join(shlex.quote(a) for a in [args.path] + (["--label", args.label]
                                                                              if args.label else []))
    advice: list[str] | None = None
    if not args.no_advice:
        # the advisor reads a recipe file: a draft beside the target, so relative paths resolve as they will
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".dltricks-init-") as tmp:
            draft = Path(tmp) / target.name
            draft.write_text(starter_recipe(s, draft, None, said))
            advice, failed = advisor_notes(draft)
        if failed:
            s.problems.append(f"dltricks cannot read the data as the recipe says: {failed}")
            print_line(f"  - {s.problems[-1]}")
            advice = None
        else:
            for note in advice:
                print_line(f"  advice: {note}")
    write_new(target, starter_recipe(s, target, advice, said), args.force)
    shown = os.path.relpath(target) if not os.path.relpath(target).startswith("..") else str(target)
    out.print(f"wrote {shown}", markup=False, soft_wrap=True)
    print_line(f"next: dltricks train {shlex.quote(shown)}")
