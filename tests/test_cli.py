"""The ``dltricks`` command end to end, as a user runs it: real subprocesses, a real git repository,
a real Ctrl-C, exit codes and one-line errors."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DLTRICKS = [sys.executable, "-m", "dltricks.cli"]

TINY = """# a few seconds of MNIST-1D with a small MLP
name = "tiny"
seed = 0

[data]
name = "mnist1d"
num_samples = 300

[model]
name = "mlp"
hidden = [64]

[train]
epochs = 4
batch_size = 32
lr = 0.01
"""

# long enough (six epochs of a few tenths of a second) to be interrupted after its first checkpoint
SLOWER = """name = "ctrlc"
seed = 0

[data]
name = "mnist1d"
num_samples = 600

[model]
name = "cnn"
channels = [8, 16]
dropout = 0.1

[train]
epochs = 6
batch_size = 32
lr = 0.003
schedule = "one_cycle"
"""


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q")
    (path / "tiny.toml").write_text(TINY)
    (path / "slower.toml").write_text(SLOWER)
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "recipes")
    return path


class Env:
    """DLTRICKS_HOME in ``root``; the MNIST-1D cache shared by the module's tests."""

    def __init__(self, root: Path, cache: Path):
        self.root = root
        self.home = root / "home"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DLTRICKS_")}
        self.env.update(DLTRICKS_HOME=str(self.home), DLTRICKS_CACHE=str(cache), OMP_NUM_THREADS="1",
                        COLUMNS="200", PYTHONUNBUFFERED="1")

    def run(self, *args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run([*DLTRICKS, *args], cwd=cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def runs(self, cwd: Path) -> list[dict]:
        done = self.run("runs", "--format", "json", cwd=cwd)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def run_id(self, done: subprocess.CompletedProcess) -> str:
        assert done.returncode == 0, done.stderr
        first = done.stdout.splitlines()[0]
        assert first.startswith("run ") and " completed: " in first, done.stdout
        return first.split()[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def env(tmp_path_factory, cache) -> Env:
    return Env(tmp_path_factory.mktemp("cli"), cache)


@pytest.fixture
def own_env(tmp_path, cache) -> Env:
    """A ledger of the test's own."""
    return Env(tmp_path, cache)


@pytest.fixture(scope="module")
def repo(env) -> Path:
    return make_repo(env.root / "repo")


@pytest.fixture(scope="module")
def two_runs(env, repo) -> tuple[str, str]:
    """Run A from a clean tree; then an edit to the committed recipe, and run B from the dirty tree."""
    a = env.run_id(env.run("train", "tiny.toml", "-q", cwd=repo))
    (repo / "tiny.toml").write_text(TINY.replace("hidden = [64]", "hidden = [48]"))
    b = env.run_id(env.run("train", "tiny.toml", "-q", "-o", "seed=1", "-o", "train.lr=0.02", cwd=repo))
    return a, b


def assert_one_line_error(done: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    err = done.stderr.strip()
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


# ---- train and the ledger ---------------------------------------------------------------------------------

def test_train_records_the_run_with_its_git_commit(env, repo, two_runs):
    a, b = two_runs
    records = {r["id"]: r for r in env.runs(repo)}
    assert set(records) == {a, b}
    ra = records[a]
    assert ra["status"] == "completed" and ra["name"] == "tiny" and ra["seed"] == 0
    head = git(repo, "rev-parse", "HEAD")
    assert ra["git_commit"] == head and ra["git_dirty"] is False
    m = ra["metrics"]
    assert 0.0 <= m["test_accuracy"] <= 1.0 and m["test_accuracy"] > 0.2  # chance is 0.1
    assert m["epochs"] == 4 and {"test_loss", "val_accuracy", "params", "wall_time_s"} <= set(m)
    assert len(ra["curves"]["train_loss"]) == 4
    assert ra["recipe"]["data"]["num_samples"] == 300 and ra["recipe"]["model"]["hidden"] == [64]
    assert (env.home / "runs" / a / "model.safetensors").is_file()
    assert (env.home / "runs" / a / "recipe.toml").is_file()
    assert not (env.home / "runs" / a / "uncommitted.diff").exists()
    # B ran from an edited tree: same commit, dirty, and the edit saved with the run
    rb = records[b]
    assert rb["git_commit"] == head and rb["git_dirty"] is True
    assert rb["recipe"]["train"]["lr"] == 0.02 and rb["recipe"]["model"]["hidden"] == [48]
    assert "hidden = [48]" in (env.home / "runs" / b / "uncommitted.diff").read_text()


def test_runs_in_a_clean_user_repository_are_recorded_clean(own_env, tmp_path):
    """The ledger in its default place, ./dltricks-runs inside the user's repository: the first run
    after a commit is clean, and so is the second (the first one's ledger, weights and checkpoint are
    dltricks' output, not the user's code)."""
    repo = make_repo(tmp_path / "user-repo")
    env = dict(own_env.env)
    env.pop("DLTRICKS_HOME")
    for _ in range(2):
        done = subprocess.run([*DLTRICKS, "train", "tiny.toml", "-q", "-o", "train.epochs=1"], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr
    listed = subprocess.run([*DLTRICKS, "runs", "--format", "json"], cwd=repo, env=env, capture_output=True,
                            text=True, timeout=120)
    records = json.loads(listed.stdout)
    assert len(records) == 2 and all(r["git_dirty"] is False and r["git_diff_hash"] is None for r in records)
    assert git(repo, "status", "--porcelain") == ""
    assert not list((repo / "dltricks-runs").glob("runs/*/uncommitted.diff"))


def test_runs_sheets_in_every_format(env, repo, two_runs):
    a, b = two_runs
    done = env.run("runs", "--format", "csv", cwd=repo)
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert {r["id"] for r in rows} == {a, b} and all(r["status"] == "completed" for r in rows)
    done = env.run("runs", "--format", "md", cwd=repo)
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("|") and set(lines[1]) <= set("|-: ") and len(lines) >= 4
    assert a in done.stdout and b in done.stdout
    done = env.run("runs", cwd=repo)
    assert done.returncode == 0 and a in done.stdout
    done = env.run("runs", "show", a, cwd=repo)
    (rec,) = json.loads(done.stdout)
    assert rec["id"] == a


def test_runs_diff(env, repo, two_runs):
    a, b = two_runs
    done = env.run("runs", "diff", a[:6], b, cwd=repo)
    assert done.returncode == 0, done.stderr
    assert "seed" in done.stdout and "train.lr" in done.stdout and "test_accuracy" in done.stdout
    assert_one_line_error(env.run("runs", "diff", a, cwd=repo), 2, "usage")
    assert_one_line_error(env.run("runs", "show", "ffffffffffff", cwd=repo), 2, "no run")


# ---- recipes and tricks ---------------------------------------------------------------------------------

def test_recipes_show_tricks(env, repo):
    done = env.run("recipes", cwd=repo)
    assert done.returncode == 0 and "mnist1d-cnn" in done.stdout and "digits-cnn" in done.stdout
    done = env.run("show", "tiny.toml", "-o", "train.lr=0.5", cwd=repo)
    assert done.returncode == 0, done.stderr
    import tomllib

    shown = tomllib.loads(done.stdout)  # valid TOML, fully resolved
    assert shown["train"]["lr"] == 0.5 and shown["train"]["optimizer"] == "adamw" and shown["model"]["name"] == "mlp"
    done = env.run("tricks", cwd=repo)
    assert done.returncode == 0 and "label_smoothing" in done.stdout and "one_cycle" in done.stdout
    done = env.run("tricks", "label_smoothing", cwd=repo)
    assert done.returncode == 0 and "train.label_smoothing = 0.1" in done.stdout and "Szegedy" in done.stdout
    assert_one_line_error(env.run("tricks", "label_smothing", cwd=repo), 2, "did you mean label_smoothing")


# ---- user mistakes: exit 2, one line, no traceback -----------------------------------------------------------

def test_bad_key_is_one_line_exit_2(env, repo):
    assert_one_line_error(env.run("train", "tiny.toml", "-q", "-o", "train.lrr=0.1", cwd=repo), 2,
                          "unknown key train.lrr", "did you mean train.lr")


def test_malformed_toml_and_missing_files_exit_2(env, tmp_path):
    (tmp_path / "broken.toml").write_text('name = "x"\n[train]\nepochs = \n')
    assert_one_line_error(env.run("train", "broken.toml", cwd=tmp_path), 2, "broken.toml", "line 3")
    assert_one_line_error(env.run("show", "nope.toml", cwd=tmp_path), 2, "not found", "nope.toml")
    assert_one_line_error(env.run("show", "mnist1d-cnnn", cwd=tmp_path), 2, "did you mean mnist1d-cnn")
    assert_one_line_error(env.run("train", cwd=tmp_path), 2, "RECIPE")


def test_diverging_run_exits_1_and_is_marked_failed(own_env, tmp_path):
    env = own_env
    (tmp_path / "tiny.toml").write_text(TINY)
    done = env.run("train", "tiny.toml", "-q", "-o", "train.optimizer=sgd", "-o", "train.lr=1e6", cwd=tmp_path)
    err = assert_one_line_error(done, 1, "train.lr")
    assert "NaN" in err or "diverged" in err
    failed = [r for r in env.runs(tmp_path) if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["id"] in err and failed[0]["failure"] in err


# ---- a real Ctrl-C, then --resume ---------------------------------------------------------------------------

def test_ctrl_c_then_resume_matches_an_uninterrupted_run(own_env, tmp_path):
    env, root = own_env, tmp_path
    (root / "slower.toml").write_text(SLOWER)
    env_c = env.env
    proc = subprocess.Popen([*DLTRICKS, "train", "slower.toml", "-q"], cwd=root, env=env_c,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not list((root / "home" / "runs").glob("*/checkpoint/state.json")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "--resume" in err
    assert "epoch" in err and " of 6" in err  # where it stopped
    (rec,) = json.loads(subprocess.run([*DLTRICKS, "runs", "--format", "json"], cwd=root, env=env_c,
                                       capture_output=True, text=True).stdout)
    assert rec["status"] == "interrupted"
    state = json.loads((root / "home" / "runs" / rec["id"] / "checkpoint" / "state.json").read_text())
    assert state["loop"]["epoch"] >= 1 and state["loop"]["epoch"] < 6

    done = subprocess.run([*DLTRICKS, "train", "--resume", rec["id"], "-q"], cwd=root, env=env_c,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert rec["id"] in done.stdout
    reference = env.run_id(env.run("train", "slower.toml", "-q", cwd=root))  # the same recipe, in one go

    records = {r["id"]: r for r in env.runs(root)}
    resumed, ref = records[rec["id"]], records[reference]
    assert resumed["status"] == "completed"
    drop = {"wall_time_s"}
    assert {k: v for k, v in resumed["metrics"].items() if k not in drop} == \
           {k: v for k, v in ref["metrics"].items() if k not in drop}
    assert resumed["curves"] == ref["curves"]


# ---- the bundled recipe does what its comment says -----------------------------------------------------------

@pytest.mark.slow
def test_bundled_mnist1d_cnn_reaches_94_percent(own_env, tmp_path):
    env = own_env
    done = env.run("train", "mnist1d-cnn", "-q", cwd=tmp_path, timeout=600)
    rid = env.run_id(done)
    rec = next(r for r in env.runs(tmp_path) if r["id"] == rid)
    assert rec["metrics"]["test_accuracy"] >= 0.94, rec["metrics"]


@pytest.mark.slow
def test_bundled_seg2d_unet_reaches_dice_0_8(own_env, tmp_path):
    """The segmentation issue's bar: `dltricks train seg2d-unet` reaches test Dice >= 0.8 on a CPU."""
    done = own_env.run("train", "seg2d-unet", "-q", cwd=tmp_path, timeout=900)
    rid = own_env.run_id(done)
    rec = next(r for r in own_env.runs(tmp_path) if r["id"] == rid)
    assert rec["metrics"]["test_dice"] >= 0.8, rec["metrics"]
    assert rec["recipe"]["model"]["skip_connections"] is True


@pytest.mark.slow
def test_bundled_seg3d_unet_trains_with_batch_2_and_group_norm(own_env, tmp_path):
    done = own_env.run("train", "seg3d-unet", "-q", "-o", "train.epochs=2", cwd=tmp_path, timeout=900)
    rid = own_env.run_id(done)
    rec = next(r for r in own_env.runs(tmp_path) if r["id"] == rid)
    assert rec["status"] == "completed"
    assert rec["recipe"]["train"]["batch_size"] == 2 and rec["recipe"]["model"]["norm"] == "group"
    assert 0.0 <= rec["metrics"]["test_dice"] <= 1.0


# ---- --help is a page a user learns from ----------------------------------------------------------------

def test_help_pages_document_every_option_and_give_examples():
    import argparse

    from dltricks.cli import build_parser

    parser = build_parser()
    top = parser.format_help()
    import re

    assert not re.search(r"\b(thin|verb|Python API)\b", top), top
    assert "start here:" in top and "dltricks train mnist1d-cnn" in top
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    uses_ledger = {"train", "runs", "ablate", "worker", "report", "tune", "nas", "compress", "ensemble", "export",
                   "launch", "evidence"}
    shows_progress = {"train", "ablate", "worker", "tune", "nas", "compress", "ensemble", "launch", "evidence"}
    for name, p in sub.choices.items():
        undocumented = [a.dest for a in p._actions if not a.help]
        assert not undocumented, f"dltricks {name}: no help for {undocumented}"
        page = p.format_help()
        assert "examples:" in page and f"dltricks {name}" in page.split("examples:")[1], name
        opts = {o for a in p._actions for o in a.option_strings}
        assert ("--ledger" in opts) == (name in uses_ledger), name
        assert ("--quiet" in opts) == (name in shows_progress), name
        assert "--debug" in opts


def test_only_the_process_s_own_command_freezes_the_heap_before_exit(monkeypatch, capsys) -> None:
    """``main()`` of the command line moves every object into gc's permanent generation (so that the
    interpreter's final collections skip them); ``main(argv)`` from Python leaves the collector alone."""
    import gc

    from dltricks.cli import main

    gc.unfreeze()
    assert main(["recipes"]) == 0 and gc.get_freeze_count() == 0
    monkeypatch.setattr(sys, "argv", ["dltricks", "recipes"])
    try:
        assert main() == 0 and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert "mnist1d-cnn" in capsys.readouterr().out


# ---- a rerun after Ctrl-C resumes; --fresh, --resume last ------------------------------------------------------

def interrupt(env: Env, root: Path, *args: str) -> tuple[str, str]:
    """``dltricks train ARGS`` stopped by a real SIGINT once its run has a checkpoint: (run id, stderr)."""
    before = set((root / "home" / "runs").glob("*/checkpoint/state.json"))
    proc = subprocess.Popen([*DLTRICKS, "train", *args], cwd=root, env=env.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not set((root / "home" / "runs").glob("*/checkpoint/state.json")) - before:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err
    (new,) = set((root / "home" / "runs").glob("*/checkpoint/state.json")) - before
    return new.parent.parent.name, err


def test_rerunning_an_interrupted_train_resumes_it_unless_fresh(own_env, tmp_path):
    env, root = own_env, tmp_path
    (root / "slower.toml").write_text(SLOWER)
    a, err = interrupt(env, root, "slower.toml", "-q")
    assert "the same command" in err and f"--resume {a}" in err  # how to continue, both ways
    # --fresh: a new run, the interrupted one left as it is
    fresh = env.run("train", "slower.toml", "-q", "--fresh", cwd=root)
    b = env.run_id(fresh)
    assert b != a and "resuming" not in fresh.stderr
    assert {r["id"]: r["status"] for r in env.runs(root)} == {a: "interrupted", b: "completed"}
    # another seed is another recipe: it does not resume run a
    other = env.run("train", "slower.toml", "-q", "-o", "seed=1", "-o", "train.epochs=1", cwd=root)
    assert env.run_id(other) not in (a, b) and "resuming" not in other.stderr
    # the same command again: run a continues, says so in one line, and ends as the uninterrupted run b
    again = env.run("train", "slower.toml", "-q", cwd=root)
    assert env.run_id(again) == a
    assert again.stderr.strip().splitlines() == [again.stderr.strip()] and f"resuming run {a}" in again.stderr
    records = {r["id"]: r for r in env.runs(root)}
    assert len(records) == 3 and records[a]["status"] == "completed"
    assert records[a]["curves"] == records[b]["curves"]
    # --resume last: the newest interrupted run; none left is one clear line
    c, _ = interrupt(env, root, "slower.toml", "-q", "-o", "seed=2")
    done = env.run("train", "--resume", "last", "-q", cwd=root)
    assert env.run_id(done) == c
    assert_one_line_error(env.run("train", "--resume", "last", cwd=root), 2, "no interrupted run")
    assert_one_line_error(env.run("train", "slower.toml", "--fresh", "--resume", c, cwd=root), 2, "--resume")


def test_train_help_documents_what_a_rerun_does():
    from dltricks.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    page = sub.choices["train"].format_help()
    assert "resumes" in page and "--fresh" in page and "--resume last" in page


# ---- what is not a recipe says what it is and what would do ----------------------------------------------------

def test_a_folder_is_not_a_recipe(env, tmp_path):
    (tmp_path / "adir").mkdir()
    assert_one_line_error(env.run("train", "adir", cwd=tmp_path), 2, "adir is a folder, not a recipe",
                          "bundled recipe name")
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "small.toml").write_text(TINY)
    assert_one_line_error(env.run("train", "exp", cwd=tmp_path), 2, "exp is a folder", "exp/small.toml")
    for c in ("cat", "dog"):
        (tmp_path / "pics" / c).mkdir(parents=True)
        (tmp_path / "pics" / c / "1.png").write_bytes(b"\x89PNG")
    assert_one_line_error(env.run("show", "pics", cwd=tmp_path), 2, "pics is a folder of images in sub-folders",
                          "dltricks init pics && dltricks train pics.toml")


def test_a_data_file_needs_a_recipe_and_the_message_writes_one(env, tmp_path):
    import random

    rng = random.Random(0)
    rows = ["a,b,label"] + [f"{x:.3f},{rng.random():.3f},{int(x > 0.5)}" for x in (rng.random() for _ in range(120))]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    err = assert_one_line_error(env.run("train", "data.csv", cwd=tmp_path), 2,
                                "data.csv is a CSV table, not a recipe", "dltricks init data.csv",
                                "dltricks train data.toml")
    assert "TOML" not in err
    # the command it shows writes a recipe that trains: run it as a user would paste it
    init, train = err.split("recipe: ", 1)[1].split(" && ")
    assert init.split()[:2] == ["dltricks", "init"] and train == "dltricks train data.toml"
    assert env.run(*init.split()[1:], cwd=tmp_path).returncode == 0
    assert 'name = "csv"' in (tmp_path / "data.toml").read_text()
    done = env.run("train", "data.toml", "-q", "-o", "train.epochs=1", cwd=tmp_path)
    env.run_id(done)
    (tmp_path / "arrays.npz").write_bytes(b"PK")
    assert_one_line_error(env.run("ablate", "arrays.npz", cwd=tmp_path), 2, "arrays.npz is NumPy arrays",
                          "dltricks init arrays.npz")


def test_a_missing_base_names_the_recipe_file_and_the_key(env, tmp_path):
    (tmp_path / "child.toml").write_text('base = "parent.toml"\n[train]\nepochs = 1\n')
    assert_one_line_error(env.run("show", "child.toml", cwd=tmp_path), 2, "child.toml", "base = 'parent.toml'",
                          str(tmp_path / "parent.toml"))
    (tmp_path / "named.toml").write_text('base = "mnist1d-cnnn"\n')
    assert_one_line_error(env.run("show", "named.toml", cwd=tmp_path), 2, "named.toml", "base = 'mnist1d-cnnn'",
                          "did you mean mnist1d-cnn")


# ---- 80 columns -------------------------------------------------------------------------------------------

def test_ablate_prints_its_report_path_whole_at_80_columns(own_env, tmp_path):
    out = tmp_path / "a-folder-with-a-long-name-for-reports" / "of-the-label-smoothing-study-at-80-columns"
    env = {**own_env.env, "COLUMNS": "80"}
    done = subprocess.run([*DLTRICKS, "ablate", "mnist1d-cnn", "--trick", "label_smoothing", "--seeds", "1", "-q",
                           "--out", str(out), "-o", "data.num_samples=400", "-o", "train.epochs=1",
                           "-o", "model.channels=[4, 8]"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    report = str(out / "report.html")
    assert len(report) > 80 and (out / "report.html").is_file()
    assert f"report: {report}" in done.stdout.splitlines(), done.stdout
