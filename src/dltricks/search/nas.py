"""Neural architecture search over a model's keys, on the same storage and claims as tuning.

    result = nas("mnist1d-cnn", strategy="evolution", trials=30, max_params=50_000)
    result.best.config          # {"model.channels": [16, 32], "model.kernel_size": 5, "model.se": True, ...}

The space is the ``[nas]`` section's dotted keys, or :func:`dltricks.search.space.default_nas_space`
(depth and widths, kernel size or a stack of 3x3, norm, residual, SE, attention, dilation, downsampling,
separable convolutions). A candidate over ``max_params`` or ``max_flops`` (counted with
:mod:`dltricks.analysis.cost`, no training) is never trained. Strategies:

- ``evolution``: regularized (aging) evolution (Real et al. 2019): the population is the last
  ``population`` finished trials; a tournament of ``sample_size`` picks a parent, one key is mutated.
- ``reinforce``: a REINFORCE controller (Zoph & Le 2017) with a factorised policy (one softmax per key
  rather than their RNN) and a moving-average baseline, trained on the finished trials' scores.
- ``random``: independent uniform choices, the strong baseline of Li & Talwalkar 2019.

Like every strategy here they are replayed from the finished trials, so any worker can propose the next.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from dltricks.errors import DltricksError, did_you_mean, one_of
from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search import space as sp
from dltricks.search.definition import (
    SearchDefinition,
    base_recipe,
    config_of,
    data_shape,
    directions_for,
    measure,
    over_budget,
    resolve_space,
    study_name,
)

STRATEGIES = ("evolution", "reinforce", "random")
MAX_TRIES = 200          # candidates drawn per proposal before giving up on the budget
BUDGET_PROBES = 16       # random candidates tried when the search is defined, to find one within budget
REINFORCE_LR = 0.5
BASELINE_DECAY = 0.8


def _feasible(d: SearchDefinition, config: sp.Config) -> bool:
    try:
        recipe = Recipe.from_dict(d.recipe, source=f"study {d.name}").patch(config)
        return over_budget(measure(recipe, d, flops=bool(d.max_flops)), d) is None
    except DltricksError:
        return False


def check_budget(d: SearchDefinition) -> None:
    """Fail before any training when no candidate meets the budget: the start recipe's own architecture,
    the smallest choice of every key and random candidates are tried."""
    if not (d.max_params or d.max_flops):
        return
    dims = d.dims
    rng = random.Random(d.search_seed)
    start = Recipe.from_dict(d.recipe)
    smallest = {x.key: min(x.discrete, key=_size) if x.kind != "float" else x.low for x in dims}
    candidates = [{x.key: start.get(x.key) for x in dims}, smallest] + \
        [sp.sample(dims, rng) for _ in range(BUDGET_PROBES)]
    best: dict[str, float] | None = None
    for config in candidates:
        try:
            m = measure(start.patch(config), d, flops=bool(d.max_flops))
        except DltricksError:
            continue
        if over_budget(m, d) is None:
            return
        if best is None or (m["params"], m.get("flops", 0)) < (best["params"], best.get("flops", 0)):
            best = m
    limits = ", ".join(f"{flag} {v:,}" for flag, v in (("--max-params", d.max_params), ("--max-flops", d.max_flops))
                       if v)
    smallest_seen = "none could be built" if best is None else \
        f"the smallest has {best['params']:,.0f} parameters" + (f" and {best['flops']:,.0f} FLOPs" if "flops" in best
                                                                else "")
    raise DltricksError(f"no candidate meets the budget ({limits}): of {len(candidates)} candidates tried, "
                        f"{smallest_seen}; raise the budget or give smaller choices with --space")


def _size(v: Any) -> tuple:
    """An order for 'smallest choice': fewer and narrower stages first, off before on."""
    if isinstance(v, list):
        return (len(v), sum(x for x in v if isinstance(x, int | float)))
    if isinstance(v, bool | int | float):
        return (0, float(v))
    return (0, 0.0)


# ---- strategies ---------------------------------------------------------------------------------

def _scored(d: SearchDefinition, history: list) -> list[tuple[sp.Config, float]]:
    """(config, score to maximise) of the completed trials, in the order of their cells."""
    sign = 1.0 if d.higher_is_better else -1.0
    return [(config_of(t), sign * t.values[0]) for t in history
            if t.values and math.isfinite(t.values[0])]


def evolution(d: SearchDefinition, history: list, rng: random.Random) -> sp.Config:
    dims = d.dims
    scored = _scored(d, history)
    if len(scored) < d.population:
        return sp.sample(dims, rng)
    population = scored[-d.population:]  # aging: the oldest leave, however good they were
    tournament = rng.sample(population, min(d.sample_size, len(population)))
    parent = max(tournament, key=lambda cs: cs[1])[0]
    child = dict(parent)
    mutable = [x for x in dims if x.kind != "categorical" or len(x.choices) > 1]
    x = mutable[rng.randrange(len(mutable))]
    child[x.key] = x.mutate(parent.get(x.key, x.sample(rng)), rng)
    return child


class Controller:
    """A factorised REINFORCE policy: one softmax over each key's choices."""

    def __init__(self, dims: sp.Space):
        self.dims = dims
        self.choices = [x.discrete for x in dims]
        self.logits = [[0.0] * len(c) for c in self.choices]
        self.baseline: float | None = None
        self.rewards: list[float] = []

    def probs(self, i: int) -> list[float]:
        m = max(self.logits[i])
        e = [math.exp(v - m) for v in self.logits[i]]
        return [v / sum(e) for v in e]

    def update(self, config: sp.Config, reward: float) -> None:
        """One policy-gradient step: logits += lr * advantage * grad log p(config)."""
        self.rewards.append(reward)
        if self.baseline is None:
            self.baseline = reward
        spread = _std(self.rewards) or 1.0  # advantages in units of the scores' spread: metric-agnostic
        advantage = (reward - self.baseline) / spread
        for i, x in enumerate(self.dims):
            encoded = [sp._encode(c) for c in self.choices[i]]
            value = sp._encode(config.get(x.key))
            if value not in encoded:
                continue
            j = encoded.index(value)
            p = self.probs(i)
            for a in range(len(p)):
                self.logits[i][a] += REINFORCE_LR * advantage * ((1.0 if a == j else 0.0) - p[a])
        self.baseline = BASELINE_DECAY * self.baseline + (1 - BASELINE_DECAY) * reward

    def sample(self, rng: random.Random) -> sp.Config:
        return {x.key: self.choices[i][rng.choices(range(len(self.choices[i])), weights=self.probs(i))[0]]
                for i, x in enumerate(self.dims)}


