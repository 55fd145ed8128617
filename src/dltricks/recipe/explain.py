"""Pydantic's validation errors as one line a user reads: the key, the bad value, what is valid."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from dltricks.errors import did_you_mean, one_of
from dltricks.recipe.section import _VARIANTS


def _schema_keys(cls: type[BaseModel], d: dict, loc: tuple) -> list[str]:
    """Valid keys at ``loc`` (for did-you-mean), following the chosen data/model variant."""
    model: type[BaseModel] | None = cls
    node: Any = d
    for part in loc:
        if model is None:
            return []
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is not None and part in _VARIANTS:  # [data] or [model]: the variant its name chose
            name = node.get(part, {}).get("name") if isinstance(node, dict) else None
            model = _VARIANTS[part].get(name, model) if isinstance(name, str) else model
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return list(model.model_fields) if model else []


def explain_errors(e: ValidationError, schema: type[BaseModel], d: dict | None = None) -> str:
    """One line per pydantic error, joined: the key, the bad value and what is valid."""
    parts = []
    for err in e.errors():
        loc = tuple(str(p) for p in err["loc"] if not isinstance(p, int))
        # the variant validator reports at the section; drop pydantic's class-name hops
        loc = tuple(p for p in loc if not p[:1].isupper() and "[" not in p)
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            valid = _schema_keys(schema, d or {}, loc[:-1])
            hint = did_you_mean(loc[-1], valid).replace("mean ", "mean " + ".".join(loc[:-1] + ("",)))
            section = ".".join(loc[:-1]) or "the top level"
            parts.append(f"unknown key {key}{hint}; valid in {section}: {one_of(valid)}")
        elif err["type"] == "missing":
            parts.append(f"missing key {key}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            msg = msg[0].lower() + msg[1:] if msg else msg
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" = {value!r}"
            if isinstance(value, dict) and "name" in value:  # a data/model variant that is not registered
                key, shown = f"{key}.name", f" = {value['name']!r}"
            parts.append(f"{key}{shown}: {msg}")
    return "; ".join(parts)
