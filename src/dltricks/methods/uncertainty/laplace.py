"""A last-layer Laplace approximation (MacKay 1992; Daxberger et al. 2021, "Laplace Redux"), by hand.

The network's weights stay at their trained values except the last layer's ``W`` (K, D+1 with the
bias), which gets a Gaussian posterior ``N(W_MAP, (H + tau I)^-1)``: ``H`` is the generalised
Gauss-Newton Hessian of the training loss at ``W_MAP`` and ``tau`` the prior precision.

- ``diag``: H_kd = sum_n p_nk (1 - p_nk) phi_nd^2 (one variance per weight);
- ``kron`` (K-FAC, Ritter et al. 2018): H ~ G (x) A with G = mean_n (diag p_n - p_n p_n^T) (K, K) and
  A = sum_n phi_n phi_n^T (D+1, D+1); eigendecompositions of G and A invert ``G (x) A + tau I`` exactly.

The logits' variance at a test input is ``phi^T Sigma phi`` per class, and the probit approximation
(MacKay 1992; Spiegelhalter & Lauritzen 1990) turns it into probabilities without sampling:
``softmax(f / sqrt(1 + pi/8 var f))``. For regression (one output, Gaussian noise sigma^2) H is
``A / sigma^2`` and the predictive variance ``phi^T Sigma phi + sigma^2``.

``tau`` is the recipe's ``eval.laplace_prior_precision``, or (0) the value on a log grid 1e-4..1e4 with
the lowest validation NLL.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dltricks.methods.uncertainty.features import collect, linear_head
from dltricks.methods.uncertainty.predictive import Predictive

__all__ = ["LastLayerLaplace"]

GRID = [10.0 ** e for e in torch.arange(-4.0, 4.01, 0.5).tolist()]


def _with_bias(phi: torch.Tensor) -> torch.Tensor:
    return torch.cat([phi, torch.ones(len(phi), 1, dtype=phi.dtype)], 1)


class LastLayerLaplace(Predictive):
    name = "laplace_last_layer"

    def __init__(self, model: nn.Module, x_train: torch.Tensor, structure: str, regression: bool,
                 device: torch.device, noise_var: float = 1.0) -> None:
        """``x_train`` (N, ...): inputs whose features form the Hessian; ``noise_var``: sigma^2
        (regression, in the model's output units)."""
        self.model, self.structure, self.regression, self.device = model.eval(), structure, regression, device
        _, self.head = linear_head(model, "eval.laplace")
        phi, out = collect(model, x_train, self.head, device)
        phi = _with_bias(phi.double().cpu())
        self.tau = 1.0
        if regression:
            self.noise_var = noise_var
            a = phi.T @ phi / noise_var
            self.h_diag = a.diagonal().clone()[None]  # (1, D+1)
            self.g_eig, self.g_vec = torch.ones(1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64)
            self.a_eig, self.a_vec = torch.linalg.eigh(a)
        else:
            p = out.double().cpu().softmax(1)
            self.h_diag = (p * (1 - p)).T @ phi.pow(2)  # (K, D+1)
            g = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).mean(0)
            self.g_eig, self.g_vec = torch.linalg.eigh(g)
            self.a_eig, self.a_vec = torch.linalg.eigh(phi.T @ phi)
        self.g_eig, self.a_eig = self.g_eig.clamp_min(0), self.a_eig.clamp_min(0)

    def logit_var(self, phi: torch.Tensor, tau: float | None = None) -> torch.Tensor:
        """Variance (N, K) of each output under the weight posterior, at features ``phi`` (N, D+1)."""
        tau = self.tau if tau is None else tau
        if self.structure == "diag":
            return phi.pow(2) @ (1.0 / (self.h_diag + tau)).T
        psi2 = (phi @ self.a_vec).pow(2)  # (N, D+1)
        m = psi2 @ (1.0 / (self.g_eig[:, None] * self.a_eig[None, :] + tau)).T  # (N, K): per eigvec of G
        return m @ self.g_vec.pow(2).T

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        phi, out = collect(self.model, x, self.head, self.device)
        return _with_bias(phi.double().cpu()), out.double().cpu()

    def _predict(self, phi: torch.Tensor, out: torch.Tensor, tau: float | None = None):
        var = self.logit_var(phi, tau)
        if self.regression:
            return out[:, 0], var[:, 0]
        return torch.softmax(out / torch.sqrt(1 + math.pi / 8 * var), 1)

    def choose_prior(self, x_val: torch.Tensor, y_val: torch.Tensor, score) -> float:
        """Set ``tau`` to the grid value whose validation predictive has the lowest ``score(pred, y)``."""
        phi, out = self._features(x_val)
        scores = [(score(self._predict(phi, out, t), y_val), t) for t in GRID]
        self.tau = min(scores)[1]
        return self.tau

    @torch.no_grad()
    def __call__(self, x):
        phi, out = self._features(x)
        return self._predict(phi, out)
