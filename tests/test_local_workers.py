"""Local workers of a sweep start before the study exists and get it through stdin; a sweep that never
starts leaves them nothing to do; start-up imports stay light."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search import local
from dltricks.search import study as st
from dltricks.search.ablate import ablate, define
from dltricks.search.study_job import StudyJob
from dltricks.tricks import parse_trick

SMALL = ["data.num_samples=600", "train.epochs=1", "model.channels=[4, 8]", "train.schedule=constant"]


def test_cli_start_up_imports_no_plotting_statistics_or_dynamo() -> None:
    code = ("import sys, dltricks.cli; "
            "print(sorted(m for m in ('matplotlib', 'scipy', 'optuna', 'torch._dynamo', 'sympy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_workers_of_a_sweep_that_never_starts_exit_without_a_trace(ledger_home) -> None:
    with pytest.raises(DltricksError, match="no trick"):
        with local.LocalWorkers(2, threads=1, opener=StudyJob) as children:
            assert len(children.procs) == 2 and all(p.poll() is None for p in children.procs)
            raise DltricksError("no trick called 'lable_smoothing'")
    assert all(p.returncode is not None for p in children.procs)  # stopped, not left behind
    assert list(ledger_home.iterdir()) == []  # no ledger, no runs, no report
    # the same through ablate(): a bad trick is refused before anything is written
    with pytest.raises(DltricksError):
        ablate(Recipe.load("mnist1d-cnn", SMALL), ["lable_smoothing"], seeds=1, workers=2, progress=False)
    assert list(ledger_home.iterdir()) == []


@pytest.mark.slow
def test_a_child_gets_the_study_through_stdin_and_runs_its_cells(ledger_home) -> None:
    ledger = Ledger()
    d = define(Recipe.load("mnist1d-cnn", SMALL), [parse_trick("ls:train.label_smoothing=0.1")], mode="add",
               seeds=1, study="handed")
    with local.LocalWorkers(1, threads=1, opener=StudyJob) as children:
        st.create_or_load(ledger, d)
        children.hand_over(ledger, d.name)
        assert ledger.url not in " ".join(children.procs[0].args)  # never on a command line (`ps`)
        assert isinstance(children.procs[0], local._Forked) == local.can_fork(1)  # forked where that is safe
        children.wait(StudyJob(ledger, d.name), on_tick=lambda: None)  # this process does no cell itself
    assert children.procs[0].returncode is not None  # done, or stopped once every cell was recorded
    runs = ledger.runs(study="handed")
    assert len(runs) == 2 and {r.status for r in runs} == {"completed"}
    assert {r.pid for r in runs} == {children.procs[0].pid} and os.getpid() not in {r.pid for r in runs}
    assert {r.metrics["threads"] for r in runs} == {1.0}  # the split the parent chose


def test_children_are_forked_only_where_that_is_safe() -> None:
    import threading

    if not sys.platform.startswith("linux") or threading.active_count() > 1:
        pytest.skip("forking needs Linux and a single Python thread")
    assert local.can_fork(1)
    assert not local.can_fork(2)  # a child with 2 threads would enter OpenMP regions: it starts fresh
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not local.can_fork(1)  # another thread might hold a lock the child would inherit
    finally:
        stop.set()
        other.join()


def test_a_forked_child_reports_its_error_in_one_line(ledger_home) -> None:
    if not local.can_fork(1):
        pytest.skip("this platform or process starts fresh children")
    ledger = Ledger()
    with pytest.raises(DltricksError, match="a worker stopped with an error: error: no study 'nowhere'"):
        with local.LocalWorkers(1, threads=1, opener=StudyJob) as children:
            assert isinstance(children.procs[0], local._Forked)
            children.hand_over(ledger, "nowhere")
            children.procs[0].wait(timeout=60)
    assert children.procs[0].returncode not in (0, None)


def test_plan_splits_the_free_cores(monkeypatch) -> None:
    import torch

    from dltricks import cores

    free = 4
    monkeypatch.setattr(cores, "free_cores", lambda sample_s=cores.SAMPLE_S: free)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert [local.plan(w) for w in (1, 2, 3, 4, 8)] == [(1, 4), (2, 2), (3, 1), (4, 1), (4, 1)]
        free = 1  # the others keep the cores busy: more processes would only take turns
        assert local.plan(2) == (1, 1)
        free = 4
        torch.set_num_threads(1)  # the user's own limit is a ceiling
        assert local.plan(1) == (1, 1)
    finally:
        torch.set_num_threads(before)


def test_a_process_marked_fresh_stays_so_until_it_starts_a_thread(monkeypatch) -> None:
    """Where a process has started no thread since it was marked fresh, no OpenMP pool can exist that a
    child with several threads would hang on; one new thread (a pool's, a Python one) ends it."""
    import threading

    if local._os_threads() is None:
        pytest.skip("the OS does not list this process's threads")
    monkeypatch.setattr(local, "_fresh_threads", None)
    assert not local.still_fresh()  # never marked: a test or a notebook may have run torch already
    local.mark_fresh()
    assert local.still_fresh()
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not local.still_fresh() and not local.can_fork(2)
    finally:
        stop.set()
        other.join()


@pytest.mark.slow
def test_the_command_coordinates_and_its_one_worker_trains_with_the_free_cores(tmp_path) -> None:
    """`dltricks ablate --workers 1` started as a process: one forked worker does every cell (with as many
    threads as free cores, up to what its own timing picks) while the command defines the study, opens
    the storage and writes the report."""
    env = {**os.environ, "DLTRICKS_HOME": str(tmp_path)}
    env.pop("DLTRICKS_LEDGER", None)
    env.pop("OMP_NUM_THREADS", None)  # the suite's one-thread setting would make the worker's split trivial
    cmd = [sys.executable, "-m", "dltricks.cli", "ablate", "mnist1d-cnn", *[a for o in SMALL for a in ("-o", o)],
           "--trick", "ls:train.label_smoothing=0.1", "--seeds", "1", "--workers", "1", "--study", "coord",
           "--quiet"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    runs = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", root=tmp_path).runs(study="coord")
    assert len(runs) == 2 and {r.status for r in runs} == {"completed"}
    assert len({r.pid for r in runs}) == 1 and proc.pid not in {r.pid for r in runs}
    assert all(r.metrics["flops"] > 0 for r in runs)  # counted by the worker: the report need not
    assert "report:" in out and (tmp_path / "reports" / "coord" / "report.html").is_file()


def test_a_worker_is_told_when_its_storage_was_checked_a_moment_ago(ledger_home, monkeypatch) -> None:
    """The command that hands a study over has opened its storage (tables made, schema version checked):
    its workers skip doing that again; a worker told nothing checks for itself."""
    import json

    monkeypatch.setattr(st, "CHECKED", set())
    ledger = Ledger()
    st.storage(ledger)
    assert st.CHECKED == {ledger.url}
    monkeypatch.setattr(st, "CHECKED", set())
    job = {"study": "s", "url": ledger.url, "home": str(ledger.root)}
    assert local._job(json.dumps(job))[1] == "s" and st.CHECKED == set()
    local._job(json.dumps({**job, "checked": True}))
    assert st.CHECKED == {ledger.url}
