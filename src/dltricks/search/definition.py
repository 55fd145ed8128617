"""What a tuning or architecture search is, and where it is stored: the definition every worker reads,
and the helpers that define one (both `tune` and `nas` use them; the trial loop never imports either).

A search is stored as an Optuna study whose user attribute ``dltricks_search`` holds its
:class:`SearchDefinition`; each finished cell ``t0, t1, ...`` is one Optuna trial.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search import study as st
from dltricks.search.space import Config, Dim, Space, parse_space, parse_spec_arg

KEY = "dltricks_search"
COST_OBJECTIVES = ("flops", "latency_ms")  # measured on the model before training; every other is a run metric


@dataclass
class SearchDefinition:
    """Everything a worker needs to run any trial of the search; stored with the Optuna study."""

    name: str
    kind: str  # "tune" or "nas": which proposer draws its configurations
    recipe: dict[str, Any]
    space: list[dict[str, Any]]
    n_trials: int
    seeds: list[int]
    objectives: list[str]
    directions: list[str]  # "maximize" | "minimize", one per objective
    strategy: str  # a sampler (tune) or a strategy (nas)
    search_seed: int = 0
    pruner: str = "none"
    max_params: int = 0
    max_flops: int = 0
    population: int = 8
    sample_size: int = 3
    in_shape: list[int] = field(default_factory=list)
    num_classes: int = 0
    # a search over any command's placeholders (dltricks.search.command_tune); None for recipes
    command: dict[str, Any] | None = None

    @property
    def dims(self) -> Space:
        return [Dim.from_json(d) for d in self.space]

    @property
    def metric(self) -> str:
        return self.objectives[0]

    @property
    def higher_is_better(self) -> bool:
        return self.directions[0] == "maximize"

    def cells(self) -> list[str]:
        return [f"t{k}" for k in range(self.n_trials)]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SearchDefinition:
        return cls(**d)


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in d.items() if k not in ("name", "n_trials")}
    if out.get("command"):  # a cell's time limit may change on a resume
        out["command"] = {k: v for k, v in out["command"].items() if k != "timeout"}
    else:
        out.pop("command", None)  # searches stored before command searches have no such key
    return out


def create_or_load(ledger: Ledger, d: SearchDefinition):
    """The Optuna study of the search; the same command again finds it, and more ``--trials`` extend it."""
    import optuna

    study = optuna.create_study(study_name=d.name, storage=st.storage(ledger), load_if_exists=True,
                                directions=d.directions)
    have = study.user_attrs.get(KEY)
    if have is None:
        if st.DEFINITION in study.user_attrs:
            raise DltricksError(f"study {d.name!r} is an ablation study; pass --study NEWNAME")
        study.set_user_attr(KEY, d.to_json())
    elif _comparable(have) != _comparable(d.to_json()):
        raise DltricksError(f"study {d.name!r} already exists with a different recipe, space, seeds or settings; "
                            "rerun the same command to resume it (--trials may grow), or pass --study NEWNAME")
    elif have["n_trials"] != d.n_trials:
        study.set_user_attr(KEY, d.to_json())
    return study


def is_search(ledger: Ledger, name: str) -> bool:
    import optuna

    try:
        return KEY in optuna.load_study(study_name=name, storage=st.storage(ledger)).user_attrs
    except KeyError:
        return False


def load(ledger: Ledger, name: str):
    """(the Optuna study, its :class:`SearchDefinition`)."""
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=st.storage(ledger))
    except KeyError:
        st.load(ledger, name)  # raises the one-line "no study" error with its did-you-mean
        raise
    if KEY not in study.user_attrs:
        raise DltricksError(f"study {name!r} was not made by dltricks tune or nas")
    return study, SearchDefinition.from_json(study.user_attrs[KEY])


def finished(study) -> list:
    """The finished trials, one per cell (the first to finish it), in the order of their cells."""
    from optuna.trial import TrialState

    seen: dict[str, Any] = {}
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                              TrialState.FAIL)), key=lambda t: t.number):
        cell = t.user_attrs.get("cell")
        if cell is not None and cell not in seen:
            seen[cell] = t
    return sorted(seen.values(), key=lambda t: int(t.user_attrs["cell"][1:]))


def config_of(trial) -> Config:
    return dict(trial.user_attrs.get("config", {}))


# ---- cost of a candidate (before training) --------------------------------------------------------

def measure(recipe: Recipe, d: SearchDefinition, *, flops: bool = True, latency: bool = False) -> dict[str, float]:
    """Parameters and (with ``flops``) FLOPs of one forward pass over one sample of ``recipe``'s model,
    without training it. Counting FLOPs traces the model (a tenth of a second); parameters need no trace."""
    from dltricks.analysis import cost
    from dltricks.nn import build_model

    try:
        model = build_model(recipe.model, tuple(d.in_shape), d.num_classes)
        if not (flops or latency):
            return {"params": float(sum(p.numel() for p in model.parameters()))}
        c = cost(model, tuple(d.in_shape), latency=latency)
    except (ValueError, TypeError, RuntimeError) as e:
        raise DltricksError(f"model cannot be built for input {tuple(d.in_shape)}: {e}") from None
    out = {"params": float(c.params), "flops": float(c.flops)}
    if latency and c.latency_ms is not None:
        out["latency_ms"] = float(c.latency_ms)
    return out


def over_budget(m: dict[str, float], d: SearchDefinition) -> str | None:
    """Why a candidate of cost ``m`` breaks the search's budget, or None."""
    if d.max_params and m["params"] > d.max_params:
        return f"{m['params']:,.0f} parameters > --max-params {d.max_params:,}"
    if d.max_flops and m.get("flops", 0.0) > d.max_flops:
        return f"{m['flops']:,.0f} FLOPs > --max-flops {d.max_flops:,}"
    return None


# ---- defining a search (tune and nas alike) ----------------------------------------------------------

def resolve_space(recipe: Recipe, section: str, extra: list[str] | None, default) -> Space:
    """The recipe section's space, with ``--space KEY=SPEC`` entries over it; the default if both are empty."""
    entries = dict(getattr(recipe, section).space())
    for item in extra or []:
        key, spec = parse_spec_arg(item)
        entries[key] = spec
    return parse_space(recipe, entries, section=section) if entries else default(recipe)


def directions_for(objectives: list[str]) -> list[str]:
    from dltricks.direction import higher_is_better

    return ["maximize" if higher_is_better(o) else "minimize" for o in objectives]


def base_recipe(recipe: Recipe) -> dict[str, Any]:
    """What every cell or trial trains: the recipe without the sweeps' own sections."""
    d = recipe.to_dict()
    for section in ("ablate", "tune", "nas"):
        d.pop(section, None)
    return d


def data_shape(recipe: Recipe) -> tuple[list[int], int]:
    """(input shape of one sample, number of classes) of the recipe's data."""
    from dltricks.analysis.inspect import data_info

    info = data_info(recipe)
    return list(info.in_shape), int(info.num_classes)


def study_name(recipe: Recipe, kind: str, d: SearchDefinition) -> str:
    blob = json.dumps({k: v for k, v in d.to_json().items() if k not in ("name", "n_trials")}, sort_keys=True)
    return f"{recipe.name}-{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"
