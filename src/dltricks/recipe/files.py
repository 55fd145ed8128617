"""TOML in: bundled recipes, recipe files, their ``base`` chain, and keys that name files."""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from dltricks.errors import DltricksError, did_you_mean, one_of
from dltricks.recipe.guide import data_kind, not_a_recipe
from dltricks.recipe.model import locate_model
from dltricks.recipe.overrides import switched
from dltricks.recipe.section import plugins_loaded, variant_spec


class RecipeNotFound(DltricksError):
    """No recipe file (``path``) or bundled recipe of that name (the ``base`` that names it says where)."""

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


class NotARecipe(RecipeNotFound):
    """A folder or a data file where a recipe was expected."""


def bundled_recipes() -> dict[str, str]:
    """Bundled recipe names and their one-line description (the TOML's first comment)."""
    out = {}
    for f in sorted(resources.files("dltricks.recipes").iterdir(), key=lambda p: p.name):
        if f.name.endswith(".toml"):
            first = f.read_text().splitlines()[0] if f.read_text() else ""
            out[f.name[:-5]] = first.lstrip("# ").strip() if first.startswith("#") else ""
    return out


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DltricksError(f"{source}: invalid TOML: {e}") from None


def load_tree(ref: str, seen: tuple[tuple[str, str], ...], relative_to: Path | None = None
               ) -> tuple[dict, str]:
    """The recipe dict for a name or path with its ``base`` chain merged in (file wins over base).
    ``seen`` holds (resolved path or bundled name, display name) of the recipes that led here."""
    path = Path(ref).expanduser()
    path = path if relative_to is None or path.is_absolute() else relative_to / path
    if path.is_file() and data_kind(path):
        raise NotARecipe(not_a_recipe(path, ref))
    if ref.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise RecipeNotFound(f"recipe file not found: {path}", path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise DltricksError(f"cannot read recipe {path}: {e}") from None
        source, here, key = str(path), path.parent, str(path.resolve())
    else:
        names = bundled_recipes()
        if ref not in names and path.is_dir():
            raise NotARecipe(not_a_recipe(path, ref))
        if ref not in names:
            raise RecipeNotFound(f"no recipe file or bundled recipe named {ref!r}{did_you_mean(ref, names)}; "
                                 f"bundled: {one_of(names)}")
        text = (resources.files("dltricks.recipes") / f"{ref}.toml").read_text()
        source, here, key = f"{ref} (bundled)", None, f"{ref} (bundled)"
    if key in (k for k, _ in seen):
        chain = " -> ".join([s for _, s in seen] + [source])
        raise DltricksError(f"{source}: base recipes form a cycle: {chain}")
    d = _read_toml(text, source)
    if here is not None and "name" not in d:
        d["name"] = path.stem  # a file's runs carry its own name, never its base's
    base = d.pop("base", None)
    if base is None:
        if here is not None:
            absolute_paths(d, here)
        return d, source
    if not isinstance(base, str):
        raise DltricksError(f"{source}: base must be a recipe name or path, got {base!r}")
    try:
        parent, _ = load_tree(base, seen + ((key, source),), here)
    except RecipeNotFound as e:  # name the recipe and its key: the user's mistake is in this file
        what = f"no recipe file {e.path.resolve()}" if e.path is not None else str(e)
        raise DltricksError(f"{source}: base = {base!r}: {what}") from None
    if here is not None:
        absolute_paths(d, here, inherited=parent)
    return _merge(parent, d), source


def absolute_paths(d: dict, folder: Path, inherited: dict | None = None) -> None:
    """Make the relative file and folder keys (those marked :data:`PATH`) of ``d``'s data and model
    sections absolute, relative to ``folder``: a recipe with its data beside it runs from anywhere."""
    plugins_loaded()
    for section in ("data", "model"):
        table = d.get(section)
        if not isinstance(table, dict):
            continue
        name = table.get("name", (inherited or {}).get(section, {}).get("name"))
        if section == "model" and "name" in table:
            locate_model(table, folder)  # "module:attr": found beside this file (or where -o was typed)
        spec = variant_spec(section, name)
        for key, f in (spec.model_fields.items() if spec else ()):
            value = table.get(key)
            if (f.json_schema_extra or {}).get("dltricks_recipe_dir") and "name" in table and not value:
                table[key] = str(folder.resolve())
            if (f.json_schema_extra or {}).get("dltricks_path") and isinstance(value, str) and value:
                p = Path(value).expanduser()
                table[key] = str(p if p.is_absolute() else (folder / p).resolve())



def _merge(base: dict, top: dict) -> dict:
    """Deep-merge ``top`` over ``base``. A data or model section whose ``name`` changes starts afresh
    (see :func:`switched`): a resnet does not inherit a cnn's keys."""
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            if "name" in v and v["name"] != out[k].get("name"):
                out[k] = _merge(switched(k, out[k]), v) if k in ("data", "model") else copy.deepcopy(v)
            else:
                out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out

