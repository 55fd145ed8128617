"""What the advisor's rules share: :class:`Advice` (one finding), :class:`Context` (what a rule looks at) and
the registry :data:`RULES` that each family of rules adds itself to with ``@rule(name)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from dltricks.analysis.inspect import DataInfo
from dltricks.analysis.receptive_field import RF
from dltricks.analysis.trace import Trace

__all__ = ["MIN_BATCH_FOR_BATCHNORM", "RULES", "Advice", "Context", "Rule", "rule"]

MIN_BATCH_FOR_BATCHNORM = 16  # Wu & He 2018: BatchNorm's error grows quickly below ~16 samples per batch


@dataclass
class Advice:
    """One finding: the ``rule`` that fired, a one-line ``title``, the ``tip`` it rests on, the
    ``evidence`` from this recipe, and the ``patch`` (dotted recipe keys -> values) that fixes it."""

    rule: str
    title: str
    tip: str
    evidence: str
    patch: dict[str, Any] = field(default_factory=dict)
    reference: str = ""
    severity: str = "warning"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Context:
    """What the rules look at. ``model``, ``trace`` and ``rf`` are None where the model could not be built."""

    recipe: Any
    info: DataInfo
    model: nn.Module | None
    trace: Trace | None
    rf: RF | None

    @property
    def spec(self) -> dict[str, Any]:
        return self.recipe.model.model_dump()

    @property
    def dims(self) -> int:
        return len(self.info.in_shape) - 1

    def has(self, key: str) -> bool:
        return key in type(self.recipe.model).model_fields

    def modules(self, *types: type) -> list[nn.Module]:
        return [m for m in self.model.modules() if isinstance(m, types)] if self.model is not None else []


Rule = Callable[[Context], "Advice | None"]
RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        RULES[name] = fn
        return fn

    return deco
