"""dltricks tune: samplers on a synthetic objective, space parsing and its errors, pruning, a tiny real
search end to end (CLI, best.toml that trains, re-run verdict, Pareto front), kill -9 then rerun ends
with exactly N trials, and a `dltricks worker` joining through PostgreSQL."""

from __future__ import annotations

import math
import os
import signal
import statistics
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from sweeps import CLI, as_cli, overrides, small_recipe

from dltricks.cli import main as cli_main
from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search import definition as sd
from dltricks.search import trials as tr
from dltricks.search import tune as tn
from dltricks.search.definition import SearchDefinition
from dltricks.search.space import Dim, default_tune_space, distributions, parse_space, parse_spec_arg, to_params

SMALL = overrides(epochs=1)


def small(*more: str) -> Recipe:
    return small_recipe(*more, epochs=1)


def cli_overrides(*more: str) -> list[str]:
    return as_cli([*SMALL, *more])


# ---- samplers on Branin (no training) ----------------------------------------------------------------

def branin(c: dict) -> float:
    x, y = c["x"], c["y"]
    return ((y - 5.1 / (4 * math.pi ** 2) * x * x + 5 / math.pi * x - 6) ** 2
            + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x) + 10)


BRANIN = [Dim("x", "float", -5.0, 10.0), Dim("y", "float", 0.0, 15.0)]


def simulate(sampler: str, seed: int, n: int) -> float:
    """The search loop as workers run it (propose from the finished trials, record the trial), on Branin."""
    d = SearchDefinition(name="branin", kind="tune", recipe={}, space=[x.to_json() for x in BRANIN], n_trials=n,
                         seeds=[0], objectives=["loss"], directions=["minimize"], strategy=sampler, search_seed=seed)
    history = []
    for k in range(n):
        config, notes = tn.propose(d, history, k, [])
        history.append(create_trial(value=branin(config), params=to_params(BRANIN, config),
                                    distributions=distributions(BRANIN), system_attrs=notes,
                                    user_attrs={"cell": f"t{k}", "config": config}))
    return min(t.value for t in history)


def test_tpe_and_cmaes_beat_random_on_branin():
    """Mean best-so-far over 5 search seeds after 60 trials (Branin's minimum is 0.398). CMA-ES keeps its
    state in the trials' system attributes: this also checks that it survives the stateless proposals."""
    best = {s: statistics.mean(simulate(s, seed, 60) for seed in range(5)) for s in ("random", "tpe", "cmaes")}
    assert best["tpe"] < best["random"] and best["cmaes"] < best["random"], best
    assert best["tpe"] < 0.7, best


@pytest.mark.slow
def test_gp_beats_random_on_branin_with_few_trials():
    gp = statistics.mean(simulate("gp", seed, 16) for seed in range(2))
    rnd = statistics.mean(simulate("random", seed, 16) for seed in range(10))
    assert gp < rnd, (gp, rnd)


def test_proposals_are_reproducible_from_the_history():
    assert simulate("tpe", 3, 12) == simulate("tpe", 3, 12)
    assert simulate("random", 3, 12) != simulate("random", 4, 12)


# ---- spaces ---------------------------------------------------------------------------------------

def test_space_parses_ranges_choices_and_the_short_form():
    r = small()
    space = parse_space(r, {"train.lr": {"low": 1e-4, "high": 0.1, "log": True}, "train.epochs": {"low": 1, "high": 3},
                            "model.norm": ["batch", "group"], "model.channels": [[8], [8, 16]]})
    kinds = {d.key: d.kind for d in space}
    assert kinds == {"train.lr": "float", "train.epochs": "int", "model.norm": "categorical",
                     "model.channels": "categorical"}
    assert space[0].log and space[1].low == 1 and space[1].high == 3
    ch = space[3]
    assert ch.decode(ch.encode([8, 16])) == [8, 16]  # lists travel through Optuna as JSON text
    assert parse_spec_arg("train.lr=1e-4..0.1:log") == ("train.lr", {"low": 1e-4, "high": 0.1, "log": True})
    assert parse_spec_arg('model.norm=["batch", "group"]') == ("model.norm", ["batch", "group"])
    keys = [d.key for d in default_tune_space(r)]
    assert keys == ["train.lr", "train.weight_decay", "train.schedule", "train.label_smoothing"]


