"""Search spaces: which recipe keys a tuner or an architecture search may change, and over what.

A space is a list of :class:`Dim`, one per dotted recipe key. In a recipe it is the ``[tune]`` (or
``[nas]``) section's dotted keys; on the command line ``--space KEY=SPEC``:

    "train.lr"     = { low = 1e-4, high = 0.1, log = true }   # a float range (log-uniform)
    "train.epochs" = { low = 5, high = 20 }                   # an int range: the key holds an int
    "model.norm"   = ["batch", "group"]                       # a list of choices

    --space train.lr=1e-4..0.1:log   --space 'model.norm=["batch", "group"]'

Each dimension is checked against the recipe before anything trains: the key must exist, and every
choice (and both ends of a range) must give a valid recipe. With no space given, ``tune`` searches
:func:`default_tune_space` (the optimisation tricks) and ``nas`` :func:`default_nas_space` (the
model's architecture keys).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from dltricks.errors import DltricksError, did_you_mean
from dltricks.recipe import Recipe, UserModelSpec, parse_override
from dltricks.search.user_model import keyword_value

Kind = Literal["float", "int", "categorical"]
RANGE_KEYS = ("low", "high", "log")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _encode(v: Any) -> Any:
    """A choice as Optuna stores it: None, bool, int, float and str as they are; lists as JSON text."""
    return v if v is None or isinstance(v, bool | int | float | str) else json.dumps(v)


@dataclass(frozen=True)
class Dim:
    """One dimension of a space: a float or int range (optionally log-scaled) or a list of choices."""

    key: str
    kind: Kind
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = field(default=())

    # ---- Optuna's view: params as Optuna stores them -------------------------------------------
    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "float":
            return FloatDistribution(self.low, self.high, log=self.log)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return CategoricalDistribution([_encode(c) for c in self.choices])

    def encode(self, value: Any) -> Any:
        return _encode(value) if self.kind == "categorical" else value

    def decode(self, param: Any) -> Any:
        if self.kind != "categorical":
            return int(param) if self.kind == "int" else float(param)
        for c in self.choices:
            if _encode(c) == param:
                return c
        raise DltricksError(f"{self.key}: stored value {param!r} is not one of the space's choices")

    # ---- strategies of our own (evolution, REINFORCE, random) ----------------------------------
    @property
    def discrete(self) -> list[Any]:
        """Every value, for a categorical or int dimension (what a REINFORCE policy chooses from)."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        raise DltricksError(f"{self.key} is a float range; this strategy needs choices or an int range")

    def sample(self, rng: random.Random) -> Any:
        if self.kind == "categorical":
            return self.choices[rng.randrange(len(self.choices))]
        if self.log:
            x = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            x = rng.uniform(self.low, self.high)
        return min(int(self.high), max(int(self.low), round(x))) if self.kind == "int" else x

    def mutate(self, value: Any, rng: random.Random) -> Any:
        """Another value: a different choice, a neighbouring int, or a float moved by a random factor."""
        if self.kind == "categorical":
            others = [c for c in self.choices if _encode(c) != _encode(value)]
            return others[rng.randrange(len(others))] if others else value
        if self.kind == "int":
            step = rng.choice((-1, 1)) * max(1, round((self.high - self.low) * 0.1 * rng.random()))
            return int(min(self.high, max(self.low, value + step))) if self.high > self.low else value
        if self.log:
            return float(min(self.high, max(self.low, value * math.exp(rng.gauss(0.0, 0.5)))))
        return float(min(self.high, max(self.low, value + rng.gauss(0.0, 0.2) * (self.high - self.low))))

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "low": self.low, "high": self.high, "log": self.log,
                "choices": list(self.choices)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Dim:
        return cls(d["key"], d["kind"], d["low"], d["high"], d["log"], tuple(d["choices"]))

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.key} in {list(self.choices)}"
        return f"{self.key} in [{self.low:g}, {self.high:g}]{' (log)' if self.log else ''}"


Space = list[Dim]
Config = dict[str, Any]


def sample(space: Space, rng: random.Random) -> Config:
    return {d.key: d.sample(rng) for d in space}


