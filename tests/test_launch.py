"""``dltricks launch``: a study's workers through submitit's local executor on PostgreSQL, one killed midway;
and the one-line refusals of --slurm (no sbatch, a SQLite ledger) and of ablate's --gpus."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from processes import cmdline, process_tree

from dltricks.ledger import Ledger

DLTRICKS = [sys.executable, "-m", "dltricks.cli"]

RECIPE = """name = "launched"
seed = 0

[data]
name = "mnist1d"
num_samples = 300

[model]
name = "mlp"
hidden = [32]

[train]
epochs = 3
batch_size = 32
lr = 0.01
threads = 1
"""


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLTRICKS_")}
    env.update(DLTRICKS_HOME=str(home), OMP_NUM_THREADS="1", COLUMNS="200", PYTHONUNBUFFERED="1")
    return env


def _workers(root: int) -> list[int]:
    """The `dltricks worker` processes below ``root`` (submitit's local jobs start them)."""
    return [pid for pid in process_tree(root) if b"worker" in (cmd := cmdline(pid)) and b"--study" in cmd]


def test_launch_runs_a_study_through_submitit_with_a_worker_killed_midway(fresh_postgres_url, tmp_path):
    (tmp_path / "r.toml").write_text(RECIPE)
    home = tmp_path / "home"
    proc = subprocess.Popen([*DLTRICKS, "launch", "r.toml", "--trick", "label_smoothing", "--seeds", "3",
                             "--workers", "2", "--study", "launched", "--storage", fresh_postgres_url, "-q"],
                            cwd=tmp_path, env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ledger, killed = None, None
    deadline = time.time() + 300
    while killed is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
        try:
            ledger = ledger or Ledger(url=fresh_postgres_url, root=home)
            running = ledger.runs(study="launched", status="running")
        except Exception:  # noqa: BLE001 - the tables may not exist yet
            continue
        workers = _workers(proc.pid)
        holding = [r.pid for r in running if r.pid in workers]
        if holding and len(workers) == 2:
            killed = holding[0]
            os.kill(killed, signal.SIGKILL)  # a worker dies holding a cell
    stdout, stderr = proc.communicate(timeout=400)
    assert killed is not None, f"no worker to kill: {stderr[-2000:]}"
    assert proc.returncode == 0, stderr[-3000:]
    assert "study launched: " in stdout and "report:" in stdout
    runs = Ledger(url=fresh_postgres_url, root=home).runs(study="launched")
    done = Counter((r.variant, r.seed) for r in runs if r.status == "completed")
    assert len(done) == 6 and set(done.values()) == {1}, done  # 2 variants x 3 seeds, every cell exactly once
    assert any(r.status == "failed" and "died" in (r.failure or "") for r in runs)  # the killed worker's cell
    assert (home / "launch" / "launched").is_dir()  # submitit's job files and logs


def _one_line(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_slurm_is_refused_without_sbatch_or_with_sqlite(tmp_path):
    env = _env(tmp_path / "home")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin"
    base = [*DLTRICKS, "launch", "mnist1d-mlp", "--workers", "2", "--slurm"]
    run = lambda *a, **kw: subprocess.run([*base, *a], cwd=tmp_path, capture_output=True, text=True,  # noqa: E731
                                          timeout=120, **kw)
    _one_line(run("--storage", "postgresql://me@db.example/dltricks", env=env), "no sbatch on PATH", "without --slurm")
    _one_line(run(env=env), "SQLite", "postgresql://")
    # with an sbatch on PATH the SQLite ledger is still refused: other machines cannot share it
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    env_sbatch = {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}
    _one_line(run("--storage", f"sqlite:///{tmp_path / 'l.db'}", env=env_sbatch), "SQLite")
    assert not (tmp_path / "l.db").exists() and not (tmp_path / "home").exists()  # refused before anything


@pytest.mark.parametrize("gpus", ["0,1", "auto"])
def test_gpus_naming_a_missing_device_is_one_line(tmp_path, gpus):
    done = subprocess.run([*DLTRICKS, "ablate", "mnist1d-mlp", "--workers", "2", "--gpus", gpus, "--seeds", "1"],
                          cwd=tmp_path, env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=120)
    _one_line(done, "--gpus")
    assert not (tmp_path / "home").exists()
