"""What a path given as a recipe is when it is not one (a folder, a data file), and how to start a recipe
that names it: ``dltricks init PATH`` where it can survey that data, else what to do first. Each answer is one
line: the CLI prints it as the error."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

# what a file is, by its suffix (the longest first: data.nii.gz)
DATA_FILES = {
    ".nii.gz": "a NIfTI volume", ".nii": "a NIfTI volume",
    ".csv": "a CSV table", ".tsv": "a table", ".parquet": "a table", ".xlsx": "a spreadsheet",
    ".npz": "NumPy arrays", ".npy": "a NumPy array",
    ".png": "an image", ".jpg": "an image", ".jpeg": "an image", ".bmp": "an image", ".tif": "an image",
    ".tiff": "an image", ".gif": "an image", ".webp": "an image",
    ".wav": "a sound file", ".flac": "a sound file", ".mp3": "a sound file", ".ogg": "a sound file",
}
# what a folder of such files is, by the kind most of its files are
_FOLDERS = {"a NIfTI volume": "NIfTI volumes", "an image": "images", "a sound file": "sound files",
            "a CSV table": "CSV tables", "a table": "tables", "NumPy arrays": "NumPy arrays",
            "a NumPy array": "NumPy arrays", "a spreadsheet": "spreadsheets"}
_LOOK_AT = 500  # entries looked at in a folder and its sub-folders: enough to say what it holds, fast on any


def data_kind(path: Path) -> str:
    """``"a CSV table"`` for ``data.csv``; "" for a file of no known data kind."""
    name = path.name.lower()
    return next((kind for suffix, kind in DATA_FILES.items() if name.endswith(suffix)), "")


def folder_contents(folder: Path) -> tuple[list[str], str, bool, str]:
    """The recipe files directly in ``folder``, the kind of data files most of it holds (here and one
    level down; "" when none), whether those sit in sub-folders (one per class, as images do), and the
    first file of that kind directly in ``folder`` ("" when none)."""
    recipes, kinds, nested, seen, first = [], {}, False, 0, {}
    try:
        with os.scandir(folder) as top:
            for entry in top:
                seen += 1
                if seen > _LOOK_AT:
                    break
                if entry.is_file() and entry.name.endswith(".toml"):
                    recipes.append(entry.name)
                elif entry.is_file() and (kind := data_kind(Path(entry.name))):
                    kinds[kind] = kinds.get(kind, 0) + 1
                    first.setdefault(kind, entry.name)
                elif entry.is_dir() and not entry.name.startswith("."):
                    with os.scandir(entry.path) as inner:
                        for sub in inner:
                            seen += 1
                            if seen > _LOOK_AT:
                                break
                            if sub.is_file() and (kind := data_kind(Path(sub.name))):
                                kinds[kind] = kinds.get(kind, 0) + 1
                                nested = True
    except OSError:
        pass
    kind = max(kinds, key=kinds.get) if kinds else ""
    return sorted(recipes), kind, nested, first.get(kind, "")


def _recipe_for(kind: str, ref: str) -> tuple[list[str], str]:
    """The lines of a starter recipe that names the data at ``ref`` (as the user typed it), and a note on
    what must happen first where dltricks cannot read that kind itself."""
    path = json.dumps(ref)  # a TOML basic string
    if kind == "a CSV table":
        return ["[data]", 'name = "csv"', f"path = {path}", 'label_column = "label"', "[model]", 'name = "mlp"'], ""
    if kind == "NumPy arrays":
        return ["[data]", 'name = "npz"', f"path = {path}", "[model]", 'name = "mlp"'], ""
    if kind == "a NIfTI volume":
        folder = Path(ref) if Path(ref).is_dir() else Path(ref).parent
        # the dataset's root holds imagesTr/ and labelsTr/: a volume or a folder of them sits one level down
        root = json.dumps(str(folder.parent if folder.name in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
                              or not Path(ref).is_dir() else folder))
        return (["[data]", 'name = "nifti"', f"root = {root}", "[model]", 'name = "unet"'],
                "dltricks reads NIfTI from a dataset folder holding imagesTr/ and labelsTr/ (imagesTs/, "
                "labelsTs/ to test): lay them out so")
    npz = json.dumps(str(Path(ref).with_suffix("")) + ".npz" if Path(ref).is_file() else ref.rstrip("/") + ".npz")
    first = "save it as a CSV (a header row, a label column) or an .npz of arrays x and y"
    return ["[data]", 'name = "npz"', f"path = {npz}", "[model]", 'name = "mlp"'], first


def init_output(ref: str) -> str:
    """The recipe ``dltricks init REF`` writes by default, as the user would type it: ``data.csv`` ->
    ``data.toml``, a folder ``pics/`` -> ``pics.toml``, each beside the data."""
    path = Path(ref.rstrip("/") or ".")
    stem = path.resolve().name.split(".")[0] or "data"
    return str(path.parent / f"{stem}.toml")


def _initable(kind: str, ref: str) -> str:
    """The path to give ``dltricks init`` for the data at ``ref`` ("" where it surveys no such thing): a table or
    arrays, a folder of images or sound files in class folders, a NIfTI dataset folder (or a file in one)."""
    path = Path(ref)
    if kind in ("a CSV table", "NumPy arrays") and path.is_file():
        return ref
    if kind in ("an image", "a sound file") and path.is_dir() and folder_contents(path)[2]:
        return ref  # files in sub-folders: one per class
    if kind == "a NIfTI volume":
        folder = path if path.is_dir() else path.parent
        root = folder.parent if folder.name in ("imagesTr", "labelsTr", "imagesTs", "labelsTs") else folder
        if (root / "imagesTr").is_dir() and (root / "labelsTr").is_dir():
            return ref if root == path else str(root)
    return ""


def how_to_start(ref: str, kind: str) -> str:
    """How to train on the data at ``ref``: ``dltricks init`` where it can look at that data and write the
    recipe, else a recipe to paste and what must happen first. The one place that says so."""
    start = _initable(kind, ref)
    if start:
        out = init_output(start)
        n, stem = 2, out[: -len(".toml")]
        while Path(out).exists():  # init never overwrites a file: name one that is not there
            out, n = f"{stem}-{n}.toml", n + 1
        flag = "" if out == init_output(start) else f" -o {shlex.quote(out)}"
        return (f"`dltricks init` looks at it and writes a commented recipe: dltricks init {shlex.quote(start)}{flag}"
                f" && dltricks train {shlex.quote(out)}")
    if kind in ("an image", "a sound file"):
        what = "images (PNG, JPEG, BMP, TIFF)" if kind == "an image" else "WAV files"
        convert = ", converted to WAV," if kind == "a sound file" and not ref.lower().endswith(".wav") else ""
        return (f"dltricks reads {what} from a folder with one sub-folder per class (FOLDER/CLASS/FILE): lay "
                f"them out so{convert} then run: dltricks init FOLDER && dltricks train FOLDER.toml")
    lines, first = _recipe_for(kind, ref)
    stem = Path(ref.rstrip("/")).name.split(".")[0] or "mine"
    out = f"{stem}.toml"
    n = 2
    while Path(out).exists():  # never tell the user to overwrite a file they have
        out, n = f"{stem}-{n}.toml", n + 1
    write = " ".join(shlex.quote(line) for line in lines)
    then = f"{first}, then write" if first else "to train on it, write"
    return f"{then} a recipe that names it: printf '%s\\n' {write} > {out} && dltricks train {out}"


def not_a_recipe(path: Path, ref: str) -> str:
    """The one-line error for an existing folder or a data file given where a recipe was expected."""
    if path.is_dir():
        recipes, kind, nested, example = folder_contents(path)
        if recipes:
            shown = ", ".join(str(Path(ref) / r) for r in recipes[:3]) + (", ..." if len(recipes) > 3 else "")
            return (f"{ref} is a folder, not a recipe: give a recipe file in it ({shown}) or a bundled recipe "
                    f"name (see: dltricks recipes)")
        if kind:
            what = _FOLDERS.get(kind, "data") + (" in sub-folders" if nested else "")
            # a table or arrays is one file: the recipe names one of them, not the folder
            named = str(Path(ref) / example) if example and kind in ("a CSV table", "NumPy arrays") else ref
            return f"{ref} is a folder of {what}, not a recipe; " + how_to_start(named, kind)
        return (f"{ref} is a folder, not a recipe: give a .toml recipe file or a bundled recipe name "
                f"(see: dltricks recipes)")
    kind = data_kind(path)
    return f"{ref} is {kind}, not a recipe; " + how_to_start(ref, kind)
