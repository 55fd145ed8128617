"""The ablation engine end to end: plans, verdicts, failures, reports, resuming after kill -9, and
several workers on one SQLite study, each cell (variant x seed) run exactly once.

Studies are small (MNIST-1D with 1200 samples, an [8, 16] CNN, a few epochs: well under a second
a run on an idle core) so the whole file stays within a couple of minutes on 2 shared cores.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import select
from sweeps import CLI, as_cli, overrides, small_recipe

from dltricks.cli import main as cli_main
from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search import claims
from dltricks.search import study as st
from dltricks.search.ablate import ablate, define, report
from dltricks.search.plan import MAX_FACTORIAL, plan_variants
from dltricks.tricks import get as get_trick
from dltricks.tricks import parse_trick

SMALL = overrides(epochs=3)


def small(*more: str) -> Recipe:
    return small_recipe(*more, epochs=3)


def cli_overrides(*more: str) -> list[str]:
    return as_cli([*SMALL, *more])


def trial_counts(ledger: Ledger, study: str) -> tuple[Counter, Counter]:
    """Trials per cell in the Optuna storage: all of them, and the finished (COMPLETE or FAIL) ones."""
    trials = optuna.load_study(study_name=study, storage=ledger.url).get_trials(deepcopy=False)
    every = Counter(t.user_attrs.get("cell") for t in trials)
    finished = Counter(t.user_attrs.get("cell") for t in trials if t.state in (TrialState.COMPLETE, TrialState.FAIL))
    return every, finished


def assert_exactly_once(ledger: Ledger, study: str) -> list[str]:
    """Every cell of the study has exactly one trial, and that trial is finished. Returns the cells."""
    _, definition = st.load(ledger, study)
    cells = [c for c, _, _ in definition.cells()]
    every, finished = trial_counts(ledger, study)
    assert dict(every) == {c: 1 for c in cells}, f"trials per cell: {dict(every)}"
    assert dict(finished) == {c: 1 for c in cells}, f"finished trials per cell: {dict(finished)}"
    return cells


def claim_rows(ledger: Ledger, study: str) -> list:
    return ledger.transaction(lambda c: c.execute(
        select(claims.claims).where(claims.claims.c.study == study)).all())


# ---- plans -----------------------------------------------------------------------------------------

def test_plan_add_remove_cumulative_factorial():
    r = small()
    tricks = [get_trick("label_smoothing"), parse_trick("wd:train.weight_decay=0.05")]
    ls_on, ls_off = get_trick("label_smoothing").on, get_trick("label_smoothing").off
    (key,) = ls_on

    variants, ref = plan_variants(r, tricks, "add")
    assert ref == "baseline"
    assert [v.name for v in variants] == ["baseline", "+label_smoothing", "+wd"]
    by = {v.name: v for v in variants}
    assert by["baseline"].on == () and by["baseline"].patch == {**ls_off, "train.weight_decay": 0.0}
    assert by["+label_smoothing"].patch == {**ls_on, "train.weight_decay": 0.0}
    assert by["+wd"].patch == {**ls_off, "train.weight_decay": 0.05}

    variants, ref = plan_variants(r, tricks, "remove")
    assert ref == "all"
    assert [v.name for v in variants] == ["all", "-label_smoothing", "-wd"]
    by = {v.name: v for v in variants}
    assert by["all"].patch == {key: ls_on[key], "train.weight_decay": 0.05}
    assert by["-label_smoothing"].on == ("wd",) and by["-label_smoothing"].patch[key] == ls_off[key]
    assert by["-wd"].patch == {key: ls_on[key], "train.weight_decay": 0.0}

    three = [*tricks, parse_trick("drop:model.dropout=0.2")]
    variants, ref = plan_variants(r, three, "cumulative")
    assert ref == "baseline"
    assert [v.name for v in variants] == ["baseline", "+label_smoothing", "+label_smoothing +wd",
                                          "+label_smoothing +wd +drop"]
    assert [v.patch["model.dropout"] for v in variants] == [r.model.dropout, r.model.dropout, r.model.dropout, 0.2]
    assert [v.patch["train.weight_decay"] for v in variants] == [0.0, 0.0, 0.05, 0.05]

    variants, ref = plan_variants(r, three, "factorial")
    assert ref == "baseline" and len(variants) == 8
    assert len({v.on for v in variants}) == 8 and len({v.name for v in variants}) == 8
    for v in variants:  # each variant's patch turns on exactly the tricks it names
        assert (v.patch[key] == ls_on[key]) == ("label_smoothing" in v.on)
        assert (v.patch["train.weight_decay"] == 0.05) == ("wd" in v.on)
        assert (v.patch["model.dropout"] == 0.2) == ("drop" in v.on)


def test_plan_custom_trick_off_is_the_recipes_value_and_on_wins_over_another_tricks_off():
    r = small("train.lr=0.004")
    # Both touch train.lr: a custom trick's off is the recipe's 0.004, which must not undo the other's on.
    slow, fast = parse_trick("slow:train.lr=1e-6"), parse_trick("fast:train.lr=0.1,train.optimizer=sgd")
    by = {v.name: v for v in plan_variants(r, [slow, fast], "add")[0]}
    assert by["baseline"].patch == {"train.lr": 0.004, "train.optimizer": r.train.optimizer}
    assert by["+slow"].patch == {"train.lr": 1e-6, "train.optimizer": r.train.optimizer}
    assert by["+fast"].patch == {"train.lr": 0.1, "train.optimizer": "sgd"}
    # of two tricks that are on, the later one wins
    assert {v.name: v for v in plan_variants(r, [slow, fast], "remove")[0]}["all"].patch["train.lr"] == 0.1


def test_plan_refuses_factorial_over_the_limit_duplicates_and_unknown_keys():
    r = small()
    many = [parse_trick(f"t{i}:train.weight_decay={i / 10}") for i in range(MAX_FACTORIAL + 1)]
    with pytest.raises(DltricksError, match="factorial"):
        plan_variants(r, many, "factorial")
    assert len(plan_variants(r, many[:MAX_FACTORIAL], "factorial")[0]) == 2 ** MAX_FACTORIAL
    assert len(plan_variants(r, many, "add")[0]) == len(many) + 1  # other modes take any number
    with pytest.raises(DltricksError, match="named twice"):
        plan_variants(r, [many[0], many[0]], "add")
    with pytest.raises(DltricksError, match="train.lrr"):
        plan_variants(r, [parse_trick("typo:train.lrr=1")], "add")
    with pytest.raises(DltricksError, match="mode"):
        plan_variants(r, many[:1], "shuffle")  # type: ignore[arg-type]


# ---- one real study, shared by the tests below ----------------------------------------------------

TRICKS = ["noop:train.threads='auto'", "slow:train.lr=1e-6", "bad:train.loss=dice",
          "nan:train.optimizer=sgd,train.lr=1e30"]
SEEDS = 3  # the decision rule gives verdicts from 3 paired seeds (the classic sign-flip p cannot, below 6)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    home = tmp_path_factory.mktemp("ablate-home")
    ledger = Ledger(f"sqlite:///{home / 'ledger.db'}", root=home)
    t0 = time.monotonic()
    result = ablate(small(), TRICKS, mode="add", seeds=SEEDS, workers=1, study="main", ledger=ledger,
                    out=home / "report", progress=False)
    return {"home": home, "ledger": ledger, "result": result, "seconds": time.monotonic() - t0}


def test_study_verdicts_noop_equivalent_slow_hurts(study):
    r = study["result"]
    stats = {s.variant: s for s in r.stats}
    assert list(stats) == ["baseline", "+noop", "+slow", "+bad", "+nan"]
    assert stats["baseline"].verdict == "baseline" and stats["baseline"].n == SEEDS
    noop = stats["+noop"]
    assert noop.verdict == "equivalent" and noop.n == SEEDS and noop.n_paired == SEEDS
    assert noop.delta == 0.0 and noop.p == 1.0 and noop.p_holm == 1.0
    slow = stats["+slow"]
    assert slow.verdict == "hurts", slow
    assert slow.n_paired == SEEDS and slow.delta < -0.05 and slow.ci_high < 0 and slow.p_beyond_holm < 0.05
    assert slow.prob_worse > 0.97 and math.isnan(slow.p_signflip)  # the sign-flip cross-check starts at 6 seeds
    assert r.verdicts == {"baseline": "baseline", "+noop": "equivalent", "+slow": "hurts",
                          "+bad": "inconclusive", "+nan": "inconclusive"}
    assert "no paired seed" in stats["+bad"].reason and stats["+slow"].rope == 0.005
    assert r.scores["+noop"] == r.scores["baseline"]  # the same recipe, the same seeds: the same runs


def test_study_failures_are_reported_with_their_reasons(study):
    r = study["result"]
    failed = Counter(f["variant"] for f in r.failures)
    assert failed == {"+bad": SEEDS, "+nan": SEEDS}
    for f in r.failures:
        if f["variant"] == "+bad":
            assert "train.loss" in f["reason"] and "segmentation" in f["reason"], f
        else:
            assert "NaN" in f["reason"] and "train.lr" in f["reason"], f
    stats = {s.variant: s for s in r.stats}
    assert stats["+bad"].n == 0 and stats["+nan"].n == 0
    md = (study["home"] / "report" / "report.md").read_text()
    assert "segmentation" in md and "NaN" in md


def test_study_runs_are_in_the_ledger_linked_to_the_study(study):
    ledger, r = study["ledger"], study["result"]
    runs = ledger.runs(study="main")
    # one run per cell that started, failed ones included; a patch refused before its first step (+bad)
    # leaves no run (issue 20.5), and its trial names none
    assert len(runs) == 4 * SEEDS
    assert all(run.study == "main" and run.variant for run in runs)
    by_variant = Counter((run.variant, run.status) for run in runs)
    assert by_variant == {("baseline", "completed"): SEEDS, ("+noop", "completed"): SEEDS,
                          ("+slow", "completed"): SEEDS, ("+nan", "failed"): SEEDS}
    assert all("NaN" in (run.failure or "") for run in runs if run.variant == "+nan")
    # each trial names its run, and the run trained that variant with that seed
    trials = optuna.load_study(study_name="main", storage=ledger.url).get_trials(deepcopy=False)
    by_id = {run.id: run for run in runs}
    for t in trials:
        a = t.user_attrs
        if a["variant"] == "+bad":
            assert a["run_id"] is None
            continue
        run = by_id[a["run_id"]]
        assert run.variant == a["variant"] and run.seed == a["seed"]
        if t.state == TrialState.COMPLETE:
            assert run.metrics["test_accuracy"] == t.value == r.scores[a["variant"]][a["seed"]]
    slow_lrs = {run.recipe["train"]["lr"] for run in runs if run.variant == "+slow"}
    assert slow_lrs == {1e-6}
    assert assert_exactly_once(ledger, "main")


def test_study_report_files(study):
    paths = study["result"].report
    for key in ("csv", "md", "html", "forest", "seeds"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0, key
    rows = {row["variant"]: row for row in csv.DictReader(paths["csv"].open())}
    assert rows["+slow"]["verdict"] == "hurts" and rows["+noop"]["verdict"] == "equivalent"
    assert rows["+slow"]["changes"] == "train.lr: 0.003 -> 1e-06" and rows["+slow"]["rope"] == "0.005"
    html = paths["html"].read_text()
    assert "forest.png" in html and "hurts" in html


def test_same_call_again_runs_nothing(study):
    ledger = study["ledger"]
    every_before, _ = trial_counts(ledger, "main")
    runs_before = sorted(run.id for run in ledger.runs(study="main"))
    t0 = time.monotonic()
    again = ablate(small(), TRICKS, mode="add", seeds=SEEDS, workers=1, study="main", ledger=ledger,
                   out=study["home"] / "report", progress=False)
    assert time.monotonic() - t0 < max(5.0, study["seconds"] / 3)  # nothing was trained
    assert trial_counts(ledger, "main")[0] == every_before
    assert sorted(run.id for run in ledger.runs(study="main")) == runs_before
    assert again.verdicts == study["result"].verdicts and again.scores == study["result"].scores
    # the same study name with another sweep is refused, not mixed in
    with pytest.raises(DltricksError, match="different"):
        ablate(small(), TRICKS[:2], mode="add", seeds=SEEDS, study="main", ledger=ledger, progress=False)


def test_report_command_regenerates_from_storage(study):
    home, ledger = study["home"], study["ledger"]
    out = home / "regenerated"
    done = subprocess.run([*CLI, "report", "main", "--ledger", ledger.url, "--out", str(out)], cwd=home,
                          env={**os.environ, "DLTRICKS_HOME": str(home)}, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 1, done.stderr  # the report is written, and the study's failed cells say 1
    for name in ("report.csv", "report.md", "report.html", "forest.png", "seeds.png"):
        assert (out / name).is_file(), name
    assert (out / "report.csv").read_text() == (home / "report" / "report.csv").read_text()
    assert "hurts" in done.stdout and "failed" in done.stdout and "segmentation" in done.stdout


# ---- no change, no verdict; dead workers are retried up to a limit ---------------------------------------

def test_an_unchanged_variant_is_equivalent_even_if_its_runs_differ():
    from dltricks.ledger.stats import compare
    from dltricks.search.ablate import _unchanged_variants

    base = {s: 0.80 + 0.01 * s for s in range(6)}
    scores = {"baseline": base, "+noop": {s: v + 0.02 for s, v in base.items()},  # run-to-run noise, say
              "+good": {s: v + 0.05 + 0.001 * s for s, v in base.items()}}
    raw = {s.variant: s for s in compare(scores, "baseline", higher_is_better=True)}
    assert raw["+noop"].verdict == "helps"  # what the numbers alone would say
    d = define(small(), [parse_trick("noop:train.threads='auto'"), parse_trick("good:train.lr=0.01")], mode="add",
               seeds=6)
    assert _unchanged_variants(d) == {"+noop"}
    fixed = {s.variant: s for s in compare(scores, "baseline", higher_is_better=True,
                                           unchanged=_unchanged_variants(d))}
    assert fixed["+noop"].verdict == "equivalent" and fixed["+noop"].p == 1.0 and fixed["+noop"].p_holm == 1.0
    assert "same recipe" in fixed["+noop"].reason
    assert fixed["+good"].verdict == "helps" and fixed["+good"].p_holm <= raw["+good"].p_holm


def _reaped_pid() -> int:
    """The pid of a process that has exited (a worker killed long ago, say)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_cell_whose_workers_died_too_often_is_given_up_once(ledger_home):
    ledger = Ledger()
    d = define(small("train.epochs=1"), [parse_trick("ls:train.label_smoothing=0.1")], mode="add", seeds=1,
               study="dying")
    claims.ensure_table(ledger)
    st.create_or_load(ledger, d)
    cursed, healthy = [c for c, _, _ in d.cells()]
    pid = _reaped_pid()
    for attempt in range(claims.MAX_ATTEMPTS):  # three workers took the cell and died
        ledger.transaction(lambda c, a=attempt: c.execute(claims.claims.insert().values(
            study="dying", cell=cursed, attempt=a, host=claims.HOST, pid=pid, run_id=None,
            heartbeat=time.time(), state="running")))
    # one more dead attempt is not yet the limit for the cell next door
    ledger.transaction(lambda c: c.execute(claims.claims.insert().values(
        study="dying", cell=healthy, attempt=0, host=claims.HOST, pid=pid, run_id=None,
        heartbeat=time.time(), state="running")))
    from dltricks.search.worker import work

    assert work(ledger, "dying") == 1  # trained the healthy cell only
    r = report("dying", ledger=ledger, out=ledger_home / "r")
    assert r.failures == [{"variant": "baseline", "seed": 0, "reason": f"its worker died {claims.MAX_ATTEMPTS} times"}]
    assert r.scores["+ls"] and not r.scores["baseline"]
    assert_exactly_once(ledger, "dying")
    assert work(ledger, "dying") == 0  # and never again
    assert_exactly_once(ledger, "dying")


