"""Which variants an ablation runs: a trick is a patch, a variant is a set of patches.

    add          baseline (all off), and each trick alone on top of it
    remove       all tricks on (the reference), and each one taken away
    factorial    every on/off combination (2^k, k <= 5)
    cumulative   tricks added one after another: the "bag of tricks" table
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

from dltricks.errors import DltricksError
from dltricks.recipe import Recipe
from dltricks.tricks import Trick

Mode = Literal["add", "remove", "factorial", "cumulative"]
MODES = ("add", "remove", "factorial", "cumulative")
MAX_FACTORIAL = 5


@dataclass(frozen=True)
class Variant:
    """One arm of the study: its name, the tricks it has on, and the patch that makes it."""

    name: str
    on: tuple[str, ...]
    patch: dict[str, Any] = field(hash=False)


def off_patch(t: Trick, recipe: Recipe) -> dict[str, Any]:
    """What turns ``t`` off. A custom trick has no ``off``: off is the recipe as it stands."""
    if t.off:
        return dict(t.off)
    out = {}
    for key in t.on:
        try:
            out[key] = recipe.get(key)
        except DltricksError:
            raise DltricksError(f"trick {t.name} sets {key}, which recipe {recipe.name} does not have") from None
    return out


def plan_variants(recipe: Recipe, tricks: list[Trick], mode: Mode) -> tuple[list[Variant], str]:
    """The variants and the name of the reference variant the others are compared with."""
    if mode not in MODES:
        raise DltricksError(f"unknown ablation mode {mode!r}; valid: {', '.join(MODES)}")
    if not tricks:
        raise DltricksError("an ablation needs at least one trick (--trick NAME or NAME:key=value)")
    names = [t.name for t in tricks]
    if len(set(names)) != len(names):
        raise DltricksError(f"trick named twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    if mode == "factorial" and len(tricks) > MAX_FACTORIAL:
        raise DltricksError(f"factorial mode runs 2^k variants; k = {len(tricks)} is over {MAX_FACTORIAL}: "
                            "use add, remove or cumulative, or fewer tricks")
    offs = {t.name: off_patch(t, recipe) for t in tricks}

    def variant(on: tuple[str, ...], name: str) -> Variant:
        # Every trick that is off first, then every trick that is on: where two tricks touch the
        # same key, a trick that is on wins over one that is off (a custom trick's off is the
        # recipe's own value, which must never undo another trick's on), and of two tricks that
        # are on the later one wins.
        patch: dict[str, Any] = {}
        for t in tricks:
            if t.name not in on:
                patch.update(offs[t.name])
        for t in tricks:
            if t.name in on:
                patch.update(t.on)
        return Variant(name, on, patch)

    everything = tuple(names)
    if mode == "add":
        return [variant((), "baseline")] + [variant((n,), f"+{n}") for n in names], "baseline"
    if mode == "remove":
        return ([variant(everything, "all")]
                + [variant(tuple(m for m in names if m != n), f"-{n}") for n in names]), "all"
    if mode == "cumulative":
        out = [variant((), "baseline")]
        for i in range(1, len(names) + 1):
            out.append(variant(everything[:i], " ".join(f"+{n}" for n in names[:i])))
        return out, "baseline"
    combos = [c for r in range(len(names) + 1) for c in itertools.combinations(names, r)]
    return [variant(c, " ".join(f"+{n}" for n in c) or "baseline") for c in combos], "baseline"
