"""The run ledger on SQLite and PostgreSQL, git state from real repositories, and the sheet."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from dltricks.errors import DltricksError
from dltricks.ledger import (
    MISSING,
    Ledger,
    RunExistsError,
    diff_runs,
    git_state,
    render_diff,
    runs_table,
    to_csv,
    to_json,
    to_markdown,
)

RECIPE = {"data": {"name": "mnist1d", "val_fraction": 0.1}, "model": {"name": "cnn", "width": 32},
          "train": {"lr": 0.001, "epochs": 3, "label_smoothing": 0.0}}


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, ledger_home: Path) -> Iterator[Ledger]:
    """The same tests on both backends: the default SQLite file, and a fresh PostgreSQL database."""
    url = request.getfixturevalue("fresh_postgres_url") if request.param == "postgresql" else None
    with Ledger(url=url) as led:
        yield led


def _start(ledger: Ledger, **kw) -> str:
    args = {"name": "mnist1d-cnn", "recipe": RECIPE, "seed": 0, "device": "cpu"} | kw
    return ledger.start_run(**args)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def _repo(path: Path) -> Path:
    path.mkdir()
    _git(path, "init", "-q")
    _git(path, "config", "user.email", "t@example.com")
    _git(path, "config", "user.name", "t")
    (path / "train.py").write_text("lr = 0.1\n")
    (path / ".gitignore").write_text("*.log\n")
    _git(path, "add", ".")
    _git(path, "commit", "-q", "-m", "first")
    return path


# --- runs on both backends ------------------------------------------------------------------


def test_start_update_finish_round_trip(ledger: Ledger):
    before = datetime.now(UTC)
    run_id = _start(ledger, seed=3, study="abl", variant="label_smoothing=on")
    assert len(run_id) == 12 and int(run_id, 16) >= 0 and run_id == run_id.lower()

    r = ledger.get(run_id)
    assert (r.status, r.name, r.seed, r.study, r.variant, r.device) == (
        "running", "mnist1d-cnn", 3, "abl", "label_smoothing=on", "cpu")
    assert r.recipe == RECIPE and r.finished is None and r.duration is None
    assert r.metrics == {} and r.curves == {} and r.failure is None and r.checkpoint is None
    assert {"dltricks", "torch", "python"} <= set(r.versions)
    assert r.host and r.pid > 0
    assert r.started.tzinfo is not None and before - timedelta(seconds=1) <= r.started <= datetime.now(UTC)
    assert r.git_commit is None and r.git_dirty is False  # ledger_home is not a git repository

    # numpy scalars are accepted; NaN and inf survive the round trip (PostgreSQL's json has neither)
    ledger.update(run_id, curves={"val_loss": [0.9, np.float32(0.5), float("nan")]}, device="cuda:0")
    ckpt = ledger.run_dir(run_id) / "model.safetensors"
    ledger.finish(run_id, "completed", metrics={"test_accuracy": np.float64(0.875), "test_loss": float("inf")},
                  checkpoint=str(ckpt))
    r = ledger.get(run_id)
    assert r.status == "completed" and r.device == "cuda:0" and r.checkpoint == str(ckpt)
    assert r.metrics == {"test_accuracy": 0.875, "test_loss": float("inf")}
    assert r.curves["val_loss"][:2] == [0.9, 0.5] and np.isnan(r.curves["val_loss"][2])
    assert r.finished is not None and r.finished >= r.started and r.duration >= timedelta(0)
    assert ledger.run_dir(run_id) == ledger.root / "runs" / run_id and ledger.run_dir(run_id).is_dir()


def test_failure_is_recorded(ledger: Ledger):
    run_id = _start(ledger)
    ledger.update(run_id, metrics={"val_loss": 1.5})
    ledger.finish(run_id, "failed", failure="loss became NaN at epoch 2")
    r = ledger.get(run_id)
    assert r.status == "failed" and r.failure == "loss became NaN at epoch 2"
    assert r.metrics == {"val_loss": 1.5}  # finish without metrics keeps what was there


def test_runs_filter_and_order_newest_first(ledger: Ledger):
    ids = [_start(ledger, name="a" if i < 3 else "b", seed=i, study="s1" if i % 2 else "s2") for i in range(5)]
    ledger.finish(ids[1], "completed")
    ledger.finish(ids[2], "interrupted")
    assert [r.id for r in ledger.runs()] == ids[::-1]
    assert [r.id for r in ledger.runs(study="s1")] == [ids[3], ids[1]]
    assert [r.id for r in ledger.runs(status="completed")] == [ids[1]]
    assert [r.id for r in ledger.runs(name="b")] == [ids[4], ids[3]]
    assert [r.id for r in ledger.runs(name="a", status="running")] == [ids[0]]
    assert [r.id for r in ledger.runs(limit=2)] == [ids[4], ids[3]]
    with pytest.raises(DltricksError, match="valid: completed, failed, interrupted, running"):
        ledger.runs(status="done")


def test_prefix_lookup_ambiguity_and_bad_input(ledger: Ledger):
    a = _start(ledger, run_id="abc000000001")
    b = _start(ledger, run_id="abc000000002")
    c = _start(ledger, run_id="fed000000000")
    assert ledger.get("fed").id == c and ledger.get("ABC000000002").id == b
    assert ledger.get(a).id == a
    with pytest.raises(DltricksError, match="ambiguous: it matches abc000000001, abc000000002"):
        ledger.get("abc")
    for missing in ("0123", "zzz", "", "abc0000000011"):
        with pytest.raises(DltricksError, match="no run"):
            ledger.get(missing)
    with pytest.raises(RunExistsError, match="fed000000000 already exists"):
        _start(ledger, run_id="fed000000000")
    with pytest.raises(DltricksError, match="12 lowercase hex"):
        _start(ledger, run_id="not-an-id")
    with pytest.raises(DltricksError, match="valid: completed, failed, interrupted, running"):
        ledger.finish(a, "done")
    with pytest.raises(DltricksError, match="cannot update run field 'seed'"):
        ledger.update(a, seed=4)
    with pytest.raises(DltricksError, match="not a number"):
        ledger.update(a, metrics={"test_accuracy": "high"})
    ledger.finish("fed", "completed")  # update/finish accept a unique prefix too
    assert ledger.get(c).status == "completed"
    ledger.delete(b)
    assert ledger.get("abc").id == a and not (ledger.root / "runs" / b).exists()


def test_two_ledgers_share_one_store(ledger: Ledger):
    """Two machines pointing at one URL see each other's runs."""
    other = Ledger(url=ledger.url, root=ledger.root / "elsewhere")
    run_id = other.start_run(name="remote", recipe={}, seed=1, device="cpu")
    assert ledger.get(run_id).name == "remote"
    other.close()


