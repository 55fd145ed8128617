"""The sheet of runs as a user meets it: metric directions, columns by name, 80-column terminals, durations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from dltricks.direction import higher_is_better
from dltricks.ledger import Ledger, diff_runs, render_diff

RECIPE = {"data": {"name": "mnist1d"}, "model": {"name": "cnn", "width": 32}, "train": {"lr": 0.001, "epochs": 3}}
SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_one_direction_for_every_part():
    from dltricks.ledger import sheet
    from dltricks.loop import tasks

    assert sheet.higher_is_better is higher_is_better and tasks.higher_is_better is higher_is_better
    for up in ("test_accuracy", "val_dice", "test_iou", "test_f1", "test_recall", "test_ood_auroc", "size_ratio",
               "speedup_b1", "test_gzsl_h"):
        assert higher_is_better(up), up
    for down in ("test_loss", "val_loss", "test_error", "test_ece", "test_nll", "test_mae", "test_mse", "params",
                 "flops", "latency_b1_ms", "size_bytes", "wall_time_s", "test_brier", "test_hd95", "test-rmse"):
        assert not higher_is_better(down), down


def test_the_diff_colours_a_rise_in_params_as_worse(ledger_home: Path):
    ledger = Ledger()
    a = ledger.start_run(name="small", recipe=RECIPE, seed=0, device="cpu")
    ledger.finish(a, "completed", metrics={"params": 1000.0, "test_accuracy": 0.8, "test_loss": 0.6})
    b = ledger.start_run(name="big", recipe=RECIPE, seed=0, device="cpu")
    ledger.finish(b, "completed", metrics={"params": 9000.0, "test_accuracy": 0.9, "test_loss": 0.4})
    console = Console(record=True, width=120, color_system="truecolor", force_terminal=True)
    console.print(render_diff(diff_runs(ledger.get(a), ledger.get(b))))
    lines = console.export_text(styles=True).splitlines()
    styled = {m: next(line for line in lines if f" {m} " in line) for m in ("params", "test_accuracy", "test_loss")}
    red, green = "\x1b[31m", "\x1b[32m"
    assert red in styled["params"] and green not in styled["params"]  # more parameters: worse
    assert green in styled["test_accuracy"] and green in styled["test_loss"]  # up, and down: both better


# --- the real CLI: columns by name, 80 columns, an interrupted run's duration ------------------------------------


def _cli(home: Path, *args: str, columns: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "DLTRICKS_HOME": str(home), "COLUMNS": str(columns), "PYTHONPATH": SRC}
    env.pop("DLTRICKS_LEDGER", None)
    return subprocess.run([sys.executable, "-m", "dltricks.cli", *args], cwd=home, env=env, capture_output=True,
                          text=True, timeout=120)


def test_an_interrupted_run_on_the_sheet_and_its_duration_after_the_resume(ledger_home: Path, monkeypatch):
    """The README's `runs --columns ...,test_accuracy,...` on a ledger holding one interrupted run; then the
    run resumed after an idle gap: its duration is the time it trained, not the time since it started."""
    from dltricks.loop.training import TrainingInterrupted
    from dltricks.recipe import Recipe
    from dltricks.runner.run import train

    monkeypatch.setenv("DLTRICKS_CACHE", str(ledger_home / "cache"))
    recipe = Recipe.load("mnist1d-mlp", ["data.num_samples=200", "train.epochs=3", "model.hidden=[16]"])

    epochs: list[int] = []

    def ctrl_c(epoch: int, row: dict) -> None:  # a real SIGINT, after the first epoch
        epochs.append(epoch)
        if len(epochs) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    ledger = Ledger()
    with pytest.raises(TrainingInterrupted) as stopped:
        train(recipe, ledger=ledger, progress=False, on_epoch=ctrl_c)
    run_id = stopped.value.run_id
    first = ledger.get(run_id)
    assert first.status == "interrupted" and first.metrics == {} and first.duration is not None

    shown = _cli(ledger_home, "runs", "--columns", "id,name,status,test_accuracy,failure")
    assert shown.returncode == 0, shown.stderr
    header = next(line for line in shown.stdout.splitlines() if line.split()[:1] == ["id"])
    assert header.split() == ["id", "name", "status", "test_accuracy", "failure"]
    assert any(run_id in line and "interrupted" in line for line in shown.stdout.splitlines())
    variant = _cli(ledger_home, "runs", "--columns", "id,variant,study")
    assert variant.returncode == 0 and variant.stdout.split()[:3] == ["id", "variant", "study"], variant.stderr
    assert "variant" in _cli(ledger_home, "runs", "--format", "csv").stdout.splitlines()[0].split(",")
    bad = _cli(ledger_home, "runs", "--columns", "id,test_acc")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert "unknown column 'test_acc'" in bad.stderr and "did you mean test_accuracy" in bad.stderr
    assert "valid: id, name, status" in bad.stderr and "variant" in bad.stderr

    idle = 4.0
    time.sleep(idle)  # the run sits interrupted: this is not training time
    train(recipe, ledger=ledger, progress=False, resume=run_id)
    done = ledger.get(run_id)
    span = (done.finished - done.started).total_seconds()
    assert done.status == "completed" and span > idle
    assert first.duration.total_seconds() < done.duration.total_seconds() < span - idle + 0.5
    (row,) = json.loads(_cli(ledger_home, "runs", "--format", "json").stdout)
    assert row["duration_s"] == pytest.approx(done.duration.total_seconds())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_ledger_from_before_attempts_were_timed_opens_and_keeps_its_durations(backend: str, ledger_home: Path,
                                                                               request: pytest.FixtureRequest):
    from sqlalchemy import create_engine, inspect, text

    url = request.getfixturevalue("fresh_postgres_url") if backend == "postgresql" else None
    ledger = Ledger(url=url)
    old = ledger.start_run(name="old", recipe=RECIPE, seed=0, device="cpu")
    ledger.finish(old, "completed", metrics={"test_accuracy": 0.5})
    ledger.close()
    engine = create_engine(url or f"sqlite:///{ledger_home / 'ledger.db'}")
    with engine.begin() as conn:  # the runs table as the first ledgers wrote it
        for column in ("active_s", "attempt_started"):
            conn.execute(text(f"ALTER TABLE runs DROP COLUMN {column}"))
    again, twice = Ledger(url=url), Ledger(url=url)  # opened by two processes, say: each finds the columns there
    rec = again.get(old)
    assert rec.active_s is None and rec.duration == rec.finished - rec.started
    assert {"active_s", "attempt_started"} <= {c["name"] for c in inspect(engine).get_columns("runs")}
    new = twice.start_run(name="new", recipe=RECIPE, seed=0, device="cpu")
    again.update(new, status="interrupted")
    assert again.get(new).duration is not None and again.get(new).active_s >= 0
    engine.dispose()


@pytest.fixture
def study_ledger(ledger_home: Path) -> tuple[Ledger, dict[str, str]]:
    """An ablation study with long variant names (one cell failed), a failed run and a run with a long name."""
    ledger = Ledger()
    ids = {}
    for seed in range(3):
        for variant, acc in (("baseline", 0.80), ("+label_smoothing", 0.82), ("+batch_norm_and_one_cycle", 0.85)):
            run = ledger.start_run(name="mnist1d-cnn", recipe=RECIPE, seed=seed, device="cpu",
                                   study="mnist1d-cnn-tricks-ablation-7", variant=variant)
            if seed == 2 and variant == "+label_smoothing":
                ledger.finish(run, "failed", failure="its worker process died (killed or crashed)")
            else:
                ledger.finish(run, "completed", metrics={"test_accuracy": acc + 0.001 * seed, "test_loss": 0.5,
                                                         "params": 1e4})
            ids[f"{variant}/{seed}"] = run
    bad = ledger.start_run(name="mnist1d-cnn", recipe=RECIPE, seed=0, device="cpu")
    ledger.finish(bad, "failed", failure="loss became NaN at epoch 2 (train.lr = 1e+30 is far too high)")
    long = ledger.start_run(name="mnist1d-cnn-groupnorm-small-batch-long-name", recipe=RECIPE, seed=0, device="cpu")
    ledger.finish(long, "completed", metrics={"test_accuracy": 0.9123, "test_loss": 0.3, "params": 1e4})
    ids.update(bad=bad, long=long)
    return ledger, ids


def _lines(done: subprocess.CompletedProcess) -> list[str]:
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_at_80_columns_every_name_variant_and_main_metric_reads_whole(study_ledger):
    ledger, ids = study_ledger
    home = ledger.root
    lines = _lines(_cli(home, "runs", columns=80))
    assert lines and all(len(line.rstrip()) <= 80 for line in lines), "\n".join(lines)
    (i,) = [i for i, line in enumerate(lines) if line.split()[:1] == ["study"]]
    assert "9 runs, 1 failed" in lines[i]  # the study's name wraps at a dash, whole:
    assert lines[i].split()[1] + lines[i + 1].split()[0] == "mnist1d-cnn-tricks-ablation-7" and "[3 variants]" in \
        lines[i] + lines[i + 1]
    # one line per variant under the study: its whole name and its mean metric over the seeds that finished
    for variant, mean in (("baseline", "0.801"), ("+label_smoothing", "0.8205"),
                          ("+batch_norm_and_one_cycle", "0.851")):
        assert any(line.split()[:1] == [variant] and mean in line.split() for line in lines), (variant, lines)
    # a plain run: its id with the main metric on its line, its name in whole words though it wraps
    row = next(i for i, line in enumerate(lines) if ids["long"] in line)
    assert "0.9123" in lines[row].split() and "completed" in lines[row]
    assert lines[row].split()[1] + lines[row + 1].split()[0] == "mnist1d-cnn-groupnorm-small-batch-long-name"
    assert any(ids["bad"] in line and "loss becam" in line for line in lines)  # the reason, cut to what is left
    assert "not shown at 80 columns" in "\n".join(lines)  # what was left out is named, not silently dropped

    # every run on its own line: each variant whole beside its run's id and metric
    lines = _lines(_cli(home, "runs", "--all", columns=80))
    assert all(len(line.rstrip()) <= 80 for line in lines)
    for key, run_id in ids.items():
        if "/" not in key or key == "+label_smoothing/2":
            continue
        variant, seed = key.split("/")
        i = next(i for i, line in enumerate(lines) if run_id in line)
        block = " ".join(lines[i:i + 2])  # the name may wrap onto the next line, at a space
        assert f"[{variant}]" in block.split(), (key, lines[i:i + 2])
        assert lines[i].split()[-1] == f"{ledger.get(run_id).metrics['test_accuracy']:.4g}", lines[i]


def test_a_tuning_study_folds_to_its_first_trials_and_a_count(ledger_home: Path):
    from dltricks.ledger import runs_table

    ledger = Ledger()
    for k in range(20):
        run = ledger.start_run(name="mnist1d-cnn", recipe=RECIPE, seed=0, device="cpu", study="tune-3",
                               variant=f"trial-{k:02d}")
        ledger.finish(run, "completed", metrics={"test_accuracy": 0.5 + k / 100})
    console = Console(record=True, width=80, color_system=None)
    console.print(runs_table(ledger.runs(), width=80, fold=True))
    text = console.export_text()
    names = [line.split()[0] for line in text.splitlines() if line.strip().startswith("trial-")]
    assert names == [f"trial-{k:02d}" for k in range(11)] and "... and 9 more" in text