# ---- the recipe's [ablate] section --------------------------------------------------------------------

def test_recipe_ablate_section_drives_the_study(ledger_home):
    path = ledger_home / "sweep.toml"
    path.write_text(
        'base = "mnist1d-cnn"\nname = "sectioned"\n'
        '[data]\nnum_samples = 1200\n'
        '[model]\nchannels = [8, 16]\n'
        '[train]\nepochs = 2\nschedule = "constant"\n'
        '[ablate]\ntricks = ["label_smoothing", "wd:train.weight_decay=0.01"]\nmode = "remove"\n'
        'seeds = 2\nworkers = 2\nstudy = "from-section"\nmetric = "test_loss"\n')
    import dltricks

    result = dltricks.ablate(str(path), progress=False)  # the package's own entry point
    assert isinstance(result, dltricks.AblationResult)
    assert result.study == "from-section" and result.metric == "test_loss" and result.reference == "all"
    assert [s.variant for s in result.stats] == ["all", "-label_smoothing", "-wd"]
    assert all(s.n == 2 for s in result.stats)
    ledger = Ledger()
    _, d = st.load(ledger, "from-section")
    assert d.mode == "remove" and d.seeds == [0, 1] and not d.higher_is_better
    assert len(assert_exactly_once(ledger, "from-section")) == 6
    assert "ablate" not in d.recipe  # the sweep's settings are not part of what each run trains
    runs = ledger.runs(study="from-section")
    assert len(runs) == 6 and {run.status for run in runs} == {"completed"}
    assert (ledger_home / "reports" / "from-section" / "report.html").is_file()
    # workers = 2: this process and one `dltricks worker` child shared the cells (the child may have
    # found none left, as it starts while this process already trains)
    pids = {r.pid for r in claim_rows(ledger, "from-section")}
    assert os.getpid() in pids and len(pids) <= 2
    assert {run.pid for run in runs} == pids


