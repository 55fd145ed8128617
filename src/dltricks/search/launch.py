"""Workers for a study placed by submitit: a Slurm job array on a cluster, or processes on this machine.

    dltricks launch mnist1d-cnn --trick label_smoothing --seeds 5 --workers 8 --slurm --partition gpu \\
        --storage postgresql://me@db/dltricks
    dltricks launch STUDY --workers 4 --slurm          (again, later: tops up the workers of STUDY)

``launch`` defines the study (as ``ablate`` does) in the shared ledger, or finds it there by name, then
submits N ``dltricks worker`` processes through submitit (``AutoExecutor``: Slurm with ``--slurm``, else
submitit's local executor, the same path on this machine), waits for them, and writes the report. The
workers claim cells through the ledger's claims table (:mod:`dltricks.search.claims`), so a pre-empted or
failed array task is harmless: its cell is taken over at the next attempt, and while cells are left and no
worker is alive, ``launch`` submits new ones (at most :data:`~dltricks.search.claims.MAX_ATTEMPTS` rounds).
No scheduler of our own: Slurm places the array tasks, submitit writes their scripts and logs (under
``DLTRICKS_HOME/launch/STUDY``).

The ledger's URL travels to the workers in their environment (in submitit's job file, in that folder),
never on a command line that ``ps`` would show. A SQLite ledger is refused with ``--slurm``: the nodes of a
cluster cannot share one SQLite file safely.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.search import claims, local
from dltricks.search.local import Opener

__all__ = ["Placement", "WorkerCommand", "check_slurm", "launch", "study_exists"]


@dataclass
class WorkerCommand:
    """What one submitit job runs: ``dltricks worker`` in the job's own environment with ``env`` on top
    (submitit's CommandFunction would replace the environment, PATH and the cluster's variables with it)."""

    cmd: list[str]
    env: dict[str, str]
    cwd: str

    def __call__(self) -> int:
        done = subprocess.run(self.cmd, env={**os.environ, **self.env}, cwd=self.cwd)  # output: the job's log
        if done.returncode != 0:
            raise RuntimeError(f"dltricks worker exited with status {done.returncode} (see this job's log)")
        return done.returncode


@dataclass
class Placement:
    """Where and how the workers run. ``slurm``: a Slurm job array (``partition``, ``time_min`` per worker,
    ``gpus`` and ``cpus`` per worker, ``sbatch`` extra ``#SBATCH`` options as {name: value}); else local
    processes with ``threads`` torch threads each (0: the cores split between them)."""

    workers: int
    slurm: bool = False
    partition: str | None = None
    time_min: int = 60
    gpus: int = 0
    cpus: int = 1
    threads: int = 0
    sbatch: dict[str, str] = field(default_factory=dict)
    wait: bool = True


def check_slurm(ledger: Ledger) -> None:
    """``--slurm`` needs Slurm's ``sbatch`` and a ledger that other machines can reach."""
    if shutil.which("sbatch") is None:
        raise DltricksError("--slurm: no sbatch on PATH (this machine is not a Slurm login node); run the "
                            "study on this machine with the same command without --slurm")
    if ledger.url.startswith("sqlite"):
        raise DltricksError(f"--slurm: the ledger is a SQLite file ({ledger.where}), which workers on other "
                            "machines cannot share; give --storage postgresql://USER@HOST/DB")


def study_exists(ledger: Ledger, name: str, opener: Opener) -> bool:
    """True when ``opener`` (:func:`dltricks.search.worker.open_job`: any kind) finds study ``name`` in ``ledger``."""
    try:
        opener(ledger, name)
    except DltricksError:
        return False
    return True


def launch(ledger: Ledger, study: str, place: Placement, opener: Opener, *, progress: bool = True,
           on_submit: Any = None) -> int:
    """Submit ``place.workers`` workers for ``study`` and (with ``place.wait``) wait until every cell is
    recorded, topping up workers while cells are left and none is alive; return how many were submitted.
    ``opener`` opens the study as the workers will (:func:`dltricks.search.worker.open_job`, which knows every
    kind; nothing in search/ imports it); ``on_submit(jobs)`` sees each round's submitit jobs."""
    import submitit

    if place.slurm:
        check_slurm(ledger)
    claims.ensure_table(ledger)
    job = opener(ledger, study)
    folder = ledger.root / "launch" / study
    folder.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm" if place.slurm else "local")
    threads = place.threads or (place.cpus if place.slurm else local.plan(place.workers)[1])
    params: dict[str, Any] = {"timeout_min": place.time_min, "name": f"dltricks-{study}"[:60]}
    if place.slurm:
        params.update(slurm_partition=place.partition, gpus_per_node=place.gpus, cpus_per_task=place.cpus,
                      slurm_array_parallelism=place.workers, slurm_additional_parameters=dict(place.sbatch))
        params = {k: v for k, v in params.items() if v is not None}
    executor.update_parameters(**params)
    env = {"DLTRICKS_LEDGER": ledger.url, "DLTRICKS_HOME": str(ledger.root), "DLTRICKS_NO_PROGRESS": "1",
           "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "dltricks.cli", "worker", "--study", study, "--threads", str(threads), "--quiet"]
    submitted, rounds = 0, 0
    while True:
        n = place.workers if rounds == 0 else min(place.workers, max(1, _cells_left(job)))
        with executor.batch():  # one Slurm job array
            jobs = [executor.submit(WorkerCommand(cmd, env, os.getcwd())) for _ in range(n)]
        submitted, rounds = submitted + n, rounds + 1
        if on_submit is not None:
            on_submit(jobs)
        if not place.wait:
            return submitted
        _wait(jobs, job, progress)
        if not job.left() or rounds > claims.MAX_ATTEMPTS:
            return submitted


def _cells_left(job) -> int:
    done, total, _ = job.status()
    return total - done


def _wait(jobs: list, job, progress: bool) -> None:
    """Until every worker of this round has ended (a finished, failed or killed worker alike)."""
    from dltricks.search.progress import Progress

    with Progress(progress, job) as bar:
        while not all(j.done() for j in jobs):
            bar.refresh()
            time.sleep(1.0)
        bar.refresh()


def folder_of(ledger: Ledger, study: str) -> Path:
    """Where submitit keeps the study's job files and the workers' logs."""
    return ledger.root / "launch" / study
