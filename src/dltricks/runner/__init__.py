"""One recipe run end to end: build the data, model and method, fit, score, draw and record it.

    result = dltricks.train(Recipe.load("mnist1d-cnn"))

Modules: :mod:`references` (``recipe:NAME`` -> a run id, trained once per machine), :mod:`build` (every
part of a run, checked before the ledger records it), :mod:`metrics` (final metrics and their names before
training, from the learning set-ups), :mod:`figures`, :mod:`run` (:func:`train`: fit, score, record).
"""

from dltricks.runner.metrics import metric_names
from dltricks.runner.run import RunResult, train

__all__ = ["RunResult", "metric_names", "train"]
