"""One run on many processes (gloo on CPU, through the CLI's --nproc) and gradient accumulation.

The 2-process run must be the 1-process run with the same global batch (float tolerance), recorded once;
killed with kill -9 midway and resumed, it ends where an uninterrupted 2-process run ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from processes import process_tree
from torch import nn

from dltricks import fit
from dltricks.ledger import Ledger

DLTRICKS = [sys.executable, "-m", "dltricks.cli"]

# an MLP without batch statistics: its step on a batch is the mean of per-sample gradients, however shared
RECIPE = """name = "ddp"
seed = 0

[data]
name = "mnist1d"
num_samples = {n}

[model]
name = "mlp"
hidden = [{hidden}]
norm = "{norm}"

[train]
epochs = {epochs}
batch_size = 30
lr = 0.01
threads = 1
"""


class Env:
    def __init__(self, root: Path, cache: Path):
        self.root, self.home = root, root / "home"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DLTRICKS_")}
        self.env.update(DLTRICKS_HOME=str(self.home), DLTRICKS_CACHE=str(cache), OMP_NUM_THREADS="1",
                        COLUMNS="200", PYTHONUNBUFFERED="1")

    def write(self, name: str, **keys) -> str:
        keys = {"n": 400, "hidden": 32, "norm": "none", "epochs": 3, **keys}
        (self.root / name).write_text(RECIPE.format(**keys))
        return name

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([*DLTRICKS, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def ledger(self) -> Ledger:
        return Ledger(root=self.home)


def run_id(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("run "))
    return line.split()[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    return Env(tmp_path_factory.mktemp("ddp"), tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def ddp_run(env) -> str:
    """An uninterrupted 2-process run of a recipe long enough to be killed midway (shared by two tests)."""
    env.write("long.toml", n=1500, hidden=256, epochs=6)
    return run_id(env.run("train", "long.toml", "-q", "--nproc", "2"))


def test_two_processes_train_the_one_process_run_and_record_one_run(env, ddp_run):
    env.write("short.toml", n=1500, hidden=256, epochs=6)  # the same recipe under another file name
    one = run_id(env.run("train", "short.toml", "-q", "--fresh"))
    ledger = env.ledger()
    runs = {r.id: r for r in ledger.runs()}
    assert ddp_run in runs and one in runs
    assert len([r for r in runs.values() if r.name == "ddp"]) == 2  # one run per command, not one per rank
    two, single = runs[ddp_run], runs[one]
    assert two.device == "cpu x2 (gloo)" and single.device == "cpu"
    for key in ("train_loss", "val_loss", "val_accuracy"):
        assert len(two.curves[key]) == 6
        assert two.curves[key] == pytest.approx(single.curves[key], rel=1e-4, abs=1e-5), key
    assert two.metrics["test_accuracy"] == pytest.approx(single.metrics["test_accuracy"], abs=1e-6)


def _environ(pid: int) -> bytes:
    try:
        return b"\0" + Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _epochs_saved(checkpoint: Path) -> int:
    try:
        return json.loads((checkpoint / "state.json").read_text())["loop"]["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def test_a_two_process_run_killed_midway_resumes_to_the_uninterrupted_result(env, ddp_run):
    proc = subprocess.Popen([*DLTRICKS, "train", "long.toml", "-q", "--nproc", "2", "--fresh"], cwd=env.root,
                            env=env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    ledger = env.ledger()
    deadline, killed, run = time.time() + 240, False, None
    while time.time() < deadline and proc.poll() is None:
        running = [r for r in ledger.runs() if r.status == "running"]
        if running:
            run = running[0]
            if _epochs_saved(ledger.run_dir(run.id) / "checkpoint") >= 2:
                for pid in process_tree(proc.pid):  # torchrun and both ranks (in sessions of their own), at once
                    os.kill(pid, signal.SIGKILL)
                killed = True
                break
        time.sleep(0.05)
    proc.wait()
    assert killed, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
    assert ledger.get(run.id).status == "running"  # a kill -9 leaves no word: the run is taken up again
    # on one process the checkpoint's shares and RNG states would be read wrongly: refused in one line
    one = env.run("train", "--resume", run.id, "-q")
    assert one.returncode == 2 and len(one.stderr.strip().splitlines()) == 1, one.stderr
    assert "--nproc 2" in one.stderr
    assert ledger.get(run.id).status == "running"
    resumed = run_id(env.run("train", "--resume", run.id, "--nproc", "2", "-q"))
    assert resumed == run.id
    done, whole = ledger.get(run.id), ledger.get(ddp_run)
    assert done.status == "completed"
    assert done.curves["train_loss"] == pytest.approx(whole.curves["train_loss"], rel=1e-6, abs=1e-7)
    assert done.metrics["test_loss"] == pytest.approx(whole.metrics["test_loss"], rel=1e-6, abs=1e-7)


def test_sync_batchnorm_under_two_processes_is_batch_norm_over_the_whole_batch(env):
    env.write("bn.toml", norm="batch", epochs=2)
    rid = run_id(env.run("train", "bn.toml", "-q", "--nproc", "2", "-o", "train.sync_batchnorm=true"))
    one = run_id(env.run("train", "bn.toml", "-q", "--fresh"))
    rec, single = env.ledger().get(rid), env.ledger().get(one)
    assert rec.status == "completed" and rec.device == "cpu x2 (gloo)"
    assert rec.recipe["train"]["sync_batchnorm"] is True
    # statistics over all ranks' shares = one process's batch norm on the whole batch
    assert rec.curves["train_loss"] == pytest.approx(single.curves["train_loss"], rel=1e-4, abs=1e-5)
    # validation uses the running statistics, which follow the bias before the norm: its true gradient is
    # zero, and Adam turns the float noise of either run into steps of its own; so only close here
    assert rec.curves["val_loss"] == pytest.approx(single.curves["val_loss"], rel=2e-3)


def test_bad_process_counts_and_backends_are_one_line(env):
    env.write("tiny.toml")
    done = env.run("train", "tiny.toml", "-q", "--nproc", "4096")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "--nproc 4096" in done.stderr and "this machine has" in done.stderr
    if not torch.cuda.is_available():
        done = env.run("train", "tiny.toml", "-q", "--nproc", "2", "--backend", "nccl")
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "nccl needs CUDA" in done.stderr and "gloo" in done.stderr
    assert not [r for r in env.ledger().runs() if r.name == "ddp" and r.status == "failed"]


def _trained(accum: int, model_seed: int = 0) -> nn.Module:
    torch.manual_seed(model_seed)
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(96, 10, generator=g), torch.randint(0, 3, (96,), generator=g)
    fit(model, (x, y), epochs=2, batch_size=32, lr=0.05, optimizer="sgd", progress=False, device="cpu",
        grad_accum_steps=accum)
    return model


def test_gradient_accumulation_equals_the_whole_batch():
    whole = _trained(1)
    for k in (2, 4, 5):  # 5 does not divide 32: unequal micro-batches, each weighted by its share
        parts = _trained(k)
        for a, b in zip(whole.parameters(), parts.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    moved = [(a - b).abs().max().item() for a, b in zip(whole.parameters(), _trained(1, model_seed=1).parameters())]
    assert max(moved) > 1e-3  # the comparison can fail: another start ends elsewhere


def test_ctrl_c_stops_every_rank_midway_and_the_resumed_run_ends_as_the_uninterrupted_one(env, ddp_run):
    proc = subprocess.Popen([*DLTRICKS, "train", "long.toml", "-q", "--nproc", "2", "--fresh"], cwd=env.root,
                            env=env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ledger, known = env.ledger(), {r.id for r in env.ledger().runs()}
    deadline, run = time.time() + 240, None
    while time.time() < deadline and proc.poll() is None and run is None:
        time.sleep(0.05)
        run = next((r for r in ledger.runs(status="running") if r.id not in known), None)
    assert run is not None
    while time.time() < deadline and proc.poll() is None:
        if _epochs_saved(ledger.run_dir(run.id) / "checkpoint") >= 1:
            proc.send_signal(signal.SIGINT)  # as the terminal would: the agent passes it on to the ranks
            break
        time.sleep(0.05)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted") and run.id in lines[0], err  # rank 0 alone speaks
    assert ledger.get(run.id).status == "interrupted"
    assert process_tree(proc.pid) == [proc.pid] or not Path(f"/proc/{proc.pid}").exists()
    done = run_id(env.run("train", "--resume", run.id, "--nproc", "2", "-q"))
    assert done == run.id
    a, b = ledger.get(run.id), ledger.get(ddp_run)
    assert a.curves["train_loss"] == pytest.approx(b.curves["train_loss"], rel=1e-6, abs=1e-7)
    assert a.metrics["test_accuracy"] == b.metrics["test_accuracy"]


def test_a_rank_that_dies_fails_the_run_with_the_reason(env):
    env.write("dies.toml", n=1500, hidden=256, epochs=6)
    proc = subprocess.Popen([*DLTRICKS, "train", "dies.toml", "-q", "--nproc", "2", "--fresh"], cwd=env.root,
                            env=env.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ledger, known = env.ledger(), {r.id for r in env.ledger().runs()}
    deadline, run, killed = time.time() + 240, None, False
    while time.time() < deadline and proc.poll() is None and not killed:
        time.sleep(0.05)
        run = run or next((r for r in ledger.runs(status="running") if r.id not in known), None)
        if run is not None and _epochs_saved(ledger.run_dir(run.id) / "checkpoint") >= 1:
            rank1 = [p for p in process_tree(proc.pid) if b"RANK=1\0" in _environ(p)]
            os.kill(rank1[0], signal.SIGKILL)
            killed = True
    out, err = proc.communicate(timeout=180)
    assert killed and proc.returncode == 1, err[-2000:]
    rec = ledger.get(run.id)
    assert rec.status == "failed"
    assert "rank" in rec.failure and ("died" in rec.failure or "killed by signal 9" in rec.failure), rec.failure
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and run.id in lines[0], err