# --- git --------------------------------------------------------------------------------------


def test_git_commit_dirty_flag_and_saved_diff(tmp_path: Path, ledger_home: Path):
    repo = _repo(tmp_path / "repo")
    head = _git(repo, "rev-parse", "HEAD")
    ledger = Ledger()

    clean = ledger.get(ledger.start_run(name="clean", recipe={}, seed=0, device="cpu", cwd=repo))
    assert (clean.git_commit, clean.git_dirty, clean.git_diff_hash) == (head, False, None)
    assert not (ledger.root / "runs" / clean.id / "uncommitted.diff").exists()
    (repo / "debug.log").write_text("ignored files do not make the tree dirty\n")
    assert git_state(repo).dirty is False

    # A tracked edit and a new untracked file: both are part of the code the run used.
    (repo / "train.py").write_text("lr = 0.2\n")
    (repo / "new_block.py").write_text("width = 64\n")
    (repo / "sub").mkdir()
    dirty = ledger.get(ledger.start_run(name="dirty", recipe={}, seed=0, device="cpu", cwd=repo / "sub"))
    assert dirty.git_commit == head and dirty.git_dirty is True and len(dirty.git_diff_hash) == 64
    saved = (ledger.root / "runs" / dirty.id / "uncommitted.diff").read_text()
    assert "-lr = 0.1" in saved and "+lr = 0.2" in saved and "+width = 64" in saved
    assert "debug.log" not in saved

    # The saved diff recreates the dirty tree from the commit.
    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(repo), str(clone))
    _git(clone, "apply", str(ledger.root / "runs" / dirty.id / "uncommitted.diff"))
    assert (clone / "train.py").read_text() == "lr = 0.2\n" and (clone / "new_block.py").read_text() == "width = 64\n"

    # The hash is a function of the changes: the same tree hashes alike, new content differently.
    assert git_state(repo).diff_hash == dirty.git_diff_hash
    (repo / "new_block.py").write_text("width = 128\n")
    assert git_state(repo).diff_hash != dirty.git_diff_hash
    assert dirty.git_short == head[:7] + "*"


