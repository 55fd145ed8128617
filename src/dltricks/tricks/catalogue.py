"""The trick catalogue: every trick is data. The ablation engine, tuner and advisor only apply patches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dltricks.errors import DltricksError, unknown


@dataclass(frozen=True)
class Trick:
    """A named patch to a recipe.

    ``on`` turns the trick on and ``off`` turns it off (both dotted-key patches, e.g.
    ``{"train.label_smoothing": 0.1}``); ``tip`` says in a sentence or two why it may help.
    """

    name: str
    family: str
    tip: str
    on: dict[str, Any]
    off: dict[str, Any]
    reference: str = ""
    applies_to: tuple[str, ...] = field(default_factory=tuple)  # e.g. ("model.name=cnn",); empty = any


_CATALOGUE: dict[str, Trick] = {}


def register(t: Trick) -> Trick:
    if t.off and set(t.on) != set(t.off):  # an empty off: the recipe's own values (train.lr = "find")
        raise ValueError(f"trick {t.name}: on and off must set the same keys (or off none: the recipe's values)")
    _CATALOGUE[t.name] = t
    return t


def trick(name: str, family: str, tip: str, on: dict[str, Any], off: dict[str, Any], reference: str = "",
          **kw: Any) -> Trick:
    return register(Trick(name, family, " ".join(tip.split()), on, off, reference, **kw))


def catalogue() -> dict[str, Trick]:
    return dict(_CATALOGUE)


def get(name: str) -> Trick:
    if name not in _CATALOGUE:
        raise unknown("trick", name, _CATALOGUE)
    return _CATALOGUE[name]


def parse_trick(text: str) -> Trick:
    """A catalogue name, or a custom trick ``NAME:key=value[,key=value...]`` (off = the recipe as it is)."""
    from dltricks.recipe import parse_override

    if ":" not in text:
        return get(text)
    name, _, body = text.partition(":")
    if not name or not body:
        raise DltricksError(f"custom trick {text!r} must look like NAME:key=value[,key=value...]")
    on = dict(parse_override(item) for item in _split_items(body))
    return Trick(name=name, family="custom", tip=f"custom patch {body}", on=on, off={})


def _split_items(body: str) -> list[str]:
    """Split ``a=1,b=[1,2]`` on the commas that separate items, not those inside brackets or quotes."""
    items, depth, quote, cur = [], 0, "", ""
    for ch in body:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        cur += ch
    items.append(cur)
    return [i.strip() for i in items if i.strip()]
