"""``data.name = "my_data:load"``: the user's own function returns the data, for formats dltricks does not read.

The module is looked for in the folder of the recipe file that names it, then the current directory, then
``sys.path`` (like a user model). The ``[data]`` table's keys that are not dltricks' own are passed to the
function as keyword arguments (``seed`` too, the run's seed, where it takes one). It returns

- ``(train, test)`` or ``(train, val, test)``, or a dict with ``train``, ``test`` and optionally ``val``
  (and ``classes``, the class names);
- each part an ``(x, y)`` pair of tensors or NumPy arrays, or a ``torch.utils.data.Dataset`` of ``(x, y)``
  items (read once into tensors).

``x`` is (N, C, *spatial) or (N, F); ``y`` holds integer class ids (N,) (classification), integer label maps
(N, *spatial) (segmentation) or floats (N,) / (N, T) (regression). Anything else is one line saying what
came back and what would do.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ConfigDict, Field
from torch.utils.data import Dataset

from dltricks.data.bundle import DataBundle, Target
from dltricks.data.registry import register_loader
from dltricks.errors import DltricksError
from dltricks.imports import import_attr, last_line, locate
from dltricks.recipe import RECIPE_DIR, DataSpec, register_imported

__all__ = ["FunctionDataSpec", "find_function", "load_function"]

_SHAPES = ("it must return (train, test), (train, val, test) or a dict with train, test (and val), each an "
           "(x, y) pair of tensors or arrays, or a Dataset of (x, y) items")


class FunctionDataSpec(DataSpec):
    """``[data]`` of a data function: its other keys are the function's keyword arguments."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)
    name: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                      description="module:function, the module beside the recipe, in the current directory or on "
                                  "sys.path")
    folder: str = Field("", description="where the module is looked for first (the recipe's folder, set when "
                                        "the recipe is read)", json_schema_extra=RECIPE_DIR)


def find_function(path: str, folder: str, key: str = "data.name") -> Callable:
    """``module:attr`` imported from ``folder``, then the working directory, then ``sys.path``
    (:mod:`dltricks.imports`, as for a user's model)."""
    where = locate(path, [Path(p) for p in (folder, Path.cwd()) if p], what=key)
    fn = import_attr(path, where.folder, what=key)
    if not callable(fn):
        raise DltricksError(f"{key} = {path!r}: {path.partition(':')[2]} is a {type(fn).__name__}, not a function")
    return fn


def _kwargs(fn: Callable, spec: FunctionDataSpec, seed: int) -> dict[str, Any]:
    given = dict(spec.model_extra or {})
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return given
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "seed" in params or takes_any:
        given.setdefault("seed", seed)
    wrong = [k for k in given if k not in params and not takes_any]
    if wrong:
        accepts = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        raise DltricksError(f"data.{wrong[0]}: {spec.name} takes no keyword {wrong[0]!r}; it takes "
                            f"{', '.join(accepts) or 'no keywords'}")
    return given


