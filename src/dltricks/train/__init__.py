"""The loop, losses, metrics, schedules and checkpoints; ``train(recipe)`` runs a recipe end to end."""

from dltricks.train.loop import History, TrainingInterrupted, evaluate, fit
from dltricks.train.tasks import Classification, Task

__all__ = ["History", "TrainingInterrupted", "evaluate", "fit", "Classification", "Task", "train", "RunResult"]


def __getattr__(name: str):
    # train() pulls in the ledger (SQLAlchemy); fit() alone should not
    if name in ("train", "RunResult"):
        from dltricks.train import run

        return getattr(run, name)
    raise AttributeError(name)
