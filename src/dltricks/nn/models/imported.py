"""The user's own model by import path: ``[model] name = "my_models:TinyNet"``, other keys its keyword
arguments; ``in_shape`` (one sample's shape, e.g. (C, L)) and ``num_classes`` (the head's width) are passed
when the class or factory takes them by name.

    model = build_imported(spec, in_shape=(1, 40), num_classes=10)   # an nn.Module
    accepted_keywords(spec)   # ({"width", "depth", ...}, takes_any) - what a trick may patch

In-process, ``@register_model("tiny", TinySpec)`` is the other way (see :mod:`.registry`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from dltricks.errors import DltricksError
from dltricks.imports import file_sha256, import_attr, locate
from dltricks.recipe import UserModelSpec

__all__ = ["accepted_keywords", "build_imported", "keyword_defaults", "load_factory", "not_a_recipe"]

FROM_DATA = ("in_shape", "num_classes")  # filled from the data, never from the table


def load_factory(spec: UserModelSpec) -> Callable[..., Any]:
    """The class or factory ``spec.name`` names, imported from the folder the recipe recorded (or, where
    that folder does not exist, e.g. on another machine, from the current directory and sys.path).
    Refused when its source file differs from the one the recipe was resolved with."""
    folder = Path(spec.module_dir) if spec.module_dir else None
    if folder is None or not folder.is_dir():
        folder = locate(spec.name, [Path.cwd()], what="model.name").folder
    where = locate(spec.name, [folder], what="model.name")
    now = file_sha256(where.file)
    if spec.source_sha256 and now and now != spec.source_sha256:
        raise DltricksError(f"model.name = {spec.name!r}: {where.file} changed since this recipe was resolved "
                            f"(sha256 {spec.source_sha256[:12]} then, {now[:12]} now); restore it, or start "
                            "again from the recipe file")
    factory = import_attr(spec.name, folder, what="model.name")
    if not callable(factory):
        raise DltricksError(f"model.name = {spec.name!r} is a {type(factory).__name__}, not a class or function "
                            "that returns a torch.nn.Module")
    return factory


def _signature(factory: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], bool]:
    """The factory's named keyword parameters and whether it takes ``**kwargs``."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check against
        return {}, True
    named = {n: p for n, p in params.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return named, any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def accepted_keywords(spec: UserModelSpec) -> tuple[set[str], bool]:
    """The keywords the model takes from the recipe (its named parameters but ``in_shape`` and
    ``num_classes``), and whether it takes any (``**kwargs``)."""
    named, any_kw = _signature(load_factory(spec))
    return set(named) - set(FROM_DATA), any_kw


def keyword_defaults(spec: UserModelSpec) -> dict[str, Any]:
    """The defaults of the model's keywords that have one (``{"width": 16}``)."""
    named, _ = _signature(load_factory(spec))
    return {n: p.default for n, p in named.items()
            if n not in FROM_DATA and p.default is not inspect.Parameter.empty}


def build_imported(spec: UserModelSpec, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """``factory(**table keys, in_shape=..., num_classes=...)``, checked to be an ``nn.Module``. A key the
    factory does not take is refused, naming what it takes; ``dropout = 0`` is dropped quietly."""
    factory = load_factory(spec)
    named, any_kw = _signature(factory)
    kwargs = spec.keywords()
    data = {"in_shape": tuple(in_shape), "num_classes": int(num_classes)}
    for key in FROM_DATA:
        if key in kwargs:
            raise DltricksError(f"model.{key}: set by the data ({key} = {data[key]}); remove it from [model]")
    if kwargs.get("dropout") == 0.0 and "dropout" not in named and not any_kw:
        kwargs.pop("dropout")  # off, as for a bundled model without dropout
    unknown = sorted(k for k in kwargs if k not in named) if not any_kw else []
    if unknown:
        takes = sorted(set(named) - set(FROM_DATA))
        raise DltricksError(f"model.{unknown[0]}: {spec.name} takes no keyword {unknown[0]!r}; it takes: "
                            f"{', '.join(takes) or 'no keywords'}")
    kwargs.update({k: v for k, v in data.items() if k in named})
    try:
        model = factory(**kwargs)
    except Exception as e:  # the user's code: its error in one line, with what it was given
        text = f"{type(e).__name__}: {e}".strip().splitlines()
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise DltricksError(f"model.name = {spec.name!r}: {spec.name.split(':')[1]}({given}) failed: "
                            f"{text[-1] if text else type(e).__name__}") from None
    if not isinstance(model, nn.Module):
        raise DltricksError(f"model.name = {spec.name!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def not_a_recipe(obj: object, verb: str) -> DltricksError:
    """The error for ``dltricks.train(MyNet())`` or ``dltricks.ablate(MyNet(), ...)``: how to use one's model."""
    kind = type(obj).__name__
    how = (f'put it in a file (my_models.py) and set model.name = "my_models:{kind}" in the recipe'
           if isinstance(obj, nn.Module) else "see `dltricks recipes` for bundled ones")
    return DltricksError(f"dltricks.{verb} takes a recipe (a TOML path, a bundled name or a Recipe), not a {kind}: "
                         f"{how} (docs: own-project.md, 'Your model')")
