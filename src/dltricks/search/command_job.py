"""Ablation studies of any command (``dltricks ablate --command``): the study's definition, its cells as a
:class:`dltricks.search.cells.Job`, and local workers that start in milliseconds.

Everything but the cell is the recipe ablation's: variants (:func:`dltricks.search.plan.plan_variants`),
paired seeds, the sequential rule, claims, Optuna trials, the report. A cell renders the command
(:mod:`dltricks.search.command`), records it as a ledger run (the command line, variant, seed, git state
of the working directory; exit code, wall time and the last lines of output in the run's folder) and its
metrics as the cell's trial.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dltricks.direction import higher_is_better
from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.search import cells, claims
from dltricks.search import command as cm
from dltricks.search import command_process as cp
from dltricks.search import study as st
from dltricks.search.plan import Mode, Variant, plan_variants
from dltricks.search.study_job import StudyJob

INTERPRETERS = re.compile(r"(python[\d.]*|sh|bash|zsh|node|Rscript|julia|uv|torchrun|accelerate)")


def spec_of(line: str, *, cwd: str | Path | None = None, env: dict[str, Any] | None = None,
            timeout: float | None = None) -> cm.CommandSpec:
    """The stored form of a study's command (see :mod:`dltricks.search.command`)."""
    cm.split_line(line)
    if timeout is not None and not timeout > 0:
        raise DltricksError(f"--cell-timeout is in seconds and must be > 0, got {timeout:g}")
    return {"line": line, "cwd": str(Path(cwd or os.getcwd()).resolve()),
            "env": {str(k): str(v) for k, v in (env or {}).items()}, "timeout": timeout}


def run_name(argv: list[str]) -> str:
    """The ledger name of a command's runs: the script (``train.py``), not the interpreter."""
    words = [Path(w).name for w in argv if not w.startswith("-")]
    if len(words) > 1 and INTERPRETERS.fullmatch(words[0]):
        return words[1]
    return words[0] if words else "command"


def define(spec: cm.CommandSpec, tricks: list[cm.CommandTrick], *, mode: Mode = "add", seeds: int | str = 5,
           metric: str = "", study: str = "", rope: float | None = None, max_seeds: int = 10) -> st.Definition:
    """The study of ``spec`` with ``tricks``: its variants, seeds (0, 1, ...) and metric."""
    from dltricks.ledger.looks import auto_schedule
    from dltricks.tricks import Trick

    if not metric:
        raise DltricksError("a command study needs --metric: the name, in the JSON the command reports, of the "
                            "metric to compare (e.g. --metric val_accuracy)")
    # plan_variants knows the modes; a trick's on/off here only names it (its patch is composed below)
    named = [Trick(t.name, "command", "", {t.name: True}, {t.name: False}) for t in tricks]
    planned, reference = plan_variants(None, named, mode)  # type: ignore[arg-type] - no recipe: every off is given
    variants = [Variant(v.name, v.on, cm.combine(tricks, v.on)) for v in planned]
    if seeds == "auto":
        schedule = auto_schedule(max_seeds)
        n_seeds = schedule[-1]
    elif isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
        schedule, n_seeds = [], seeds
    else:
        raise DltricksError(f'seeds must be a whole number >= 1 or "auto", got {seeds!r}')
    seed_list = list(range(n_seeds))
    if not study:
        blob = json.dumps([{k: v for k, v in spec.items() if k != "timeout"}, [v.patch for v in variants],
                           seed_list, metric, mode, schedule, rope if schedule else None], sort_keys=True)
        script = run_name(cm.split_line(spec["line"])).rsplit(".", 1)[0] or "command"
        study = f"{script}-{mode}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"
    d = st.Definition(name=study, recipe={}, variants=variants, reference=reference, seeds=seed_list,
                      metric=metric, higher_is_better=higher_is_better(metric), mode=mode,
                      tricks=[{"name": t.name, "family": "command", "on": t.patch(), "off": {}} for t in tricks],
                      schedule=schedule, rope=rope, command=spec)
    cm.check(spec, {v.name: v.patch for v in variants}, study)
    return d


