"""Dotted keys: ``-o key=value`` overrides, get and set by path, and a switch of dataset or model."""

from __future__ import annotations

import copy
import tomllib
from typing import Any

from dltricks.errors import DltricksError
from dltricks.recipe.data import DataSpec
from dltricks.recipe.model import ModelSpec

SWITCHES = ("data.name", "model.name")


def switched(section: str, old: dict) -> dict:
    """What a data or model section keeps when its ``name`` changes, in a file or by ``-o``: the keys
    every dataset (``val_fraction``, ``augment``) or every model (``dropout``) has; the rest starts
    from the new one's defaults. (An MLP's ``hidden = [100, 100]`` means nothing to an RNN.)"""
    common = (DataSpec if section == "data" else ModelSpec).model_fields
    return {k: copy.deepcopy(v) for k, v in old.items() if k in common and k != "name"}



def parse_override(item: str) -> tuple[str, Any]:
    """``"train.lr=0.1"`` -> ``("train.lr", 0.1)``. Values are TOML (``true``, ``[1, 2]``, ``"x"``);
    anything that is not valid TOML is taken as a bare string (``data.name=digits``)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise DltricksError(f"override {item!r} must look like key=value, e.g. train.lr=0.01")
    try:
        parsed = tomllib.loads(f"v = {raw.strip()}")
    except tomllib.TOMLDecodeError:
        return key, raw.strip()
    if list(parsed) != ["v"]:  # "1\nb = 2" is valid TOML but not one value: keep the text
        return key, raw.strip()
    return key, parsed["v"]


def set_key(d: dict, key: str, value: Any) -> str:
    """``set_dotted``, except that a new ``data.name`` or ``model.name`` starts that section afresh, as in
    a file (:func:`switched`). Returns a note on such a switch (for an error that follows), else ""."""
    note = ""
    if key in SWITCHES:
        section = key.split(".")[0]
        old = d.get(section)
        if isinstance(old, dict) and value != old.get("name"):
            d[section] = switched(section, old)
            kept = ", ".join(f"{section}.{k}" for k in d[section]) or "none"
            note = (f"{key} changed from {old.get('name')!r} to {value!r}: the {section} section starts from "
                    f"{value!r}'s defaults, keeping only {kept}")
    set_dotted(d, key, value)
    return note


def set_dotted(d: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = d
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise DltricksError(f"cannot set {key}: {p} is a value, not a section")
        node = child
    node[leaf] = value


def get_dotted(d: dict, key: str) -> Any:
    node: Any = d
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            raise DltricksError(f"no recipe key {key}")
        node = node[p]
    return node