def to_params(space: Space, config: Config) -> dict[str, Any]:
    return {d.key: d.encode(config[d.key]) for d in space}


def distributions(space: Space) -> dict[str, Any]:
    return {d.key: d.distribution() for d in space}


# ---- parsing ----------------------------------------------------------------------------------------

def parse_spec_arg(item: str) -> tuple[str, Any]:
    """``--space KEY=SPEC``: SPEC is TOML (``{low = 1e-4, high = 0.1, log = true}``, ``["a", "b"]``) or
    the short ``LOW..HIGH`` / ``LOW..HIGH:log``."""
    key, value = parse_override(item)
    if isinstance(value, str) and ".." in value:
        text, _, flag = value.partition(":")
        lo, _, hi = text.partition("..")
        if flag not in ("", "log"):
            raise DltricksError(f"--space {item!r}: after ':' only 'log' is valid")
        try:
            low, high = (parse_override(f"v={x}")[1] for x in (lo, hi))
        except DltricksError:
            low = high = None
        if not (_is_number(low) and _is_number(high)):
            raise DltricksError(f"--space {item!r}: a range is LOW..HIGH with numbers, e.g. train.lr=1e-4..0.1:log")
        value = {"low": low, "high": high, "log": flag == "log"}
    if not isinstance(value, dict | list):
        raise DltricksError(f"--space {item!r}: give a range ({key}=LOW..HIGH[:log] or "
                            f"{key}={{low = ..., high = ...}}) or a list of choices ({key}=[a, b])")
    return key, value


def parse_space(recipe: Recipe, entries: dict[str, Any], *, section: str = "tune") -> Space:
    """The space from ``{key: spec}``, each checked against ``recipe``. Raises :class:`DltricksError`
    naming the key and what would be valid."""
    if not entries:
        raise DltricksError(f"the search space is empty: add dotted keys to [{section}] "
                            '(e.g. "train.lr" = { low = 1e-4, high = 0.1, log = true }) or pass --space KEY=SPEC')
    flat = recipe.flat()
    space = []
    for key, spec in entries.items():
        if key.startswith("model.") and isinstance(recipe.model, UserModelSpec):  # the user's keywords
            current = keyword_value(recipe, key, section)
        elif key not in flat:
            raise DltricksError(f"[{section}] {key}: no recipe key of that name{did_you_mean(key, flat)}")
        else:
            current = flat[key]
        if isinstance(spec, list):
            space.append(_categorical(recipe, key, spec, section))
        elif isinstance(spec, dict):
            space.append(_range(recipe, key, spec, current, section))
        else:
            raise DltricksError(f"[{section}] {key} = {spec!r}: give a range {{low, high, log}} or a list of choices")
    return space


def _check_value(recipe: Recipe, key: str, value: Any, section: str) -> None:
    try:
        recipe.patch({key: value})
    except DltricksError as e:
        detail = str(e).split(": ", 1)[-1]
        raise DltricksError(f"[{section}] {key}: {value!r} is not a valid value ({detail})") from None


def _categorical(recipe: Recipe, key: str, choices: list, section: str) -> Dim:
    if not choices:
        raise DltricksError(f"[{section}] {key} = []: a list of choices needs at least one value")
    seen = [json.dumps(c, sort_keys=True) for c in choices]
    if len(set(seen)) != len(seen):
        raise DltricksError(f"[{section}] {key}: a choice is listed twice in {choices!r}")
    for c in choices:
        if isinstance(c, dict):
            raise DltricksError(f"[{section}] {key}: a choice cannot be a table ({c!r})")
        _check_value(recipe, key, c, section)
    return Dim(key, "categorical", choices=tuple(choices))


