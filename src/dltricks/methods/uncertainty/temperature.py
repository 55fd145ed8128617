"""Temperature scaling (Guo et al. 2017): one scalar T > 0 divides the log-probabilities, fitted to
minimise the negative log-likelihood on the validation split only; the argmax, and so the accuracy,
never changes. For a plain network ``softmax(log p / T) = softmax(logits / T)`` exactly; on an ensemble
or MC dropout it rescales the averaged predictive the same way."""

from __future__ import annotations

import math

import torch

from dltricks.methods.uncertainty.predictive import Predictive

__all__ = ["fit_temperature", "Tempered"]


def _tempered(p: torch.Tensor, t: float) -> torch.Tensor:
    return torch.softmax(p.clamp_min(1e-12).log() / t, dim=1)


def fit_temperature(p_val: torch.Tensor, y_val: torch.Tensor) -> float:
    """The T in [0.05, 20] that minimises the validation NLL of ``p_val`` (N, K) (a bounded 1D search
    over log T)."""
    logp = p_val.double().clamp_min(1e-12).log()
    y = y_val.long()

    def nll(log_t: float) -> float:
        return float(-torch.log_softmax(logp / math.exp(log_t), 1).gather(1, y[:, None]).mean())

    from scipy.optimize import minimize_scalar  # here: scipy.optimize takes 0.2 s to import

    res = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded",
                          options={"xatol": 1e-4})
    return float(math.exp(res.x))


class Tempered(Predictive):
    name = "temperature_scaling"

    def __init__(self, inner: Predictive, temperature: float) -> None:
        self.inner, self.temperature = inner, temperature

    def to(self, device):
        self.inner.to(device)
        return self

    def __call__(self, x):
        return _tempered(self.inner(x), self.temperature)
