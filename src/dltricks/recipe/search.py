"""``[ablate]``, ``[tune]`` and ``[nas]``: the settings of the studies a recipe can start."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from dltricks.errors import did_you_mean
from dltricks.recipe.section import Section


class AblateSpec(Section):
    tricks: list[str] = Field(default_factory=list, description="catalogue tricks (or NAME:key=value,...) "
                                                               "to compare")
    mode: Literal["add", "remove", "factorial", "cumulative"] = Field(
        "add", description="add: baseline + each trick; remove: all on, each taken out; factorial: every "
                           "combination; cumulative: one after another")
    seeds: int | Literal["auto"] = Field(5, description='seeds per variant, or "auto": 3, then more in rounds '
                                                          'only for inconclusive variants, up to max_seeds')
    workers: int = Field(1, ge=1, description="local worker processes (the cores are split between them)")
    metric: str = Field("", description="defaults to eval.metric")
    study: str = Field("", description="defaults to the recipe name and a hash of the sweep")
    rope: float | Literal["auto"] = Field("auto", description="half-width of the region of practical equivalence "
                                          'in metric units; "auto": 0.005 for [0, 1] metrics, else 1% of the baseline')
    max_seeds: int = Field(10, ge=3, le=1000, description='the most seeds per variant with seeds = "auto"')
    vary: list[Literal["seed", "split"]] = Field(
        default_factory=lambda: ["seed"],
        description='what each paired seed draws afresh: "seed" (init, batch order, validation split); with '
                    '"split" also the test split of data that holds one out itself (data.split_seed = the seed)')

    @field_validator("vary")
    @classmethod
    def _vary_has_seed(cls, v: list[str]) -> list[str]:
        if "seed" not in v or len(set(v)) != len(v):
            raise ValueError('must list "seed" once, and "split" at most once: ["seed"] or ["seed", "split"]')
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds_positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError('seeds must be at least 1, or "auto"')
        return v

    @field_validator("rope")
    @classmethod
    def _rope_non_negative(cls, v: float | str) -> float | str:
        if not isinstance(v, str) and v < 0:
            raise ValueError('the ROPE half-width must be >= 0 (metric units), or "auto"')
        return v


class _SearchSpec(Section):
    """Settings of a search, plus its space: every dotted key (``"train.lr"``) is a dimension, a range
    ``{ low = 1e-4, high = 0.1, log = true }`` or a list of choices. :mod:`dltricks.search.space`
    checks each dimension against the recipe; here only its shape is checked."""

    model_config = ConfigDict(extra="allow")
    trials: int = Field(20, ge=1, description="trials in the study (a rerun with more extends it)")
    seeds_per_trial: int = Field(1, ge=1, description="each trial's score is its mean over these paired seeds")
    metric: str = Field("", description="defaults to eval.metric")
    search_seed: int = Field(0, ge=0, description="seed of the sampler or strategy")
    rerun_seeds: int = Field(6, ge=0, description="fresh seeds for the best against the start recipe; 0 = skip")
    workers: int = Field(1, ge=1, description="local worker processes (the cores are split between them)")
    study: str = Field("", description="defaults to the recipe name and a hash of the search")

    @model_validator(mode="after")
    def _space_entries(self):
        for key, value in (self.model_extra or {}).items():
            if "." not in key:
                fields = ", ".join(type(self).model_fields)
                hint = did_you_mean(key, type(self).model_fields)
                raise ValueError(f"unknown key {key!r}{hint}; valid: {fields}, or a dotted recipe key "
                                 "(\"train.lr\") with a range {low, high, log} or a list of choices")
            if not isinstance(value, dict | list):
                raise ValueError(f"{key} = {value!r}: a search dimension is a range {{low, high, log}} "
                                 "or a list of choices")
        return self

    def space(self) -> dict[str, Any]:
        """The dotted keys: ``{"train.lr": {"low": 1e-4, "high": 0.1, "log": True}, ...}``."""
        return dict(self.model_extra or {})


class TuneSpec(_SearchSpec):
    """``dltricks tune``: hyperparameter search with Optuna's samplers over the ``[tune]`` space."""

    sampler: Literal["random", "tpe", "gp", "cmaes", "nsga2"] = Field(
        "tpe", description="Optuna's sampler (nsga2 for several objectives)")
    objective: list[str] = Field(default_factory=list,
                                 description="several metrics (e.g. test_accuracy, params): a Pareto front")
    pruner: Literal["median", "hyperband", "none"] = Field(
        "none", description="stop unpromising trials early on their validation curve; none = train each fully")


class NasSpec(_SearchSpec):
    """``dltricks nas``: architecture search over the model's keys (the ``[nas]`` space, or a default one)."""

    strategy: Literal["evolution", "reinforce", "random"] = Field(
        "evolution", description="how candidates are proposed: mutate the best, a learnt controller, or random")
    max_params: int = Field(0, ge=0, description="candidates with more parameters are never trained; 0 = no limit")
    max_flops: int = Field(0, ge=0, description="FLOPs of one forward pass per sample; 0 = no limit")
    population: int = Field(8, ge=2, description="evolution: the population that ages")
    sample_size: int = Field(3, ge=1, description="evolution: tournament size")