# ---- one cell ----------------------------------------------------------------------------------------

def run_cell(ledger: Ledger, spec: cm.CommandSpec, patch: dict[str, Any], *, seed: int, cell: str, variant: str,
             study: str, run_id: str, metric: str, on_tick: Callable[[], str | None] | None = None,
             run_label: str | None = None) -> tuple[cp.Outcome, bool]:
    """Run one cell's command as ledger run ``run_id``; (its outcome with ``failure`` set when the cell
    failed, whether the run was recorded). Ctrl-C stops the command, marks the run interrupted, re-raises."""
    try:
        argv, env = cm.render(spec, patch, seed=seed, cell=cell, variant=variant, study=study)
    except DltricksError as e:
        return cp.Outcome(None, 0.0, False, [], [], failure=str(e)), False
    env.update(DLTRICKS_SEED=str(seed), DLTRICKS_CELL=cell)
    import shlex

    ledger.start_run(name=run_name(argv), seed=seed, device="command", study=study, variant=run_label or variant,
                     cwd=spec["cwd"], run_id=run_id,
                     recipe={"command": {"line": shlex.join(argv), "argv": argv, "env": env, "cwd": spec["cwd"]}})
    folder = ledger.run_dir(run_id)
    try:
        o = cp.run_process(argv, cwd=spec["cwd"], env=env, folder=folder, timeout=spec.get("timeout"),
                           on_tick=on_tick, tick_s=0.2)
    except KeyboardInterrupt:
        ledger.finish(run_id, "interrupted", failure="stopped: Ctrl-C, or its study was stopped")
        raise
    if metric not in o.metrics and o.curves.get(metric):  # {"val_accuracy": [per epoch]}: the last is the score
        o.metrics[metric] = o.curves[metric][-1]
    if o.failure is None:
        o.failure = cm.metric_failure(o.metrics, metric)
    (folder / "command.json").write_text(json.dumps({**o.to_json(), "argv": argv, "env": env}, indent=1))
    finite = {k: v for k, v in o.metrics.items() if v == v and abs(v) != float("inf")}
    ledger.finish(run_id, "failed" if o.failure else "completed", metrics=finite, curves=o.curves,
                  failure=o.failure)
    return o, True


def _stop_on_sigterm() -> Any:
    """A stopped worker (SIGTERM) ends as a Ctrl-C does: the cell's process group is stopped and the claim
    released. Returns the handler it replaced (only the main thread may set one: else None)."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, stop)
    except ValueError:
        return None


class CommandJob(StudyJob):
    """The cells of command study ``name`` in ``ledger``, for :func:`dltricks.search.cells.work`."""

    def __init__(self, ledger: Ledger, name: str):
        self.ledger, self.name = ledger, name
        self.study, self.definition = st.load(ledger, name)
        if not self.definition.command:
            raise DltricksError(f"study {name!r} is not a command study")

    def run(self, cell: str, payload: Any, claim: claims.Claim, run_id: str, progress: bool) -> None:
        variant, seed = payload
        d = self.definition
        before = _stop_on_sigterm()
        try:
            o, recorded = run_cell(self.ledger, d.command, variant.patch, seed=seed, cell=cell, variant=variant.name,
                                   study=self.name, run_id=run_id, metric=d.metric)
        finally:
            if before is not None:
                signal.signal(signal.SIGTERM, before)
        if claims.still_mine(self.ledger, claim):
            st.record(self.study, d, cell, variant.name, seed, run_id=run_id if recorded else None,
                      metrics=o.metrics, failure=o.failure)


def is_command_study(ledger: Ledger, name: str) -> bool:
    try:
        _, d = st.load(ledger, name)
    except DltricksError:
        return False
    return bool(d.command)


# ---- local workers -----------------------------------------------------------------------------------

Opener = Callable[[Ledger, str], cells.Job]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _split_threads(workers: int) -> list[str]:
    """Cells running side by side split this machine's cores, unless the user chose a number of threads: on
    a busy machine, more threads than cores make every step wait on the slowest one."""
    if workers < 2 or any(v in os.environ for v in THREAD_VARS):
        return []
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    for v in THREAD_VARS:  # set for the cells only: run_local takes them away again
        os.environ[v] = str(max(1, cpus // workers))
    return list(THREAD_VARS)


def _child(url: str, root: str, name: str, opener: Opener) -> None:
    """A forked worker: ends with its parent (SIGTERM, so its cell is stopped and released), prints nothing."""
    import ctypes

    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.environ["DLTRICKS_NO_PROGRESS"] = "1"
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        cells.work(opener(Ledger(url=url, root=root), name))
    except KeyboardInterrupt:
        sys.exit(130)
    except DltricksError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)


def run_local(ledger: Ledger, name: str, workers: int, progress: bool, opener: Opener | None = None) -> None:
    """This process and ``workers - 1`` forked ones work through the study's cells (a command cell needs no
    core of ours: the commands get them). Ctrl-C stops every worker and every cell's process group."""
    opener = opener or CommandJob
    added = _split_threads(workers)
    try:
        _run_local(ledger, name, workers, progress, opener)
    finally:
        for v in added:
            os.environ.pop(v, None)