@pytest.mark.parametrize("entries, message", [
    ({}, "the search space is empty"),
    ({"train.lrr": {"low": 0.1, "high": 1.0}}, "no recipe key of that name (did you mean train.lr?)"),
    ({"train.lr": {"low": 0.1, "high": 0.01}}, "low must be below high"),
    ({"train.lr": {"low": 0.0, "high": 0.1, "log": True}}, "a log range needs low > 0"),
    ({"train.lr": {"low": 1e-3, "hihg": 0.1}}, "unknown range key 'hihg' (did you mean high?)"),
    ({"train.epochs": {"low": 1.5, "high": 4}}, "is a whole number"),
    ({"model.norm": ["batch", "bogus"]}, "'bogus' is not a valid value"),
    ({"model.norm": []}, "needs at least one value"),
    ({"model.norm": {"low": 1, "high": 2}}, "not a number: give a list of choices"),
    ({"train.label_smoothing": {"low": 0.0, "high": 1.5}}, "1.5 is not a valid value"),
])
def test_space_errors_name_the_key_and_what_is_valid(entries, message):
    with pytest.raises(DltricksError) as e:
        parse_space(small(), entries)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_recipe_tune_section_is_the_space_and_refuses_unknown_settings(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text('base = "mnist1d-cnn"\n[tune]\ntrials = 3\nsampler = "random"\n'
                 '"train.lr" = { low = 1e-4, high = 0.1, log = true }\n')
    r = Recipe.load(str(f))
    assert r.tune.trials == 3 and r.tune.space() == {"train.lr": {"low": 1e-4, "high": 0.1, "log": True}}
    d = tn.define(r)
    assert [x["key"] for x in d.space] == ["train.lr"] and d.strategy == "random"
    assert "tune" not in d.recipe and "nas" not in d.recipe  # the sweep's own settings are not trained
    with pytest.raises(DltricksError, match="unknown key 'trails' \\(did you mean trials\\?\\)"):
        Recipe.load(str(f), ["tune.trails=4"])
    with pytest.raises(DltricksError, match="cmaes sampler optimises one objective"):
        tn.define(r, sampler="cmaes", objective=["test_accuracy", "params"])
    with pytest.raises(DltricksError, match="pruning judges the per-epoch validation metric"):
        tn.define(r.patch({"data.val_fraction": 0.0}), pruner="median")


def test_median_pruner_stops_a_trial_below_the_median_of_earlier_epochs():
    d = tn.define(small("train.epochs=5"), space=["train.lr=1e-4..0.1:log"], pruner="median", trials=5)
    dims = d.dims
    study = optuna.create_study(direction="maximize")
    for k in range(4):
        study.add_trial(create_trial(value=0.8, params=to_params(dims, {"train.lr": 0.01}),
                                     distributions=distributions(dims), user_attrs={"cell": f"t{k}"},
                                     intermediate_values={e: 0.5 + 0.1 * e for e in range(1, 6)}))
    good = tr._pruning_trial(study, d, {"train.lr": 0.01})
    good.report(0.75, 2)
    bad = tr._pruning_trial(study, d, {"train.lr": 0.01})
    bad.report(0.3, 2)
    assert not good.should_prune() and bad.should_prune()


# ---- a real search ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_tune_end_to_end_best_toml_trains_and_rerun_verdict(ledger_home, capsys):
    code = cli_main(["tune", "mnist1d-cnn", *cli_overrides(), "--sampler", "random", "--trials", "3",
                     "--seeds-per-trial", "2", "--space", "train.lr=1e-3..3e-2:log",
                     "--space", 'model.norm=["batch", "group"]', "--rerun-seeds", "2", "--best", "best.toml",
                     "--study", "tiny", "--quiet"])
    text = capsys.readouterr().out
    assert code == 0, text
    ledger = Ledger()
    study, d = sd.load(ledger, "tiny")
    done = sd.finished(study)
    assert [t.user_attrs["cell"] for t in done] == ["t0", "t1", "t2"] and len(study.trials) == 3
    # each trial: the mean over the same two seeds, two ledger runs linked to the study and the cell
    for t in done:
        seeds = t.user_attrs["seeds"]
        assert sorted(seeds) == ["0", "1"]
        assert t.value == pytest.approx(statistics.mean(m["test_accuracy"] for m in seeds.values()))
        runs = [ledger.get(i) for i in t.user_attrs["run_ids"]]
        assert [r.seed for r in runs] == [0, 1] and {r.variant for r in runs} == {t.user_attrs["cell"]}
    assert "re-run on 2 fresh seeds" in text and "best recipe: best.toml" in text
    best = max(done, key=lambda t: t.value)
    recipe = Recipe.load("best.toml")
    assert recipe.get("model.norm") == best.user_attrs["config"]["model.norm"]
    assert recipe.train.lr == pytest.approx(best.user_attrs["config"]["train.lr"])
    from dltricks.runner.run import train

    assert train(recipe, ledger=ledger, progress=False).status == "completed"
    report = ledger_home / "reports" / "tiny"
    assert {"report.html", "trials.csv", "history.png", "parallel.png"} <= {p.name for p in report.iterdir()}
    html = (report / "report.html").read_text()
    assert "re-run" in html and "fresh seeds" in html
    # the re-run is a two-variant study on fresh seeds (2 and 3), paired with the start recipe
    rerun_runs = [r for r in ledger.runs() if r.study and r.study.startswith("tiny-rerun")]
    assert sorted((r.variant, r.seed) for r in rerun_runs) == [("best", 2), ("best", 3), ("start", 2), ("start", 3)]
    # the same command again trains nothing
    n_runs = len(ledger.runs())
    assert cli_main(["tune", "mnist1d-cnn", *cli_overrides(), "--sampler", "random", "--trials", "3",
                     "--seeds-per-trial", "2", "--space", "train.lr=1e-3..3e-2:log",
                     "--space", 'model.norm=["batch", "group"]', "--rerun-seeds", "2", "--study", "tiny",
                     "--quiet"]) == 0
    assert len(ledger.runs()) == n_runs


@pytest.mark.slow
def test_multi_objective_gives_a_pareto_front(ledger_home):
    result = tn.tune(small(), space=['model.channels=[[4], [8, 16], [16, 32]]'], sampler="tpe", trials=3,
                     objective=["test_accuracy", "params"], rerun_seeds=0, study="mo", progress=False)
    assert result.objectives == ["test_accuracy", "params"] and result.directions == ["maximize", "minimize"]
    assert result.pareto and result.best in result.pareto
    for r in result.trials:  # nothing off the front beats a front member on both
        assert all(r.values[0] <= p.values[0] or r.values[1] >= p.values[1] for p in result.pareto if r not in
                   result.pareto)
    assert "front" in result.report


def test_cli_errors_are_one_line(ledger_home, capsys):
    assert cli_main(["tune", "mnist1d-cnn", "--space", "train.lrr=1e-4..0.1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "did you mean train.lr?" in err and "\n" not in err
    assert cli_main(["tune", "mnist1d-cnn", "--space", "train.lr=fast", "--quiet"]) == 2
    assert "give a range" in capsys.readouterr().err
    assert not (ledger_home / "ledger.db").exists()  # refused before the ledger was opened


# ---- kill -9, then rerun: exactly N trials ---------------------------------------------------------------

def _trials(ledger: Ledger, name: str) -> list:
    return optuna.load_study(study_name=name, storage=ledger.url).get_trials(deepcopy=False)


def start_and_kill(cmd: list[str], home: Path, ledger: Ledger, min_done: int) -> None:
    proc = subprocess.Popen(cmd, cwd=home, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                n = len(_trials(ledger, "killed"))
            except KeyError:
                n = 0
            if n >= min_done and ledger.runs(study="killed", status="running"):
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the search ended before it was killed: {proc.stderr.read()}"


@pytest.mark.slow
def test_kill_9_then_rerun_ends_with_exactly_n_trials_none_twice(ledger_home):
    ledger = Ledger()
    cmd = [*CLI, "tune", "mnist1d-cnn", *cli_overrides("train.epochs=4"), "--sampler", "tpe", "--trials", "4",
           "--space", "train.lr=1e-3..3e-2:log", "--rerun-seeds", "0", "--study", "killed", "--quiet"]
    start_and_kill(cmd, ledger_home, ledger, min_done=1)
    if not ledger.runs(study="killed", status="running"):  # the kill fell between two trials: again
        start_and_kill(cmd, ledger_home, ledger, min_done=len(_trials(ledger, "killed")) + 1)
    (killed,) = ledger.runs(study="killed", status="running")
    before = {t.user_attrs["cell"]: t.user_attrs["run_ids"] for t in _trials(ledger, "killed")}
    assert 1 <= len(before) < 4
    stored = optuna.load_study(study_name="killed", storage=ledger.url).user_attrs[tr.PROPOSAL + killed.variant]

    done = subprocess.run(cmd, cwd=ledger_home, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    trials = _trials(ledger, "killed")
    assert Counter(t.user_attrs["cell"] for t in trials) == {f"t{k}": 1 for k in range(4)}
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    after = {t.user_attrs["cell"]: t for t in trials}
    assert {c: after[c].user_attrs["run_ids"] for c in before} == before  # finished trials were not rerun
    # the killed trial was taken over with the configuration its first worker had drawn
    assert after[killed.variant].user_attrs["config"] == stored["config"]
    assert ledger.get(killed.id).status == "failed" and "died" in (ledger.get(killed.id).failure or "")
    assert Counter(r.status for r in ledger.runs(study="killed")) == {"completed": 4, "failed": 1}


# ---- a worker elsewhere, through PostgreSQL --------------------------------------------------------------

@pytest.mark.slow
def test_worker_joins_a_tune_study_through_postgresql(fresh_postgres_url, ledger_home):
    ledger = Ledger(url=fresh_postgres_url)
    d = tn.define(small(), space=["train.lr=1e-3..3e-2:log"], sampler="random", trials=3, study="pg")
    from dltricks.search.claims import ensure_table

    ensure_table(ledger)
    sd.create_or_load(ledger, d)
    env = {**os.environ, "DLTRICKS_LEDGER": fresh_postgres_url}
    done = subprocess.run([*CLI, "worker", "--study", "pg", "--quiet"], cwd=ledger_home, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "ran 3 cells of pg" in done.stdout
    result = tn.tune(small(), space=["train.lr=1e-3..3e-2:log"], sampler="random", trials=3, study="pg",
                     rerun_seeds=0, ledger=ledger, progress=False)
    assert [r.number for r in result.trials] == [0, 1, 2] and result.n_complete == 3
    assert len(ledger.runs(study="pg")) == 3


# ---- the trial loop takes a proposer object ----------------------------------------------------------

def _search_imports() -> dict[str, set[str]]:
    """Module of dltricks.search -> the modules of dltricks.search it imports (anywhere in it)."""
    import ast

    import dltricks.search

    root = Path(dltricks.search.__file__).parent
    out: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "dltricks.search":
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dltricks.search."):
                found.add(node.module.split(".")[2])
        out[path.stem] = found
    return out


def test_the_trial_loop_never_imports_tune_or_nas_and_nothing_imports_the_worker_command():
    graph = _search_imports()

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for m in graph.get(todo.pop(), set()) - seen:
                seen.add(m)
                todo.append(m)
        return seen

    for low in ("trials", "cells", "local", "definition", "rerun", "results", "progress"):
        assert not reach(low) & {"tune", "nas", "worker"}, (low, reach(low))
    for module in graph:
        assert module not in reach(module), f"search/{module}.py is in an import circle"
    assert not any("worker" in imported for imported in graph.values())


def test_a_proposer_object_handed_to_the_trial_loop_draws_every_trial(ledger_home):
    """As Optuna hands a study a sampler: any object with ``propose`` drives the trials, and its notes are
    stored with each."""
    from dltricks.search import cells
    from dltricks.search.claims import ensure_table
    from dltricks.search.trials import SearchJob

    class Listed:
        def __init__(self):
            self.calls: list[tuple[int, int]] = []

        def propose(self, d, history, k, pending):
            self.calls.append((k, len(history)))
            return {"train.lr": [0.01, 0.02][k]}, {"mine": k}

    ledger = Ledger()
    d = tn.define(small(), space=["train.lr=1e-3..3e-2:log"], sampler="random", trials=2, study="own")
    ensure_table(ledger)
    sd.create_or_load(ledger, d)
    proposer = Listed()
    assert cells.work(SearchJob(ledger, "own", proposer)) == 2
    done = sd.finished(sd.load(ledger, "own")[0])
    assert [sd.config_of(t) for t in done] == [{"train.lr": 0.01}, {"train.lr": 0.02}]
    assert [t.system_attrs for t in done] == [{"mine": 0}, {"mine": 1}]
    assert proposer.calls == [(0, 0), (1, 1)]  # the second saw the first finished
    assert all(t.state == TrialState.COMPLETE for t in done)