def _std(v: list[float]) -> float:
    if len(v) < 2:
        return 0.0
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def reinforce(d: SearchDefinition, history: list, rng: random.Random) -> sp.Config:
    controller = Controller(d.dims)
    for config, reward in _scored(d, history):
        controller.update(config, reward)
    return controller.sample(rng)


def propose(d: SearchDefinition, history: list, k: int) -> sp.Config:
    """Trial ``k``'s architecture: the strategy's candidate, redrawn until it is within budget."""
    rng = random.Random(d.search_seed * 100_003 + k)
    draw = {"evolution": evolution, "reinforce": reinforce,
            "random": lambda d, h, r: sp.sample(d.dims, r)}[d.strategy]
    candidate = draw(d, history, rng)
    if not (d.max_params or d.max_flops):
        return candidate  # an invalid combination fails its trial, with the reason
    for _ in range(MAX_TRIES):
        if _feasible(d, candidate):
            return candidate
        candidate = draw(d, history, rng) if d.strategy != "evolution" or rng.random() < 0.5 else \
            sp.sample(d.dims, rng)
    return candidate  # the trial records why it was not trained


class ArchProposer:
    """Architecture search's proposer for the trial loop (:class:`dltricks.search.trials.Proposer`): the
    search's strategy replayed over the finished trials (:func:`propose`); it keeps no notes."""

    def propose(self, d: SearchDefinition, history: list, k: int, pending: list[sp.Config]
                ) -> tuple[sp.Config, dict[str, Any]]:
        return propose(d, history, k), {}


# ---- the search ------------------------------------------------------------------------------------

def define(recipe: Recipe, *, space: list[str] | None = None, strategy: str | None = None,
           trials: int | None = None, seeds_per_trial: int | None = None, metric: str = "",
           max_params: int | None = None, max_flops: int | None = None, search_seed: int | None = None,
           study: str = "") -> SearchDefinition:
    n = recipe.nas
    strategy = strategy or n.strategy
    if strategy not in STRATEGIES:
        raise DltricksError(f"unknown strategy {strategy!r}{did_you_mean(strategy, STRATEGIES)}; "
                            f"valid: {one_of(STRATEGIES)}")
    dims = resolve_space(recipe, "nas", space, sp.default_nas_space)
    if strategy == "reinforce":
        for x in dims:
            x.discrete  # noqa: B018 - raises for a float range, which a softmax policy cannot choose from
    for flag, v in (("--max-params", max_params), ("--max-flops", max_flops)):
        if v is not None and v < 0:
            raise DltricksError(f"{flag} must be 0 (no limit) or positive, got {v}")
    metric = metric or n.metric or recipe.eval.metric
    in_shape, classes = data_shape(recipe)
    d = SearchDefinition(name="", kind="nas", recipe=base_recipe(recipe), space=[x.to_json() for x in dims],
                         n_trials=trials or n.trials, seeds=[recipe.seed + i for i in range(seeds_per_trial or
                                                                                            n.seeds_per_trial)],
                         objectives=[metric], directions=directions_for([metric]), strategy=strategy,
                         search_seed=n.search_seed if search_seed is None else search_seed,
                         max_params=n.max_params if max_params is None else max_params,
                         max_flops=n.max_flops if max_flops is None else max_flops,
                         population=min(n.population, max(2, (trials or n.trials) // 2)), sample_size=n.sample_size,
                         in_shape=in_shape, num_classes=classes)
    d.name = study or n.study or study_name(recipe, "nas", d)
    check_budget(d)
    return d


def nas(recipe: Recipe | str, *, space: list[str] | None = None, strategy: str | None = None,
        trials: int | None = None, seeds_per_trial: int | None = None, metric: str = "",
        max_params: int | None = None, max_flops: int | None = None, search_seed: int | None = None,
        workers: int | None = None, study: str = "", rerun_seeds: int | None = None,
        best: str | Path | None = None, ledger: Ledger | str | None = None, out: str | Path | None = None,
        progress: bool = True):
    """Run (or resume) an architecture search, re-run the best against the start, write the report."""
    from dltricks.search import results

    results.check_rerun_seeds(rerun_seeds)
    recipe = Recipe.load(recipe) if isinstance(recipe, str) else recipe
    d = define(recipe, space=space, strategy=strategy, trials=trials, seeds_per_trial=seeds_per_trial,
               metric=metric, max_params=max_params, max_flops=max_flops, search_seed=search_seed, study=study)
    settings = recipe.nas
    return results.run(ledger, d, ArchProposer(), workers=workers or settings.workers, best=best, out=out,
                       progress=progress, rerun_seeds=settings.rerun_seeds if rerun_seeds is None else rerun_seeds)
