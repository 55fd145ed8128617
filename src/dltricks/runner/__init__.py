"""One recipe run end to end: build the data, model and method, fit, score, draw and record it.

    result = dltricks.train(Recipe.load("mnist1d-cnn"))
"""

from dltricks.runner.run import RunResult, train

__all__ = ["RunResult", "train"]
