"""The sheet of runs as a user meets it: metric directions, columns by name, 80-column terminals, durations."""

from __future__ import annotations

import subprocess
import sys
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