def test_the_ledger_folder_inside_a_repo_never_makes_it_dirty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The default ledger (./dltricks-runs) in the user's repository: its database, weights and diffs
    are not the user's code, so a clean commit stays clean run after run and the diff holds only code."""
    repo = _repo(tmp_path / "repo")
    monkeypatch.chdir(repo)
    monkeypatch.delenv("DLTRICKS_HOME", raising=False)
    monkeypatch.delenv("DLTRICKS_LEDGER", raising=False)
    ledger = Ledger()
    assert (repo / "dltricks-runs" / ".gitignore").read_text().splitlines()[-1] == "*"
    first = ledger.get(ledger.start_run(name="a", recipe={}, seed=0, device="cpu"))
    (ledger.run_dir(first.id) / "model.safetensors").write_bytes(b"\0weights")
    second = ledger.get(ledger.start_run(name="b", recipe={}, seed=0, device="cpu"))
    assert (first.git_dirty, second.git_dirty) == (False, False)
    assert _git(repo, "status", "--porcelain") == ""
    # a ledger folder from before the .gitignore (or one whose .gitignore was removed) is left out too
    (repo / "dltricks-runs" / ".gitignore").unlink()
    (repo / "train.py").write_text("lr = 0.3\n")
    third = ledger.get(ledger.start_run(name="c", recipe={}, seed=0, device="cpu"))
    saved = (ledger.root / "runs" / third.id / "uncommitted.diff").read_text()
    assert third.git_dirty and "+lr = 0.3" in saved and "dltricks-runs" not in saved
    assert git_state(repo, exclude=(ledger.root,)).diff_hash == third.git_diff_hash
    (ledger.root / "runs" / third.id / "more.bin").write_bytes(b"x")  # the ledger grows; the hash does not
    assert git_state(repo, exclude=(ledger.root,)).diff_hash == third.git_diff_hash


def test_git_outside_repo_no_commits_and_no_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_state(outside) == git_state(outside / ".") and git_state(outside).commit is None
    assert git_state(outside).dirty is False

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    _git(fresh, "init", "-q")
    assert git_state(fresh).dirty is False and git_state(fresh).commit is None
    (fresh / "model.py").write_text("depth = 3\n")
    state = git_state(fresh)
    assert state.commit is None and state.dirty and state.diff_hash and "+depth = 3" in state.diff

    monkeypatch.setenv("PATH", str(tmp_path / "no-such-bin"))  # git cannot be found
    assert git_state(fresh).commit is None and git_state(fresh).dirty is False


# --- many processes, one SQLite file ------------------------------------------------------------


def _worker(url: str, root: str, worker: int, n: int, barrier) -> None:
    barrier.wait(timeout=60)  # all at the same moment: they race to create the schema, then to write
    ledger = Ledger(url=url, root=root)
    for i in range(n):
        run_id = ledger.start_run(name=f"w{worker}", recipe={"worker": worker, "i": i}, seed=i, device="cpu",
                                  study="concurrent", cwd=root)
        ledger.update(run_id, curves={"loss": [1.0, 0.5]})
        ledger.finish(run_id, "completed", metrics={"test_accuracy": i / n})


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_four_processes_write_one_ledger(backend: str, tmp_path: Path, request: pytest.FixtureRequest):
    """Ablation workers share one ledger: 4 processes x 20 runs each, none lost, none duplicated."""
    workers, n = 4, 20
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared' / 'ledger.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_worker, args=(url, str(tmp_path), w, n, barrier)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * workers

    runs = Ledger(url=url, root=tmp_path).runs(study="concurrent")
    assert len(runs) == workers * n and len({r.id for r in runs}) == workers * n
    assert all(r.status == "completed" and r.curves == {"loss": [1.0, 0.5]} for r in runs)
    for w in range(workers):
        assert sorted(r.seed for r in runs if r.name == f"w{w}") == list(range(n))
    if backend == "sqlite":
        with sqlite3.connect(tmp_path / "shared" / "ledger.db") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- broken stores ------------------------------------------------------------------------------


def test_corrupt_or_foreign_ledger_file(ledger_home: Path):
    path = ledger_home / "ledger.db"
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 100)
    with pytest.raises(DltricksError) as err:
        Ledger()
    assert str(path) in str(err.value) and "not an SQLite database" in str(err.value)
    assert "\n" not in str(err.value)

    foreign = ledger_home / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE runs (id TEXT PRIMARY KEY, score REAL)")
    with pytest.raises(DltricksError, match="not a dltricks ledger"):
        Ledger(url=f"sqlite:///{foreign}")