# ---- resuming after kill -9 -------------------------------------------------------------------------

def start_and_kill(cmd: list[str], home: Path, ledger: Ledger, min_done: int) -> tuple[int, list]:
    """Start the study in its own process group, SIGKILL the group once ``min_done`` cells are done
    and a run is in flight; return the cells done and the runs left "running" by the kill."""
    proc = subprocess.Popen(cmd, cwd=home, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                _, finished = trial_counts(ledger, "killed")
            except KeyError:  # the study is not created yet
                finished = Counter()
            if sum(finished.values()) >= min_done and ledger.runs(study="killed", status="running"):
                break
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the study ended before it was killed: {proc.stderr.read()}"
    return sum(trial_counts(ledger, "killed")[1].values()), ledger.runs(study="killed", status="running")


def test_kill_9_then_rerun_finishes_every_cell_exactly_once(ledger_home):
    ledger = Ledger()
    cmd = [*CLI, "ablate", "mnist1d-cnn", *cli_overrides("train.epochs=6"), "--trick", "ls:train.label_smoothing=0.1",
           "--seeds", "3", "--workers", "1", "--study", "killed", "--quiet"]
    n_done, in_flight = start_and_kill(cmd, ledger_home, ledger, min_done=2)
    if not in_flight:  # the kill fell between two cells (a few ms in a second): kill the resumed study again
        n_done, in_flight = start_and_kill(cmd, ledger_home, ledger, min_done=n_done + 1)
    assert len(in_flight) == 1, "no run was in flight when the study was killed"
    done_before = {t.user_attrs["cell"]: t.user_attrs["run_id"]
                   for t in optuna.load_study(study_name="killed", storage=ledger.url).get_trials()}
    assert 2 <= len(done_before) == n_done < 6
    killed_run = in_flight[0]  # kill -9 left it no chance to record anything else
    # the report can be written from storage at any time: here with a cell still claimed by a dead worker
    partial = report("killed", ledger=ledger, out=ledger_home / "partial")
    assert sum(s.n for s in partial.stats) == len(done_before) and not partial.failures
    assert f"{len(done_before)} of 6 done" in (ledger_home / "partial" / "report.md").read_text()

    done = subprocess.run(cmd, cwd=ledger_home, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    cells = assert_exactly_once(ledger, "killed")
    assert len(cells) == 6
    trials = optuna.load_study(study_name="killed", storage=ledger.url).get_trials()
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    after = {t.user_attrs["cell"]: t.user_attrs["run_id"] for t in trials}
    assert {c: after[c] for c in done_before} == done_before  # finished cells were not rerun
    # the killed run is marked failed; every other run is one completed cell
    killed_run = ledger.get(killed_run.id)
    assert killed_run.status == "failed" and "died" in (killed_run.failure or "")
    runs = ledger.runs(study="killed")
    assert Counter(run.status for run in runs) == {"completed": 6, "failed": 1}
    assert {run.id for run in runs if run.status == "completed"} == set(after.values())
    # the killed cell was claimed again (attempt 1); every claim is closed
    rows = claim_rows(ledger, "killed")
    (dead,) = [r for r in rows if r.run_id == killed_run.id]
    assert dead.state == "running"  # the dead worker's claim, superseded by the next attempt
    latest = {}
    for r in sorted(rows, key=lambda r: r.attempt):
        latest[r.cell] = r
    assert sorted(latest) == sorted(cells) and {r.state for r in latest.values()} == {"done"}
    assert latest[dead.cell].attempt > dead.attempt and latest[dead.cell].run_id == after[dead.cell]


# ---- several workers on one SQLite file ---------------------------------------------------------------

def test_four_sqlite_workers_run_each_cell_exactly_once(ledger_home):
    """The DESIGN pitfall: four processes popping Optuna trials from one SQLite study raced. Claims
    are rows with a primary key, so of two workers that want the same cell only one gets it."""
    ledger = Ledger()
    tricks = [parse_trick("ls:train.label_smoothing=0.1"), parse_trick("wd:train.weight_decay=0.01")]
    definition = define(small("train.epochs=1"), tricks, mode="add", seeds=4, study="four")
    claims.ensure_table(ledger)
    st.create_or_load(ledger, definition)
    env = {**os.environ, "DLTRICKS_HOME": str(ledger_home), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*CLI, "worker", "--study", "four", "--storage", ledger.url, "--threads", "1",
                               "--quiet"], cwd=ledger_home, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    ran = [int(out.split("ran ")[1].split()[0]) for out, _ in outputs]
    cells = assert_exactly_once(ledger, "four")
    assert len(cells) == 12 and sum(ran) == 12
    rows = claim_rows(ledger, "four")
    assert sorted((r.cell, r.attempt, r.state) for r in rows) == sorted((c, 0, "done") for c in cells)
    assert {r.pid for r in rows} <= {p.pid for p in procs}
    runs = ledger.runs(study="four")
    assert len(runs) == 12 and {run.status for run in runs} == {"completed"}
    assert {run.pid for run in runs} == {r.pid for r in rows}


# ---- CLI errors ---------------------------------------------------------------------------------------

def test_cli_unknown_trick_is_one_line_with_did_you_mean(ledger_home, capsys):
    code = cli_main(["ablate", "mnist1d-cnn", "--trick", "label_smothing", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "label_smothing" in err and "did you mean label_smoothing?" in err


def test_cli_factorial_with_six_tricks_is_refused(ledger_home, capsys):
    tricks = [a for i in range(6) for a in ("--trick", f"t{i}:train.weight_decay=0.0{i}")]
    code = cli_main(["ablate", "mnist1d-cnn", *tricks, "--mode", "factorial", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "factorial" in err and "2^k" in err
    code = cli_main(["ablate", "mnist1d-cnn", "--trick", "x:train.lrr=1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "train.lrr" in err


def test_cli_bad_values_and_unknown_metrics_are_refused_before_any_training(ledger_home, capsys,
                                                                            monkeypatch):
    monkeypatch.setenv("DLTRICKS_CACHE", str(ledger_home / "cache"))
    code = cli_main(["ablate", "mnist1d-cnn", *cli_overrides(), "--trick", "x:train.lr=abc", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "variant +x" in err and "train.lr = 'abc'" in err
    code = cli_main(["ablate", "mnist1d-cnn", *cli_overrides(), "--trick", "label_smoothing",
                     "--metric", "test_acuracy", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "unknown metric 'test_acuracy' (did you mean test_accuracy?)" in err and "val_loss" in err
    # nothing was trained, nothing was stored: the ledger was never opened
    assert not (ledger_home / "ledger.db").exists() and not (ledger_home / "runs").exists()


def test_cli_ablate_exits_1_when_cells_failed(ledger_home, capsys, monkeypatch):
    monkeypatch.setenv("DLTRICKS_CACHE", str(ledger_home / "cache"))
    code = cli_main(["ablate", "mnist1d-cnn", *cli_overrides("data.num_samples=300", "train.epochs=1"),
                     "--trick", "nan:train.optimizer=sgd,train.lr=1e30", "--seeds", "1", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 1 and "failed" in printed and "NaN" in printed


# ---- verdicts with 3 seeds, seeds = "auto", what the Python user and the terminal see ----------------

TINY = SMALL  # 1200 samples, 3 epochs: the baseline learns (~0.5), the crippled lr stays at chance


@pytest.mark.slow
def test_cli_cripple_hurts_and_noop_is_equivalent_with_3_seeds_and_auto_stops_there(ledger_home, capsys):
    args = ["ablate", "mnist1d-cnn", *(a for o in TINY for a in ("-o", o)), "--trick", "cripple:train.lr=1e-6",
            "--trick", "noop:train.threads='auto'", "-q"]
    assert cli_main([*args, "--seeds", "3"]) == 0
    text = capsys.readouterr().out
    row = {line.split()[0]: line for line in text.splitlines() if line.strip().startswith("+")}
    assert "hurts" in row["+cripple"] and "equivalent" in row["+noop"], text
    assert "ROPE ±0.005" in text
    # seeds = auto: both verdicts come at the first look (3 seeds), so no fourth seed is ever trained.
    assert cli_main([*args, "--seeds", "auto", "--max-seeds", "5", "--study", "auto"]) == 0
    text = capsys.readouterr().out
    assert "hurts" in text and "equivalent" in text and "partial" not in text
    ledger = Ledger()
    assert sorted({r.seed for r in ledger.runs(study="auto")}) == [0, 1, 2]
    assert len(ledger.runs(study="auto")) == 9


def _fake_study(ledger: Ledger, name: str, recipe: Recipe, tricks: list[str], *, seeds, rope=None):
    d = define(recipe, [parse_trick(t) for t in tricks], mode="add", seeds=seeds, study=name, rope=rope)
    claims.ensure_table(ledger)
    return st.create_or_load(ledger, d), d


def _record(optuna_study, d: st.Definition, variant: str, seed: int, value: float) -> None:
    i = [v.name for v in d.variants].index(variant)
    st.record(optuna_study, d, f"v{i}s{seed}", variant, seed, run_id=None, metrics={d.metric: value})


def test_seeds_auto_asks_for_more_seeds_only_for_inconclusive_variants(ledger_home):
    ledger = Ledger()
    study, d = _fake_study(ledger, "seq", small(), ["big:train.lr=1e-6", "small:train.weight_decay=1e-4"],
                           seeds="auto")
    assert d.schedule == [3, 5, 8, 10] and d.seeds == list(range(10))
    first = st.todo(study, d)
    assert {(v.name, seed) for _, v, seed in first} == {(n, s) for n in ("baseline", "+big", "+small")
                                                         for s in range(3)}
    for seed in range(3):
        _record(study, d, "baseline", seed, 0.90 + 0.01 * seed)
        _record(study, d, "+big", seed, 0.10 + 0.01 * seed)  # overwhelming: decided at the first look
        _record(study, d, "+small", seed, 0.90 + 0.01 * seed + (0.004, -0.003, 0.006)[seed])  # unclear
    nxt = st.todo(study, d)
    assert {(v.name, seed) for _, v, seed in nxt} == {(n, s) for n in ("baseline", "+small") for s in (3, 4)}
    partial = report("seq", ledger=ledger)
    assert partial.partial and partial.cells_done == 9 and partial.cells_total == 13
    assert partial.verdicts["+big"] == "hurts" and partial.verdicts["+small"] == "inconclusive"
    assert "waiting for the look at 5" in str(partial)
    for seed in (3, 4):
        _record(study, d, "baseline", seed, 0.90 + 0.01 * seed)
        _record(study, d, "+small", seed, 0.90 + 0.01 * seed + 0.001)
    assert {seed for _, _, seed in st.todo(study, d)} == {5, 6, 7}  # still open: the look at 8 seeds
    done = report("seq", ledger=ledger)
    assert {s.variant: s.look for s in done.stats[1:]} == {"+big": 3, "+small": None}


def test_with_seeds_auto_a_worker_waits_for_the_look_instead_of_leaving_it_to_fewer(ledger_home, monkeypatch):
    """The last cell of a look is another worker's: this one waits for it, offering it again each time it
    looks (a dead holder's cell is taken over that way), then goes on with the next look's cells."""
    ledger = Ledger()
    study, d = _fake_study(ledger, "wait", small(), ["small:train.weight_decay=1e-4"], seeds="auto")
    for seed in range(3):
        _record(study, d, "baseline", seed, 0.90 + 0.01 * seed)
        if seed < 2:
            _record(study, d, "+small", seed, 0.90 + 0.01 * seed + (0.004, -0.003)[seed])
    waits = []

    def sleep(s: float) -> None:  # meanwhile the other worker records its cell: the look at 3 is in
        waits.append(s)
        if len(waits) == 2:
            _record(study, d, "+small", 2, 0.926)

    monkeypatch.setattr(time, "sleep", sleep)
    cells = st.cells_to_run(study, d)
    held = next(cells)
    assert (held[1].name, held[2]) == ("+small", 2)  # offered; a live holder's claim refuses it
    again = next(cells)
    assert again[0] == held[0] and waits == [st.LOOK_WAIT_S]  # not done yet: offered again after a wait
    following = next(cells)
    assert len(waits) == 2 and following[2] in (3, 4)  # the next look, not the end of this worker


def test_result_prints_as_text_partial_and_notes_in_terminal_and_report(ledger_home, capsys):
    ledger = Ledger()
    # mnist1d-cnn has one_cycle on; --trick one_cycle makes the baseline a constant schedule.
    recipe = Recipe.load("mnist1d-cnn")
    study, d = _fake_study(ledger, "live", recipe, ["one_cycle"], seeds=3)
    for seed in range(2):
        _record(study, d, "baseline", seed, 0.90)
    result = report("live", ledger=ledger)
    text = str(result)
    assert "<rich" not in text and "baseline" in text and "+one_cycle" in text
    assert "partial: 2 of 6 cells" in text and text == f"{result.table()}\n" + "\n".join(result.lines())
    assert "one_cycle on" in text and "'one_cycle' -> 'constant'" in text
    assert repr(result).startswith("<AblationResult live (test_accuracy, 2/6 cells)")
    html = result.report["html"].read_text()
    assert "partial: 2 of 6 cells" in html and "one_cycle on" in html
    assert cli_main(["report", "live"]) == 0
    out = capsys.readouterr().out
    assert "partial: 2 of 6 cells" in out and "one_cycle on" in out
    # a ROPE given to the report judges the same runs anew
    assert report("live", ledger=ledger, rope=0.02).rope == 0.02
