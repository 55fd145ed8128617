"""The user's own model by import path (``model.name = "my_models:TinyNet"``), through the command line:
a model file in its own git repository, trained and ablated from a folder outside it, recorded with that
repository's commit; and every bad input as one line with nothing in the ledger."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DLTRICKS = [sys.executable, "-m", "dltricks.cli"]

MODELS = '''"""A user's models: a class, a factory, and some mistakes."""
import math

from torch import nn


class TinyNet(nn.Module):
    def __init__(self, in_shape, num_classes, width=16):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), width), nn.ReLU())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


def conv_net(in_shape, num_classes, channels=4):
    return nn.Sequential(nn.Conv1d(in_shape[0], channels, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                         nn.Flatten(), nn.Linear(channels, num_classes))


def not_a_model(width=3):
    return [width]


def three_outputs(in_shape):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), 3))
'''

RECIPE = """name = "mine"
seed = 0

[data]
name = "mnist1d"
num_samples = 500

[model]
name = "my_models:TinyNet"
width = 64

[train]
epochs = 6
batch_size = 32
lr = 0.01
threads = 1
"""


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def project(tmp_path) -> tuple[Path, Path, dict[str, str]]:
    """(the model's repository, a working folder outside it, the environment): the recipe beside the model."""
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "my_models.py").write_text(MODELS)
    (repo / "mine.toml").write_text(RECIPE)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "my model")
    work = tmp_path / "work"  # not a repository: the run's git state must come from the model's
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLTRICKS_")}
    env.update(DLTRICKS_HOME=str(tmp_path / "home"), DLTRICKS_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               COLUMNS="200", PYTHONUNBUFFERED="1")
    return repo, work, env


def cli(env: dict[str, str], cwd: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([*DLTRICKS, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def runs(env: dict[str, str], cwd: Path) -> list[dict]:
    done = cli(env, cwd, "runs", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def one_line_error(done: subprocess.CompletedProcess, *needles: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    err = done.stderr.strip()
    assert "Traceback" not in done.stderr + done.stdout and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def test_train_and_ablate_a_model_file_recorded_with_its_repository(project):
    repo, work, env = project
    recipe = str(repo / "mine.toml")
    done = cli(env, work, "train", recipe, "-q")
    assert done.returncode == 0, done.stderr
    [run] = runs(env, work)
    assert run["status"] == "completed" and run["metrics"]["test_accuracy"] > 0.2  # chance is 0.1
    model = run["recipe"]["model"]
    assert model["name"] == "my_models:TinyNet" and model["width"] == 64
    assert Path(model["module_dir"]) == repo.resolve()
    assert model["source_sha256"] == hashlib.sha256((repo / "my_models.py").read_bytes()).hexdigest()
    # the model's repository, clean at its commit (no __pycache__ left behind), although cwd is elsewhere
    assert run["git_commit"] == git(repo, "rev-parse", "HEAD") and run["git_dirty"] is False
    assert git(repo, "status", "--porcelain") == ""

    # a trick on the model's own keyword (narrower); 1 and 2 local workers give the same numbers, cell by cell
    by_study = {}
    for workers in ("1", "2"):
        study = f"w{workers}"
        done = cli(env, work, "ablate", recipe, "-q", "--trick", "wide:model.width=16", "--seeds", "2",
                   "--workers", workers, "--study", study)
        assert done.returncode == 0, done.stderr
        cells = {(r["variant"], r["seed"]): r["metrics"]["test_accuracy"] for r in runs(env, work)
                 if r["study"] == study and r["status"] == "completed"}
        assert len(cells) == 4, cells
        by_study[study] = cells
    assert by_study["w1"] == by_study["w2"]
    assert len(set(by_study["w1"].values())) > 1  # the trick and the seeds change the model: not one number

    # a catalogue trick patching a keyword TinyNet does not take: refused before any training
    before = len(runs(env, work))
    one_line_error(cli(env, work, "ablate", recipe, "--trick", "batch_norm", "--seeds", "2"),
                   "batch_norm", "model.norm", "width")
    assert len(runs(env, work)) == before


def test_a_dltricks_worker_elsewhere_imports_the_recorded_module(project, monkeypatch):
    """A study defined here; a `dltricks worker` started in another folder (where ``my_models`` is not
    importable) runs its cells through the module folder the recipe recorded, from the same file."""
    from dltricks.ledger import Ledger
    from dltricks.recipe import Recipe
    from dltricks.search import claims
    from dltricks.search import study as st
    from dltricks.search.ablate import define
    from dltricks.tricks import parse_trick

    repo, work, env = project
    monkeypatch.chdir(work)
    url = f"sqlite:///{work / 'shared.db'}"
    recipe = Recipe.load(str(repo / "mine.toml"), ["train.epochs=1"])
    definition = define(recipe, [parse_trick("narrow:model.width=16")], mode="add", seeds=1, study="joined")
    ledger = Ledger(url)
    claims.ensure_table(ledger)
    st.create_or_load(ledger, definition)
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    done = cli(env, elsewhere, "worker", "--study", "joined", "--storage", url, "--threads", "1", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "ran 2" in done.stdout, done.stdout
    runs = ledger.runs(study="joined")
    assert {r.status for r in runs} == {"completed"} and {r.variant for r in runs} == {"baseline", "+narrow"}
    assert {r.recipe["model"]["width"] for r in runs} == {64, 16}
    assert {r.git_commit for r in runs} == {git(repo, "rev-parse", "HEAD")} and not any(r.git_dirty for r in runs)


def test_other_models_in_the_file_and_keyword_arguments(project):
    repo, work, env = project
    done = cli(env, work, "train", str(repo / "mine.toml"), "-q", "-o", "model.name=my_models:conv_net",
               "-o", "model.channels=3", "-o", "train.epochs=1")
    assert done.returncode == 0, done.stderr
    [run] = runs(env, work)
    assert run["recipe"]["model"]["channels"] == 3
    assert run["metrics"]["params"] == 3 * 1 * 5 + 3 + 3 * 10 + 10  # the factory's channels, not its default


@pytest.mark.parametrize("bundled, metric, extra", [
    ("mnist1d-da", "test_target_accuracy", []),  # DANN: a domain classifier on the head's input
    ("mnist1d-oneshot", "test_5way_1shot_accuracy", ["-o", "train.pk_samples=4", "-o", "train.metric_loss=triplet",
                                                     "-o", "model.embedding_dim=16"]),  # the head as an embedding
])
def test_learning_set_ups_that_need_features_and_a_head(project, bundled, metric, extra):
    repo, work, env = project
    # a bundled recipe, the model by -o: found in the current directory
    done = cli(env, repo, "train", bundled, "-q", "-o", "model.name=my_models:TinyNet", "-o", "train.epochs=1",
               "-o", "data.num_samples=600", "-o", "eval.episodes=50", *extra)
    assert done.returncode == 0, done.stderr
    [run] = runs(env, work)
    assert run["status"] == "completed" and 0.0 <= run["metrics"][metric] <= 1.0
    if "model.embedding_dim=16" in extra:  # TinyNet's head was built 16 wide: an embedding, not 10 scores
        assert run["metrics"]["params"] == 40 * 16 + 16 + 16 * 16 + 16  # width: its default, 16


def test_tune_searches_the_model_keywords(project):
    """A keyword the recipe does not set is tunable from the factory's default; one the model does not
    take is refused before any trial."""
    repo, work, env = project
    recipe = str(repo / "mine.toml")
    one_line_error(cli(env, work, "tune", recipe, "--space", 'model.norm=["batch"]'), "model.norm", "width")
    done = cli(env, work, "tune", recipe, "-q", "--trials", "2", "--rerun-seeds", "0", "-o",
               "model.name=my_models:conv_net", "-o", "train.epochs=1", "--space", "model.channels=[2, 5]")
    assert done.returncode == 0, done.stderr
    trials = [r for r in runs(env, work) if r["status"] == "completed"]
    assert len(trials) == 2 and {r["recipe"]["model"]["channels"] for r in trials} <= {2, 5}
    for r in trials:  # the trial's channels reached the factory
        c = r["recipe"]["model"]["channels"]
        assert r["metrics"]["params"] == c * 5 + c + c * 10 + 10


def test_inspect_counts_an_arbitrary_module(project):
    repo, work, env = project
    done = cli(env, work, "inspect", str(repo / "mine.toml"))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "my_models:TinyNet" in out and "head    Linear" in out, out
    assert f"{(40 * 64 + 64 + 64 * 10 + 10) / 1000:.3f}k parameters" in out, out  # 3.274k
    assert f"{2 * (40 * 64 + 64 * 10) / 1000:.1f} kFLOPs" in out, out  # two per multiply-add: 6.4k
    assert "receptive field 40" in out, out  # a dense layer sees the whole signal


@pytest.mark.parametrize("override, needles", [
    ("model.name=nowhere:Net", ["nowhere", "sys.path"]),
    ("model.name=my_models:Missing", ["Missing", "TinyNet"]),
    ("model.name=my_models:not_a_model", ["not_a_model", "list", "nn.Module"]),
    ("model.name=my_models:three_outputs", ["(1, 3)", "(1, 10)"]),
    ("model.widht=8", ["widht", "width"]),
    ("model.name=my models", ["module:attr"]),
    ("model.name=my-models:Net", ["my-models:Net", "module:attr"]),
])
def test_bad_models_are_one_line_and_leave_no_run(project, override, needles):
    repo, work, env = project
    one_line_error(cli(env, work, "train", str(repo / "mine.toml"), "-o", override), *needles)
    assert not (Path(env["DLTRICKS_HOME"]) / "ledger.db").exists() or runs(env, work) == []


def test_a_module_that_fails_to_import_shows_its_error(project):
    repo, work, env = project
    (repo / "broken.py").write_text("import torch\nraise RuntimeError('CUDA 99 needed')\n")
    one_line_error(cli(env, work, "train", str(repo / "mine.toml"), "-o", "model.name=broken:Net"),
                   "broken", "RuntimeError: CUDA 99 needed")


def test_a_changed_model_file_is_refused_on_resume_of_its_recipe(tmp_path, monkeypatch):
    """The recorded hash guards a rebuild from a recorded recipe (a worker, a resume, compress)."""
    from dltricks.errors import DltricksError
    from dltricks.nn import build_model
    from dltricks.recipe import Recipe

    (tmp_path / "my_models.py").write_text(MODELS)
    (tmp_path / "r.toml").write_text(RECIPE)
    monkeypatch.chdir(tmp_path)
    recorded = Recipe.load(str(tmp_path / "r.toml")).to_dict()
    assert build_model(Recipe.from_dict(recorded).model, (1, 40), 10)(__import__("torch").zeros(2, 1, 40)).shape == (
        2, 10)
    (tmp_path / "my_models.py").write_text(MODELS.replace("width=16", "width=17"))
    with pytest.raises(DltricksError, match="changed since"):
        build_model(Recipe.from_dict(recorded).model, (1, 40), 10)


def test_train_and_ablate_given_a_module_say_how(tmp_path):
    import torch

    import dltricks
    from dltricks.errors import DltricksError

    class MyNet(torch.nn.Module):
        pass

    with pytest.raises(DltricksError, match='model.name = "my_models:MyNet"'):
        dltricks.ablate(MyNet(), ["label_smoothing"])
    with pytest.raises(DltricksError, match='dltricks.train takes a recipe.*"my_models:MyNet"'):
        dltricks.train(MyNet())