def test_bad_urls_and_unreachable_server(ledger_home: Path, monkeypatch: pytest.MonkeyPatch):
    for url in ("mysql://root@localhost/db", "ledger.db", "http://example.com/ledger"):
        with pytest.raises(DltricksError) as err:
            Ledger(url=url)
        assert url in str(err.value) and "sqlite:///" in str(err.value) and "postgresql://" in str(err.value)
    with pytest.raises(DltricksError, match="127.0.0.1:1/nowhere") as err:
        Ledger(url="postgresql://postgres@127.0.0.1:1/nowhere")
    assert "\n" not in str(err.value)
    # DLTRICKS_LEDGER picks the store when no URL is given
    monkeypatch.setenv("DLTRICKS_LEDGER", f"sqlite:///{ledger_home / 'elsewhere.db'}")
    assert Ledger().where == str(ledger_home / "elsewhere.db") and (ledger_home / "elsewhere.db").exists()


# --- the sheet ----------------------------------------------------------------------------------


@pytest.fixture
def two_runs(ledger_home: Path, tmp_path: Path):
    repo = _repo(tmp_path / "repo")
    ledger = Ledger()
    a = ledger.start_run(name="base", recipe=RECIPE, seed=0, device="cpu", cwd=repo, study="abl")
    ledger.finish(a, "completed", metrics={"test_accuracy": 0.80, "test_loss": 0.60})
    (repo / "train.py").write_text("lr = 0.3\n")
    patched = json.loads(json.dumps(RECIPE))
    patched["train"]["label_smoothing"] = 0.1
    patched["model"]["norm"] = "group"
    del patched["model"]["width"]
    b = ledger.start_run(name="smooth|ed", recipe=patched, seed=1, device="cpu", cwd=repo, study="abl")
    ledger.finish(b, "completed", metrics={"test_accuracy": 0.85, "test_loss": 0.50, "test_dice": 0.7})
    return ledger, ledger.get(a), ledger.get(b)


def test_csv_markdown_json_parse_back(two_runs):
    ledger, a, b = two_runs
    records = ledger.runs()

    rows = list(csv.DictReader(io.StringIO(to_csv(records))))
    assert [r["id"] for r in rows] == [b.id, a.id]
    assert rows[0]["name"] == "smooth|ed" and rows[0]["git_dirty"] == "True" and rows[1]["git_dirty"] == "False"
    assert rows[1]["git_commit"] == a.git_commit and float(rows[1]["metrics.test_accuracy"]) == 0.80
    assert rows[1]["metrics.test_dice"] == "" and float(rows[0]["metrics.test_dice"]) == 0.7
    assert float(rows[0]["recipe.train.label_smoothing"]) == 0.1 and rows[1]["recipe.model.width"] == "32"
    assert datetime.fromisoformat(rows[0]["started"]) == b.started

    lines = to_markdown(records).strip().splitlines()
    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip("|").split(" | ")]

    header = cells(lines[0])
    assert len(lines) == 4 and set(cells(lines[1])) <= {"---", "---:"}
    # only the recipe keys that differ between the runs, then the metrics, headline ones first
    assert header[7:] == ["model.norm", "model.width", "train.label_smoothing",
                          "test_accuracy", "test_dice", "test_loss"]
    row_b = dict(zip(header, cells(lines[2])))
    assert row_b["id"] == b.id and row_b["commit"] == b.git_commit[:7] + "*" and row_b["name"] == "smooth\\|ed"
    assert row_b["train.label_smoothing"] == "0.1" and row_b["test_accuracy"] == "0.85"

    data = json.loads(to_json(records))
    assert [d["id"] for d in data] == [b.id, a.id]
    d = data[1]
    assert (d["name"], d["status"], d["seed"], d["git_commit"], d["git_dirty"]) == (
        "base", "completed", 0, a.git_commit, False)
    assert d["recipe"] == RECIPE and d["metrics"] == {"test_accuracy": 0.80, "test_loss": 0.60}
    assert datetime.fromisoformat(d["started"]) == a.started and datetime.fromisoformat(d["finished"]) == a.finished


def test_runs_table_and_diff(two_runs):
    _, a, b = two_runs
    console = Console(record=True, width=250, color_system=None)
    console.print(runs_table([b, a]))
    text = console.export_text()
    assert a.id in text and b.id in text and b.git_commit[:7] + "*" in text
    assert "test_accuracy" in text and "0.85" in text and "test_dice" in text

    diff = diff_runs(a, b)
    assert diff.recipe == {"model.norm": (MISSING, "group"), "model.width": (32, MISSING),
                           "train.label_smoothing": (0.0, 0.1)}
    assert diff.metrics["test_accuracy"].delta == pytest.approx(0.05)
    assert diff.metrics["test_loss"].delta == pytest.approx(-0.10)
    assert diff.metrics["test_dice"].a is None and diff.metrics["test_dice"].delta is None
    assert diff.other["seed"] == (0, 1) and diff.other["git"] == (a.git_commit[:7], b.git_commit[:7] + "*")
    assert diff_runs(a, a).recipe == {} and diff_runs(a, a).other == {}

    console.print(render_diff(diff))
    text = console.export_text()
    assert "train.label_smoothing" in text and "(absent)" in text and "+0.05" in text and "-0.1" in text


