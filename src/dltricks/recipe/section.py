"""The base of every recipe section, and the registry of the data and model variants.

Datasets and models each own a section schema; they register it here with :func:`register_section`
so that the recipe package stays free of torch and knows nothing else."""

from __future__ import annotations

import importlib
from typing import Literal

from pydantic import BaseModel, ConfigDict

# Marks a key whose value is a file or folder: ``Field(..., json_schema_extra=PATH)``. In a recipe file
# such a key is taken relative to that file's folder, and the resolved recipe holds the absolute path.
PATH = {"dltricks_path": True}
# Marks a key that holds the folder of the recipe file that names the section (set when the file is read, if
# the key is not given): where a user's module named by import path (``name = "module:function"``) is looked for.
RECIPE_DIR = {"dltricks_recipe_dir": True}


class Section(BaseModel):
    """A recipe section: unknown keys are errors, assignments are validated."""

    # allow_inf_nan=False: no key wants an infinite or NaN value, and JSON/TOML could not store one
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(),
                              allow_inf_nan=False)



# Section variants, filled by data/ and nn/ when they import: {"data": {"mnist1d": Mnist1dSpec}, ...}.
_VARIANTS: dict[str, dict[str, type[Section]]] = {"data": {}, "model": {}}


def register_section(section: Literal["data", "model"], name: str, spec: type[Section]) -> None:
    """Make ``[section] name = NAME`` validate against ``spec`` (a DataSpec/ModelSpec subclass)."""
    _VARIANTS[section][name] = spec



# The schema of a section whose name is an import path "module:attribute" (the user's own data function or
# model), per section; registered like a variant by the package that loads it.
_IMPORTED: dict[str, type[Section]] = {}


def register_imported(section: Literal["data", "model"], spec: type[Section]) -> None:
    """Make ``[section] name = "module:attribute"`` validate against ``spec``."""
    _IMPORTED[section] = spec


def variant_spec(section: str, name: object) -> type[Section] | None:
    """The schema of ``[section] name = NAME``: a registered variant, else the import-path schema for a name
    with a colon; None when there is none."""
    if not isinstance(name, str):
        return None
    spec = _VARIANTS[section].get(name)
    if spec is None and ":" in name:
        spec = _IMPORTED.get(section)
    return spec


def plugins_loaded() -> None:
    """Import the packages whose imports fill the registries, so that a Recipe works on its own."""
    for pkg in ("dltricks.data", "dltricks.nn"):
        importlib.import_module(pkg)
