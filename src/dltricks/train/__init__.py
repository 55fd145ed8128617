"""The loop, losses, metrics, schedules and checkpoints; ``train(recipe)`` runs a recipe end to end.

This package is also the function ``dltricks.train``: ``dltricks.train(recipe, ledger=...)`` calls
:func:`dltricks.train.run.train`. Python binds an imported subpackage as an attribute of its parent
(``import dltricks.train.loop`` sets ``dltricks.train`` to this package), so the public function and
the package must be one object for ``dltricks.train(...)`` to work whatever was imported before.
"""

import sys
import types

from dltricks.train.loop import History, TrainingInterrupted, evaluate, fit
from dltricks.train.tasks import Classification, Task

__all__ = ["History", "TrainingInterrupted", "evaluate", "fit", "Classification", "Task", "train", "RunResult"]


def __getattr__(name: str):
    # train() pulls in the ledger (SQLAlchemy); fit() alone should not
    if name in ("train", "RunResult"):
        from dltricks.train import run

        return getattr(run, name)
    raise AttributeError(name)


class _CallablePackage(types.ModuleType):
    """This package, callable as :func:`dltricks.train.run.train`."""

    def __call__(self, *args, **kwargs):
        from dltricks.train.run import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