def _as_tensor(a: Any, where: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu()
    if isinstance(a, np.ndarray) and a.dtype.kind in "biuf":
        return torch.from_numpy(np.ascontiguousarray(a))
    got = f"an array of dtype {a.dtype}" if isinstance(a, np.ndarray) else f"a {type(a).__name__}"
    raise DltricksError(f"{where} is {got}; it must be a tensor or a numeric NumPy array")


def _pair(part: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(part, Dataset):
        try:
            items = [part[i] for i in range(len(part))]  # type: ignore[arg-type]
        except TypeError:
            raise DltricksError(f"{where} is a Dataset without a length; give one with __len__ (a map-style "
                                "Dataset) or tensors") from None
        if not items or not all(isinstance(it, (tuple, list)) and len(it) == 2 for it in items):
            raise DltricksError(f"{where} is a Dataset whose items are not (x, y) pairs")
        xs = [_as_tensor(it[0], f"{where}: an item's x") for it in items]
        ys = [torch.as_tensor(it[1]) for it in items]
        return torch.stack(xs), torch.stack(ys)
    if not (isinstance(part, (tuple, list)) and len(part) == 2):
        raise DltricksError(f"{where} is a {type(part).__name__}; {_SHAPES}")
    x, y = _as_tensor(part[0], f"{where}: x"), _as_tensor(part[1], f"{where}: y")
    if x.dim() < 2 or len(x) != len(y) or len(x) == 0:
        raise DltricksError(f"{where}: x has shape {tuple(x.shape)} and y {tuple(y.shape)}; x must be (N, C, "
                            "*spatial) or (N, F), and y have the same N > 0")
    if not torch.isfinite(x.float()).all():
        raise DltricksError(f"{where}: x has NaN or infinite values")
    return x.float(), y


def _parts(out: Any, name: str) -> tuple[dict[str, Any], list[str] | None]:
    if isinstance(out, dict):
        missing = [k for k in ("train", "test") if k not in out]
        extra = sorted(set(out) - {"train", "val", "validation", "test", "classes"})
        if missing or extra:
            bad = f"lacks {', '.join(missing)}" if missing else f"has unknown keys {', '.join(extra)}"
            raise DltricksError(f"data function {name} returned a dict that {bad}; {_SHAPES}")
        val = out.get("val", out.get("validation"))
        classes = out.get("classes")
        return {"train": out["train"], "val": val, "test": out["test"]}, (list(map(str, classes))
                                                                          if classes is not None else None)
    if isinstance(out, tuple) and len(out) in (2, 3) and not isinstance(out[0], torch.Tensor):
        return dict(zip(("train", "val", "test") if len(out) == 3 else ("train", "test"), out)), None
    got = f"a tuple of {len(out)}" if isinstance(out, tuple) else f"a {type(out).__name__}"
    raise DltricksError(f"data function {name} returned {got}; {_SHAPES}")


def _task(pairs: dict[str, tuple[torch.Tensor, torch.Tensor]], name: str) -> str:
    x, y = pairs["train"]
    floats = {k: v[1].is_floating_point() for k, v in pairs.items()}
    if len(set(floats.values())) > 1:
        raise DltricksError(f"data function {name}: y is float in some splits and integer in others "
                            f"({', '.join(f'{k}: {v[1].dtype}' for k, v in pairs.items())}); use one kind")
    if floats["train"]:
        return "regression"
    if y.dim() == 1:
        return "classification"
    if y.dim() >= 2 and x.dim() == y.dim() + 1 and y.shape[1:] == x.shape[2:]:
        return "segmentation"
    raise DltricksError(f"data function {name}: integer y of shape {tuple(y.shape)} fits neither class ids (N,) "
                        f"nor label maps (N, *spatial) for x of shape {tuple(x.shape)}")


def load_function(spec: FunctionDataSpec, seed: int) -> DataBundle:
    fn = find_function(spec.name, spec.folder)
    kwargs = _kwargs(fn, spec, seed)
    try:
        out = fn(**kwargs)
    except DltricksError:
        raise
    except Exception as e:
        raise DltricksError(f"data function {spec.name} raised {last_line(e)}") from None
    parts, classes = _parts(out, spec.name)
    pairs = {k: _pair(v, f"data function {spec.name}: {k}") for k, v in parts.items() if v is not None}
    shapes = {k: tuple(v[0].shape[1:]) for k, v in pairs.items()}
    if len(set(shapes.values())) > 1:
        raise DltricksError(f"data function {spec.name}: the splits' samples differ in shape "
                            f"({', '.join(f'{k}: {s}' for k, s in shapes.items())}); they must match")
    task = _task(pairs, spec.name)
    bundle = DataBundle(train=pairs["train"], test=pairs["test"], val=pairs.get("val"), task=task)  # type: ignore[arg-type]
    if task == "regression":
        pairs = {k: (x, y.float().reshape(len(y), -1)) for k, (x, y) in pairs.items()}
        width = pairs["train"][1].shape[1]
        bundle.train, bundle.test, bundle.val = pairs["train"], pairs["test"], pairs.get("val")
        bundle.targets = [Target(f"y{i}" if width > 1 else "y", "regression") for i in range(width)]
        bundle.num_classes = width
        return bundle
    pairs = {k: (x, y.long()) for k, (x, y) in pairs.items()}
    bundle.train, bundle.test, bundle.val = pairs["train"], pairs["test"], pairs.get("val")
    low = min(int(y.min()) for _, y in pairs.values())
    k = max(int(y.max()) for _, y in pairs.values()) + 1
    if low < 0:
        raise DltricksError(f"data function {spec.name}: y has negative class ids ({low}); they must be 0..K-1")
    if classes is not None and len(classes) < k:
        raise DltricksError(f"data function {spec.name}: y has class ids up to {k - 1} but classes names "
                            f"{len(classes)}")
    bundle.num_classes = len(classes) if classes is not None else k
    bundle.class_names = classes or [str(i) for i in range(k)]
    if bundle.num_classes < 2:
        raise DltricksError(f"data function {spec.name}: y has one class; classification needs at least 2")
    return bundle


register_imported("data", FunctionDataSpec)
register_loader(":", load_function)
