"""A claim of the catalogue, as data: the tip, the task it is tested on, the arms compared, the metric, and
the published result it is held against. The claims themselves are in the modules beside this one, one per
family (``architecture``, ``training``, ``setups``, ``search_compress``).

Three kinds:

- ``effect``: an ablation study (:func:`dltricks.search.ablate.ablate`): the baseline and each arm over paired
  seeds, a verdict per arm. ``also`` names more metrics of the same runs, each its own row.
- ``cost``: parameters, FLOPs and receptive field of each arm's model, counted exactly (no training).
- ``search``: two search strategies at the same budget, each search seed a pair (tuning or NAS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dltricks.tricks import Trick, get

Kind = Literal["effect", "cost", "search"]


@dataclass(frozen=True)
class Anchor:
    """The published result a row is compared with. ``expects`` is what it says happens to the row's
    metric: helps / hurts / equivalent (effects), lower / higher / same (costs)."""

    source: str  # "Wu & He 2018, Group Normalization (arXiv:1803.08494), Fig. 1"
    result: str  # "ResNet-50 on ImageNet, batch 2 per GPU: BN 34.7% error, GN 24.1%"
    expects: str

    def text(self) -> str:
        return f"{self.result} ({self.source})"


@dataclass(frozen=True)
class Setting:
    """One point of a curve (e.g. the batch size): overrides on the claim's task, and what the paper
    says there."""

    label: str
    overrides: dict[str, Any]
    expects: str = ""  # "" = the claim's anchor's


@dataclass(frozen=True)
class Claim:
    name: str
    family: str
    tip: str
    recipe: str  # a bundled recipe (the task)
    arms: tuple[str | Trick, ...]  # catalogue names, "NAME:key=value", or Tricks (see :func:`arm`)
    metric: str
    anchor: Anchor
    task: str  # the task in words, for the table
    overrides: dict[str, Any] = field(default_factory=dict)  # the evidence-sized task
    quick: dict[str, Any] = field(default_factory=dict)  # on top of overrides for --quick
    kind: Kind = "effect"
    baseline: str = ""  # the baseline arm in words (default: "without")
    settings: tuple[Setting, ...] = ()  # a curve: one row per setting
    also: tuple[tuple[str, Anchor], ...] = ()  # more metrics of the same runs, each with its anchor
    expects: dict[str, str] = field(default_factory=dict)  # per arm, where arms differ from the anchor
    max_seeds: int = 10  # --seeds auto stops here
    tunable: bool = True  # --tuned N tunes train.lr per arm (False: what is compared is not trained by lr)
    search: dict[str, Any] = field(default_factory=dict)  # kind "search": strategies, trials, space

    @property
    def source(self) -> str:
        names = [a.name if isinstance(a, Trick) else a.partition(":")[0] for a in self.arms]
        return ", ".join(names)

    @property
    def tricks(self) -> list[Trick]:
        from dltricks.tricks import parse_trick

        return [a if isinstance(a, Trick) else parse_trick(a) for a in self.arms]

    def tip_text(self) -> str:
        return self.tip or get(self.source.split(",")[0]).tip


def arm(name: str, on: dict[str, Any], off: dict[str, Any], family: str = "evidence") -> Trick:
    """An arm made for a claim: a patch that is not one catalogue trick (e.g. a whole other model)."""
    return Trick(name=name, family=family, tip="", on=on, off=off)
