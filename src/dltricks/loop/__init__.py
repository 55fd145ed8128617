"""The training loop and what it is made of: tasks (loss, meter, predict), batches, optimisers,
schedules, checkpoints and the method protocol. One recipe run end to end lives above, in
:mod:`dltricks.runner`."""

from dltricks.loop.tasks import Classification, Task
from dltricks.loop.training import History, TrainingInterrupted, evaluate, fit

__all__ = ["History", "TrainingInterrupted", "evaluate", "fit", "Classification", "Task"]
