"""The user's own code by import path, ``"module:attr"`` (``"my_models:TinyNet"``, ``"pkg.sub:load"``).

The module is looked for in the given folders first (the recipe file's folder, then the current
directory), then on ``sys.path``. Locating never runs the user's code; importing does. Bottom layer: it
imports nothing of dltricks but its errors, so that recipe/, data/ and nn/ can all use it.

    where = locate("my_models:TinyNet", [Path("recipes"), Path.cwd()])   # Located(folder, file)
    TinyNet = import_attr("my_models:TinyNet", where.folder)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dltricks.errors import DltricksError

__all__ = ["Located", "file_sha256", "import_attr", "is_import_path", "last_line", "locate", "split_ref"]

_REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_import_path(ref: object) -> bool:
    """``"module:attr"`` (a colon): the user's code, not a bundled name."""
    return isinstance(ref, str) and ":" in ref


def split_ref(ref: str, what: str = "name") -> tuple[str, str]:
    """``"pkg.mod:Attr"`` -> ``("pkg.mod", "Attr")``; one line naming the key when it is malformed."""
    if not _REF.match(ref):
        raise DltricksError(f"{what} = {ref!r}: an import path looks like 'module:attr' (e.g. 'my_models:TinyNet',"
                            " a module file my_models.py beside the recipe defining TinyNet)")
    module, attr = ref.split(":")
    return module, attr


@dataclass(frozen=True)
class Located:
    """Where a module was found: the folder that holds its top-level package or file (what goes on
    ``sys.path``), and the source file of the module itself (None for a namespace package)."""

    folder: Path
    file: Path | None


def _file_in(folder: Path, module: str) -> Path | None:
    """``folder/a/b.py`` or ``folder/a/b/__init__.py`` for module ``a.b``, by the filesystem alone."""
    base = folder.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def locate(ref: str, folders: Iterable[Path], what: str = "name") -> Located:
    """Where ``ref``'s module lives: the first of ``folders`` holding it, else ``sys.path``."""
    module, _ = split_ref(ref, what)
    top = module.split(".")[0]
    for folder in folders:
        folder = Path(folder).resolve()
        if _file_in(folder, top) is not None or _file_in(folder, module) is not None:
            return Located(folder, _file_in(folder, module))
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        searched = ", ".join(dict.fromkeys(str(Path(f).resolve()) for f in folders))
        raise DltricksError(f"{what} = {ref!r}: no module {top!r} in {searched or 'no folder'} or on sys.path "
                            f"(put {top}.py beside the recipe, or install it)")
    if spec.submodule_search_locations:  # a package: its folder's parent is what sys.path holds
        folder = Path(list(spec.submodule_search_locations)[0]).parent
    elif spec.origin and spec.origin not in ("built-in", "frozen"):
        folder = Path(spec.origin).parent
    else:
        return Located(Path(sys.prefix), None)
    return Located(folder.resolve(), _file_in(folder, module))


def file_sha256(path: Path | None) -> str:
    """The sha256 of a file's bytes ("" without a file)."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None and path.is_file() else ""


def last_line(e: BaseException) -> str:
    """``Type: message`` of an error raised in the user's code, and where in their file it was raised."""
    import traceback

    tb = traceback.extract_tb(e.__traceback__)
    at = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb) if "dltricks" not in f.filename), "")
    if isinstance(e, SyntaxError) and e.filename:
        at = f"{Path(e.filename).name}:{e.lineno}"
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}" + (f" ({at})" if at else "")


def import_attr(ref: str, folder: str | Path | None = None, what: str = "name") -> Any:
    """Import ``module:attr`` with ``folder`` first on ``sys.path`` (as running a script there would, so
    that the module's own sibling imports work). A module already imported from another file (two recipe
    folders, one module name) or edited since is imported afresh. Errors: one line, the import error's
    last line included."""
    module, attr = split_ref(ref, what)
    if folder:
        folder = str(Path(folder).resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
        wanted = _file_in(Path(folder), module)
        loaded = sys.modules.get(module)
        if loaded is not None and wanted is not None and (
                Path(getattr(loaded, "__file__", "") or "").resolve() != wanted.resolve()
                or getattr(loaded, "__dltricks_sha256__", None) not in (None, file_sha256(wanted))):
            for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
                del sys.modules[name]
        importlib.invalidate_caches()
    # no __pycache__ in the user's folder: it would make their repository dirty for every later run
    writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # the user's module: any error in it is theirs to see, in one line
        raise DltricksError(f"{what} = {ref!r}: cannot import {module}: {last_line(e)}") from None
    finally:
        sys.dont_write_bytecode = writes
    if getattr(mod, "__file__", None):
        try:
            mod.__dltricks_sha256__ = file_sha256(Path(mod.__file__))  # type: ignore[attr-defined]
        except OSError:
            pass
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(mod) if not n.startswith("_"))
            raise DltricksError(f"{what} = {ref!r}: module {module} ({getattr(mod, '__file__', '?')}) has no "
                                f"{attr!r}; it defines: {', '.join(names[:12]) or 'nothing public'}")
        obj = getattr(obj, part)
    return obj