def _run_local(ledger: Ledger, name: str, workers: int, progress: bool, opener: Opener) -> None:
    from dltricks.search.progress import Progress

    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    procs = [ctx.Process(target=_child, args=(ledger.url, str(ledger.root), name, opener))
             for _ in range(workers - 1)]
    for p in procs:
        p.start()
    job = opener(ledger, name)
    try:
        with Progress(progress, job) as bar:
            before = _stop_on_sigterm()
            try:
                cells.work(job, on_cell=bar.refresh)
                while any(p.is_alive() for p in procs):
                    multiprocessing.connection.wait([p.sentinel for p in procs], timeout=0.5)
                    bar.refresh()
                if any(p.exitcode for p in procs):
                    cells.work(job, on_cell=bar.refresh)  # a worker that died left a claim: take it over
            finally:
                if before is not None:
                    signal.signal(signal.SIGTERM, before)
            bar.refresh()
    except BaseException as e:
        with cp.shielded():
            # A Ctrl-C in the terminal reached the workers too (one process group): give them a moment to
            # stop their cells on their own before telling them, so no signal lands in their clean-up.
            if isinstance(e, KeyboardInterrupt) and procs:
                multiprocessing.connection.wait([p.sentinel for p in procs], timeout=1.0)
            for p in procs:
                if p.is_alive():
                    os.kill(p.pid, signal.SIGTERM)
            for p in procs:
                p.join(cp.GRACE_S + 10)
                if p.is_alive():
                    p.kill()
        raise


# ---- the whole study -----------------------------------------------------------------------------------

def ablate_command(spec: cm.CommandSpec, tricks: list[cm.CommandTrick], *, mode: Mode = "add",
                   seeds: int | str = 5, metric: str = "", study: str = "", rope: float | None = None,
                   max_seeds: int = 10, workers: int = 1, ledger: Ledger | str | None = None,
                   out: str | Path | None = None, progress: bool = True):
    """Run (or resume) an ablation study of a command and write its report; returns an
    :class:`dltricks.ledger.study_report.AblationResult`. The ledger is opened only once the study is valid."""
    from dltricks.search.ablate import report

    if rope is not None and not (rope >= 0 and rope != float("inf")):
        raise DltricksError(f"--rope is a half-width in metric units, a number >= 0; got {rope}")
    d = define(spec, tricks, mode=mode, seeds=seeds, metric=metric, study=study, rope=rope, max_seeds=max_seeds)
    ledger = ledger if isinstance(ledger, Ledger) else Ledger(url=ledger)
    claims.ensure_table(ledger)
    st.create_or_load(ledger, d)
    run_local(ledger, d.name, max(1, workers), progress)
    return report(d.name, ledger=ledger, out=out)
