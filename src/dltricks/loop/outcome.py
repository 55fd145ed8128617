"""How a training loop ends: its :class:`History` (curves and how it stopped), or :class:`TrainingInterrupted`
after a :class:`StopFlag` turned Ctrl-C (or torchrun's SIGTERM) into a stop at the next safe point."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dltricks.loop.checkpoint import LoopState

__all__ = ["History", "StopFlag", "TrainingInterrupted"]


@dataclass
class History:
    """Per-epoch curves (``train_loss``, ``val_accuracy``, ``lr``, ...) and how training ended."""

    curves: dict[str, list[float]] = field(default_factory=dict)
    epochs: int = 0
    best_epoch: int | None = None
    stopped_early: bool = False
    wall_time: float = 0.0
    notes: dict[str, float] = field(default_factory=dict)  # what the run chose before training (lr_found)

    def __getitem__(self, key: str) -> list[float]:
        return self.curves[key]

    @property
    def final(self) -> dict[str, float]:
        """The last value of every curve."""
        return {k: v[-1] for k, v in self.curves.items() if v}

    @classmethod
    def of(cls, st: LoopState) -> History:
        """The history so far of a loop that stands at ``st``."""
        return cls(curves={k: list(v) for k, v in st.curves.items()}, epochs=st.epoch, best_epoch=st.best_epoch,
                   stopped_early=st.stopped_early, wall_time=st.elapsed,
                   notes={"lr_found": st.lr_found} if st.lr_found is not None else {})


class TrainingInterrupted(Exception):
    """Ctrl-C reached a safe point: the loop saved a checkpoint (if it had somewhere to) and stopped."""

    def __init__(self, checkpoint: Path | None, history: History | None, *, epoch: int = 0, step: int = 0,
                 epochs: int = 0, steps: int = 0):
        where = f" in epoch {epoch + 1} of {epochs}, after step {step} of {steps}" if step else \
            f" after epoch {epoch} of {epochs}" if epochs else ""
        super().__init__(f"training interrupted{where}")
        self.checkpoint, self.history = checkpoint, history
        self.epoch, self.step, self.epochs, self.steps = epoch, step, epochs, steps
        self.where = where.strip()  # "in epoch 3 of 6, after step 12 of 57" or "after epoch 2 of 6"


class StopFlag:
    """Turns the first SIGINT into a request to stop at the next safe point; a second one aborts.
    ``term``: SIGTERM too (torchrun stops its ranks with it, and waits for them before killing)."""

    def __init__(self, term: bool = False) -> None:
        self.requested = False
        self._old: Any = None
        self._old_term: Any = None
        self.term = term

    def __enter__(self) -> StopFlag:
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
            if self.term:
                self._old_term = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            self._old = None
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)
