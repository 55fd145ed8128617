"""Uncertainty and calibration: MC dropout, deep ensembles, temperature scaling, a last-layer Laplace
approximation and a Gaussian-process head, with NLL, Brier, ECE, reliability diagrams, OOD AUROC and
regression intervals. Chosen by ``eval`` keys; every run's final metrics go through
:func:`~dltricks.methods.uncertainty.evaluate.evaluate_uncertainty` (registered with the trainer)."""

from dltricks.methods.uncertainty.evaluate import evaluate_uncertainty  # noqa: F401  (registers)
from dltricks.methods.uncertainty.of_runs import ensemble_of_runs

__all__ = ["evaluate_uncertainty", "ensemble_of_runs"]