def _range(recipe: Recipe, key: str, spec: dict, current: Any, section: str) -> Dim:
    unknown = [k for k in spec if k not in RANGE_KEYS]
    if unknown:
        raise DltricksError(f"[{section}] {key}: unknown range key {unknown[0]!r}"
                            f"{did_you_mean(unknown[0], RANGE_KEYS)}; valid: low, high, log")
    if "low" not in spec or "high" not in spec:
        raise DltricksError(f"[{section}] {key}: a range needs both low and high, e.g. {{ low = 1, high = 10 }}")
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    if not (_is_number(low) and _is_number(high)) or not isinstance(log, bool):
        raise DltricksError(f"[{section}] {key}: low and high must be numbers and log true or false, got {spec!r}")
    if not _is_number(current):
        raise DltricksError(f"[{section}] {key} holds {current!r}, not a number: give a list of choices instead")
    kind: Kind = "int" if isinstance(current, int) else "float"
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise DltricksError(f"[{section}] {key} is a whole number: low and high must be whole, got {low}, {high}")
    if not low < high:
        raise DltricksError(f"[{section}] {key}: low must be below high, got low = {low}, high = {high}")
    if log and low <= 0:
        raise DltricksError(f"[{section}] {key}: a log range needs low > 0, got {low}")
    for end in (low, high):
        _check_value(recipe, key, int(end) if kind == "int" else float(end), section)
    return Dim(key, kind, low=float(low) if kind == "float" else int(low),
               high=float(high) if kind == "float" else int(high), log=log)


# ---- default spaces ---------------------------------------------------------------------------------

def default_tune_space(recipe: Recipe) -> Space:
    """The optimisation tricks of the catalogue as ranges: learning rate, weight decay, label smoothing
    (classification) and the learning-rate schedule."""
    entries: dict[str, Any] = {
        "train.lr": {"low": 1e-4, "high": 1e-1, "log": True},
        "train.weight_decay": {"low": 1e-6, "high": 1e-1, "log": True},
        "train.schedule": ["constant", "cosine", "one_cycle"],
    }
    if recipe.train.loss == "ce":
        entries["train.label_smoothing"] = {"low": 0.0, "high": 0.2}
    return parse_space(recipe, entries)


# Choices per architecture key, used when the model has that key (its current value is always kept).
_ARCH_CHOICES: dict[str, list[Any]] = {
    "blocks_per_stage": [1, 2],
    "kernel_size": [3, 5, 7],
    "stack_3x3": [False, True],
    "dilation": [1, 2],
    "norm": ["batch", "group", "none"],
    "residual": [False, True],
    "se": [False, True],
    "attention": [False, True],
    "downsample": ["max", "avg", "stride"],
    "separable": [False, True],
    "block": ["basic", "bottleneck", "preact"],
}


def _widths(current: list[int], max_depth: int = 4) -> list[list[int]]:
    """Depth x width: stages of doubling width from half, the same and twice the first stage's width."""
    c0 = current[0] if current else 16
    widths = sorted({max(4, c0 // 2), c0, c0 * 2})
    return [[w * 2 ** i for i in range(d)] for d in range(1, max_depth + 1) for w in widths]


def default_nas_space(recipe: Recipe) -> Space:
    """The architecture keys the model has: depth and widths, kernel size or a stack of 3x3, norm,
    residual, squeeze-excitation, attention, dilation, downsampling, separable convolutions. Choices that
    do not give a valid recipe are left out, and so are keys left with one choice."""
    model = recipe.to_dict()["model"]
    entries: dict[str, list[Any]] = {}
    for name, choices in _ARCH_CHOICES.items():
        if name in model:
            entries[f"model.{name}"] = [model[name]] + [c for c in choices if c != model[name]]
    if "channels" in model and "layers" not in model:  # a resnet pairs channels with layers: left alone
        entries["model.channels"] = _widths(model["channels"])
        if model["channels"] not in entries["model.channels"]:
            entries["model.channels"].insert(0, model["channels"])
    if "hidden" in model:
        entries["model.hidden"] = [[w] * d for d in (1, 2, 3) for w in (64, 128, 256)]
    kept: dict[str, list[Any]] = {}
    for key, choices in entries.items():
        valid = []
        for c in choices:
            try:
                recipe.patch({key: c})
            except DltricksError:
                continue
            valid.append(c)
        if len(valid) > 1:
            kept[key] = valid
    if not kept:
        raise DltricksError(f"model {recipe.model.name!r} has no architecture keys nas knows; "
                            'give the space in [nas] (e.g. "model.hidden" = [[64], [128, 128]]) or --space')
    return parse_space(recipe, kept, section="nas")
