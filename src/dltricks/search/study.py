"""A study in Optuna storage: its definition (recipe, variants, seeds, metric) and its results.

Every finished cell is one Optuna trial with the cell, variant, seed, run id and metrics as user
attributes, so any process that reaches the storage can join the work or read the results.
The ledger's database holds the study too: one URL shares runs, claims and trials.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.search.plan import Variant

DEFINITION = "dltricks"


_STORAGES: dict[tuple[int, str], Any] = {}


def storage(ledger: Ledger):
    """Optuna's storage on the ledger's database, one per process and URL: opening one checks the schema
    with Alembic (a tenth of a second or more), and a study's progress bar, its workers and its report
    open it again and again."""
    import os

    key = (os.getpid(), ledger.url)  # a forked child must not share its parent's connections
    if key not in _STORAGES:
        _STORAGES[key] = _open_storage(ledger)
    return _STORAGES[key]


# URLs whose tables and schema version a process of this sweep has just created or checked: the local
# workers it hands a study to are told so, and skip the check (a tenth of a second each)
CHECKED: set[str] = set()


def _open_storage(ledger: Ledger):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    kwargs: dict[str, Any] = {}
    if ledger.url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}  # "database is locked" (optuna#820)
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    checked = ledger.url in CHECKED
    try:
        s = optuna.storages.RDBStorage(ledger.url, skip_compatibility_check=checked, skip_table_creation=checked,
                                       **kwargs)
    except Exception as e:  # noqa: BLE001 - sqlalchemy's IntegrityError, without importing sqlalchemy here
        # Two processes that meet a fresh database at once both create Optuna's tables and both insert its
        # schema version: the loser's insert fails, but the tables are there now. Open them as they are.
        if "alembic_version" not in str(e) and "already exists" not in str(e):
            raise
        s = optuna.storages.RDBStorage(ledger.url, skip_compatibility_check=False, skip_table_creation=True,
                                       **kwargs)
    CHECKED.add(ledger.url)
    return s


@dataclass
class Definition:
    name: str
    recipe: dict[str, Any]
    variants: list[Variant]
    reference: str
    seeds: list[int]
    metric: str
    higher_is_better: bool
    mode: str
    tricks: list[dict[str, Any]] = field(default_factory=list)
    # seeds = "auto": the looks (numbers of seeds) of the sequential rule; empty for a fixed number of seeds
    schedule: list[int] = field(default_factory=list)
    rope: float | None = None  # ROPE half-width in metric units; None: the metric's default
    alpha: float = 0.05
    vary: list[str] = field(default_factory=lambda: ["seed"])  # ablate.vary: see dltricks.search.vary
    # a study of any command (dltricks.search.command): its line, folder, env, timeout; None for recipes
    command: dict[str, Any] | None = None

    def cells(self) -> list[tuple[str, Variant, int]]:
        """(cell id, variant, seed), seed-major so that partial results are already paired."""
        return [(f"v{i}s{seed}", v, seed) for seed in self.seeds for i, v in enumerate(self.variants)]

    def to_json(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["variants"] = [{"name": v.name, "on": list(v.on), "patch": v.patch} for v in self.variants]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Definition:
        d = dict(d)
        d["variants"] = [Variant(v["name"], tuple(v["on"]), v["patch"]) for v in d["variants"]]
        return cls(**d)


def create_or_load(ledger: Ledger, definition: Definition):
    """The Optuna study for ``definition``; rerunning the same command finds it again."""
    import optuna

    study = optuna.create_study(study_name=definition.name, storage=storage(ledger), load_if_exists=True,
                                direction="maximize" if definition.higher_is_better else "minimize")
    have = study.user_attrs.get(DEFINITION)
    if have is None:
        study.set_user_attr(DEFINITION, definition.to_json())
    elif _comparable(have) != _comparable(definition.to_json()):
        raise DltricksError(f"study {definition.name!r} already exists with a different recipe, tricks or seeds; "
                            "rerun exactly the same command to resume it, or pass --study NEWNAME")
    elif have.get("rope") != definition.rope and not definition.schedule:
        # The ROPE changes only how the same runs are judged (with fixed seeds): the new one holds.
        study.set_user_attr(DEFINITION, {**have, "rope": definition.rope})
    return study


def _comparable(d: dict) -> dict:
    out = {k: d[k] for k in ("recipe", "variants", "seeds", "metric", "mode")}
    if d.get("vary", ["seed"]) != ["seed"]:  # studies stored before ablate.vary compare as before
        out["vary"] = d["vary"]
    if d.get("command"):  # a cell's time limit may change on a resume
        out["command"] = {k: v for k, v in d["command"].items() if k != "timeout"}
    if d.get("schedule"):  # a sequential study's ROPE and alpha decide which cells run
        out.update(schedule=d["schedule"], rope=d.get("rope"), alpha=d.get("alpha", 0.05))
    return out


def load(ledger: Ledger, name: str):
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage(ledger))
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage(ledger))]
        from dltricks.errors import did_you_mean

        raise DltricksError(f"no study {name!r} in {ledger.where}{did_you_mean(name, names)}; "
                            f"studies there: {', '.join(names) or 'none'}") from None
    if DEFINITION not in study.user_attrs:
        raise DltricksError(f"study {name!r} was not made by dltricks ablate")
    return study, Definition.from_json(study.user_attrs[DEFINITION])


@dataclass
class Results:
    """What the study has so far: one entry per cell, the first trial that finished it."""

    scores: dict[str, dict[int, float]]
    metrics: dict[str, dict[int, dict[str, float]]]
    run_ids: dict[str, dict[int, str]]
    failures: list[dict[str, Any]]
    done: set[str]

    @property
    def n_failed(self) -> int:
        return len(self.failures)


def results(study, definition: Definition) -> Results:
    from optuna.trial import TrialState

    names = [v.name for v in definition.variants]
    scores: dict[str, dict[int, float]] = {n: {} for n in names}
    metrics: dict[str, dict[int, dict[str, float]]] = {n: {} for n in names}
    run_ids: dict[str, dict[int, str]] = {n: {} for n in names}
    failures, done = [], set()
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)),
                    key=lambda t: t.number):
        a = t.user_attrs
        cell = a.get("cell")
        if cell is None or cell in done:
            continue  # a duplicate finish (possible only after a worker was wrongly declared dead)
        done.add(cell)
        v, seed = a["variant"], int(a["seed"])
        if a.get("run_id"):
            run_ids[v][seed] = a["run_id"]
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
            scores[v][seed] = float(t.value)
            metrics[v][seed] = a.get("metrics", {})
        else:
            failures.append({"variant": v, "seed": seed, "reason": a.get("failure", "failed")})
    return Results(scores, metrics, run_ids, failures, done)


def scores_with_failures(r: Results) -> dict[str, dict[int, float]]:
    """Scores with NaN for each failed cell: a failed run is missing from the pairing, but its cell is done."""
    from dltricks.ledger.study_report import scores_with_failures as merged

    return merged(r.scores, r.failures)


def unchanged_variants(d: Definition) -> set[str]:
    """Variants whose recipe is exactly the reference's: a trick that changes nothing. Their runs
    can still differ from the reference's by run-to-run noise (non-deterministic kernels, another
    thread count on another worker), which must never turn into a verdict."""
    if d.command:  # a command study: a variant whose tricks add nothing runs the reference's command
        ref_patch = next(v.patch for v in d.variants if v.name == d.reference)
        return {v.name for v in d.variants if v.name != d.reference and v.patch == ref_patch}
    from dltricks.recipe import Recipe

    base = Recipe.from_dict(d.recipe, source=f"study {d.name}")

    def digest(v) -> str | None:
        try:
            return base.patch(v.patch).digest()
        except DltricksError:
            return None  # a bad patch: its cells fail, with their reason

    ref = digest(next(v for v in d.variants if v.name == d.reference))
    return {v.name for v in d.variants if v.name != d.reference and ref is not None and digest(v) == ref}


def sequential_state(study, definition: Definition, r: Results | None = None):
    """(rows, open variants, seeds of the look they wait for) of a sequential study, from storage."""
    from dltricks.ledger.stats import sequential_compare

    r = r or results(study, definition)
    return sequential_compare(scores_with_failures(r), definition.reference, seeds=definition.seeds,
                              schedule=definition.schedule, higher_is_better=definition.higher_is_better,
                              alpha=definition.alpha, rope=definition.rope, metric=definition.metric,
                              unchanged=unchanged_variants(definition))


def todo(study, definition: Definition, r: Results | None = None) -> list[tuple[str, Variant, int]]:
    """The cells the study still needs, done ones left out.

    With fixed seeds: every cell. With seeds = "auto": the baseline's and the open variants' cells of
    the look they wait for (nothing once every variant has a verdict or the last look is in)."""
    r = r or results(study, definition)
    if not definition.schedule:
        return [c for c in definition.cells() if c[0] not in r.done]
    _, open_, waiting = sequential_state(study, definition, r)
    if not open_:
        return []
    wanted = {definition.reference, *open_}
    seeds = set(definition.seeds[:waiting])
    return [c for c in definition.cells() if c[1].name in wanted and c[2] in seeds and c[0] not in r.done]


LOOK_WAIT_S = 0.25  # how often a worker with nothing to claim asks whether the look it waits for is in


def cells_to_run(study, definition: Definition):
    """What a worker walks through: every cell (fixed seeds), or look after look while the sequential
    rule asks for more (it is asked again after each pass, so workers anywhere move to the next look
    as soon as the storage holds the last one).

    With seeds = "auto", a worker whose every remaining cell of the look is held by others waits for
    them rather than leaving: the next look's cells would otherwise fall to fewer workers. It offers
    those cells again each time it looks, so that one whose worker died is taken over."""
    if not definition.schedule:
        yield from definition.cells()
        return
    seen: set[str] = set()
    while True:
        needed = todo(study, definition)
        if not needed:
            return
        fresh = [c for c in needed if c[0] not in seen]
        if not fresh:  # all held by other workers (claiming refuses a live holder's cell)
            time.sleep(LOOK_WAIT_S)
            seen.clear()
            continue
        for c in fresh:
            seen.add(c[0])
            yield c


def record(study, definition: Definition, cell: str, variant: str, seed: int, *, run_id: str | None,
           metrics: dict[str, float] | None = None, failure: str | None = None) -> None:
    """Add the finished cell as one trial: COMPLETE with the metric, or FAIL with the reason."""
    import optuna
    from optuna.trial import TrialState

    attrs: dict[str, Any] = {"cell": cell, "variant": variant, "seed": seed, "run_id": run_id}
    value = None
    if failure is None:
        metrics = {k: float(v) for k, v in (metrics or {}).items()}
        value = metrics.get(definition.metric)
        if value is None or not math.isfinite(value):
            failure = (f"metric {definition.metric} was not produced"
                       f" (got {value})" if value is not None else
                       f"metric {definition.metric} was not produced; the run has: {', '.join(sorted(metrics))}")
        attrs["metrics"] = {k: v for k, v in metrics.items() if math.isfinite(v)}
    if failure is not None:
        attrs["failure"] = failure
        trial = optuna.trial.create_trial(state=TrialState.FAIL, user_attrs=attrs)
    else:
        trial = optuna.trial.create_trial(state=TrialState.COMPLETE, value=value, user_attrs=attrs)
    study.add_trial(trial)
