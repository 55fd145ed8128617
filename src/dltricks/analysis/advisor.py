"""``dltricks advise``: rules grounded in the tips, checked against a recipe and the model it builds.

Each rule looks at the recipe (batch size, schedule, clipping, dropout), the model it builds (its layers,
the receptive field and residual connections found by :func:`dltricks.analysis.trace.trace`) and the data
(task, input shape, targets), and returns an :class:`Advice`: the tip, the evidence from this recipe, and
a patch of recipe keys that applies the fix (empty when no recipe key can express it). A sound recipe gets
no advice; :func:`apply_advice` writes the patched recipe, which validates like any other.

    advice = advise(Recipe.load("my.toml"))
    fixed = apply_advice(recipe, advice)          # -> Recipe
    print(advice_to_json(advice))

The rules live by family (:mod:`~dltricks.analysis.rules_layers`, :mod:`~dltricks.analysis.rules_field`,
:mod:`~dltricks.analysis.rules_training`, :mod:`~dltricks.analysis.rules_data`), each registering itself in
:data:`~dltricks.analysis.advice.RULES`; the report is :mod:`~dltricks.analysis.advice_report`.
"""

from __future__ import annotations

from typing import Any

# the rule families register themselves on import
from dltricks.analysis import rules_data, rules_field, rules_layers, rules_training
from dltricks.analysis.advice import MIN_BATCH_FOR_BATCHNORM, RULES, Advice, Context
from dltricks.analysis.advice_report import advice_to_json, render_advice
from dltricks.analysis.inspect import DataInfo, data_info
from dltricks.analysis.receptive_field import rf_from_trace
from dltricks.analysis.rules_data import MAX_FEATURE_SCALE_RATIO, MAX_TARGET_SCALE_RATIO, target_scales
from dltricks.analysis.rules_field import MIN_RF_RATIO_CLASSIFICATION, MIN_RF_RATIO_SEGMENTATION
from dltricks.analysis.rules_layers import DEEP_PLAIN, DEEP_WITHOUT_NORM, MAX_DROPOUT
from dltricks.analysis.trace import trace

__all__ = [
    "DEEP_PLAIN",
    "DEEP_WITHOUT_NORM",
    "MAX_DROPOUT",
    "MAX_FEATURE_SCALE_RATIO",
    "MAX_TARGET_SCALE_RATIO",
    "MIN_BATCH_FOR_BATCHNORM",
    "MIN_RF_RATIO_CLASSIFICATION",
    "MIN_RF_RATIO_SEGMENTATION",
    "RULES",
    "Advice",
    "advice_to_json",
    "advise",
    "apply_advice",
    "context",
    "render_advice",
    "target_scales",
]

# the order advice is listed in: the layers, their context, training, then the data (stable within a family)
FAMILIES = (rules_layers, rules_field, rules_training, rules_data)
_RANK = {f.__name__: i for i, f in enumerate(FAMILIES)}
for _name in sorted(RULES, key=lambda n: _RANK.get(RULES[n].__module__, len(FAMILIES))):
    RULES[_name] = RULES.pop(_name)


def context(recipe, info: DataInfo | None = None) -> Context:
    """Build the model and trace it once; everything the rules need."""
    from dltricks.nn import build_model

    info = info or data_info(recipe)
    model = build_model(recipe.model, info.in_shape, info.num_classes)
    t = trace(model, info.in_shape)
    return Context(recipe, info, model, t, rf_from_trace(t))


def advise(recipe, info: DataInfo | None = None, rules: list[str] | None = None) -> list[Advice]:
    """Every rule that fires on ``recipe`` (all rules, or those named in ``rules``), in catalogue order.

    ``info`` gives the task, input shape and classes without loading the data (tests, custom setups)."""
    ctx = context(recipe, info)
    names = rules if rules is not None else list(RULES)
    unknown = [n for n in names if n not in RULES]
    if unknown:
        from dltricks.errors import unknown as unknown_error

        raise unknown_error("advisor rule", unknown[0], RULES)
    out = []
    for name in names:
        a = RULES[name](ctx)
        if a is not None:
            out.append(a)
    return out


def apply_advice(recipe, advice: list[Advice]):
    """The recipe with every advice's patch applied, in order (later patches win on the same key); the
    result is validated like any recipe, so a bad patch raises :class:`DltricksError`."""
    patch: dict[str, Any] = {}
    for a in advice:
        patch.update(a.patch)
    return recipe.patch(patch) if patch else recipe
