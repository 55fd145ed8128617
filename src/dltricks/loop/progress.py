"""The training progress bar (rich): epoch, step, loss, the validation metric and ETA."""

from __future__ import annotations

import os
import time

# the validation figure the bar shows, the first of these an epoch's row has (a meta-learner's: after 1 step)
SHOWN = ("val_accuracy", "val_dice", "val_loss", "val_post_update_accuracy_1step", "val_post_update_mse_1step")


class TrainProgress:
    """A rich bar per run: epoch, step, loss, the validation metric and ETA. Silent when disabled."""

    def __init__(self, enabled: bool, epochs: int, steps: int):
        self.enabled = enabled and os.environ.get("DLTRICKS_NO_PROGRESS", "") in ("", "0")
        self.epochs, self.steps = epochs, steps
        self.last_loss: float | None = None
        self._metric = ""
        self._pending = 0           # steps not yet shown: the bar is updated at most every UPDATE_S
        self._shown = 0.0

    def __enter__(self) -> TrainProgress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[metric]}"),
                              TimeRemainingColumn(), transient=False)
            self.p.__enter__()
            self.task = self.p.add_task("epoch", total=self.epochs * self.steps, loss="-", metric="")
        return self

    def start_epoch(self, epoch: int, step: int) -> None:
        if self.enabled:
            self._pending = 0
            self.p.update(self.task, description=f"epoch {epoch + 1}/{self.epochs}",
                          completed=epoch * self.steps + step)

    UPDATE_S = 0.1  # rich redraws ten times a second; updating it every step would only cost time

    def step(self, loss: float) -> None:
        self.last_loss = loss
        if self.enabled:
            self._pending += 1
            now = time.monotonic()
            if now - self._shown >= self.UPDATE_S:
                self._flush()
                self._shown = now

    def _flush(self) -> None:
        if self._pending:
            self.p.update(self.task, advance=self._pending, loss=f"{self.last_loss:.4f}")
            self._pending = 0

    def end_epoch(self, row: dict[str, float]) -> None:
        if self.enabled:
            self._flush()
            key = next((k for k in SHOWN if k in row), None)
            metric = f"{key} {row[key]:.4f}" if key else ""
            self.p.update(self.task, metric=metric)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._flush()
            self.p.__exit__(*exc)