# --- the sheet in a terminal: width, folding, failures, an empty folder -------------------------------


@pytest.fixture
def mixed_runs(ledger_home: Path):
    """A plain run, a failed plain run, and an ablation study of 6 runs (one failed)."""
    ledger = Ledger()
    plain = ledger.start_run(name="mnist1d-cnn-with-a-long-name", recipe=RECIPE, seed=0, device="cpu")
    ledger.finish(plain, "completed", metrics={"test_accuracy": 0.91, "test_loss": 0.3})
    bad = ledger.start_run(name="mnist1d-cnn", recipe=RECIPE, seed=0, device="cpu")
    ledger.finish(bad, "failed", failure="loss became NaN at epoch 2 (train.lr = 1e+30 is far too high)")
    for seed in range(3):
        for variant in ("baseline", "+label_smoothing"):
            run = ledger.start_run(name="mnist1d-cnn", recipe=RECIPE, seed=seed, device="cpu", study="abl-1",
                                   variant=variant)
            if seed == 2 and variant != "baseline":
                ledger.finish(run, "failed", failure="its worker process died (killed or crashed)")
            else:
                ledger.finish(run, "completed", metrics={"test_accuracy": 0.8 + 0.01 * seed, "test_loss": 0.5})
    return ledger, plain, bad


def _render(table, width: int) -> list[str]:
    console = Console(record=True, width=width, color_system=None)
    console.print(table)
    return console.export_text().splitlines()


def test_runs_table_fits_80_columns_and_folds_a_study(mixed_runs):
    ledger, plain, bad = mixed_runs
    lines = _render(runs_table(ledger.runs(), width=80, fold=True), 80)
    text = "\n".join(lines)
    assert all(len(line.rstrip()) <= 80 for line in lines)
    assert plain in text and bad in text
    study = [line for line in lines if "abl-1" in line]
    assert len(study) == 1 and "6 runs, 1 failed" in study[0] and "2 variants" in study[0]
    assert "loss became NaN" in text  # the reason, shortened to what fits
    header = next(line for line in lines if line.split()[:2] == ["id", "name"]).split()
    assert header[:3] == ["id", "name", "status"] and header[-1] == "failure"
    # wide terminal: every column; --all: one line per run
    wide = "\n".join(_render(runs_table(ledger.runs(), width=250, fold=False), 250))
    for col in ("seed", "commit", "started", "duration", "test_accuracy", "test_loss"):
        assert col in wide
    assert wide.count("+label_smoothing") == 3 and "its worker process died" in wide


def test_runs_table_columns_by_name(mixed_runs):
    ledger, plain, _ = mixed_runs
    lines = _render(runs_table(ledger.runs(), columns=["id", "test_accuracy"]), 120)
    assert lines[1].split() == ["id", "test_accuracy"] and any(plain in line and "0.91" in line for line in lines)
    with pytest.raises(DltricksError, match="unknown column 'test_acc'.*did you mean test_accuracy"):
        runs_table(ledger.runs(), columns=["id", "test_acc"])


def test_failure_reason_in_csv_and_markdown(mixed_runs):
    ledger, _, bad = mixed_runs
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(to_csv(ledger.runs())))}
    assert "loss became NaN at epoch 2" in rows[bad]["failure"]
    assert all(r["failure"] == "" for r in rows.values() if r["status"] == "completed")
    assert "| failure |" in to_markdown(ledger.runs()).splitlines()[0] + " |"


def test_cli_runs_study_filter_all_and_an_empty_folder(mixed_runs, capsys, tmp_path, monkeypatch):
    from dltricks.cli import main

    assert main(["runs", "--study", "abl-1"]) == 0
    out = capsys.readouterr().out
    assert out.count("[+label") == 3 and "study " not in out  # one line per run (names cut to fit 80 columns)
    assert main(["runs", "--all", "--columns", "id,name,failure"]) == 0
    assert capsys.readouterr().out.count("mnist1d-cnn") == 8
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    monkeypatch.setenv("DLTRICKS_HOME", str(empty / "dltricks-runs"))
    assert main(["runs"]) == 0
    assert "no runs in" in capsys.readouterr().err
    assert main(["runs", "--format", "json"]) == 0 and capsys.readouterr().out.strip() == "[]"
    assert list(empty.iterdir()) == []  # nothing created
