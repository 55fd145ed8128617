"""A Gaussian-process head on learnt features: deep kernel learning (Wilson et al. 2016) with GPyTorch.

The trained network without its last layer is the feature map; its features, standardised by their
training mean and std, enter an RBF kernel. Feature map and GP then train together for ``eval.gp_epochs``
epochs (the network at a tenth of the recipe's learning rate, so the GP adapts the features rather than
relearning them):

- regression: an exact GP, ``ExactMarginalLogLikelihood`` on up to ``eval.gp_max_points`` training
  points (drawn by seed), full batch; the predictive is the GP's posterior plus its learnt noise;
- classification: a variational GP (SVGP, Hensman et al. 2015) per class with ``eval.gp_inducing``
  inducing points initialised on training features, a softmax likelihood and the ELBO on mini-batches
  (SV-DKL, Wilson et al. 2016); the predictive averages the likelihood over 32 samples of the latents.

The run's own weights are untouched: the head trains on a copy of the network.
"""

from __future__ import annotations

import gpytorch
import torch
from torch import nn

from dltricks.methods.uncertainty.features import backbone
from dltricks.methods.uncertainty.predictive import Predictive

__all__ = ["GPHead"]


class _Standardise(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return (f - self.mean) / self.std


def median_distance(z: torch.Tensor) -> float:
    """The median pairwise distance of the rows of ``z`` (N, D): the RBF lengthscale to start from. GPyTorch's
    default (0.69) suits a few input dimensions; between standardised features of a 512-wide layer points
    lie ~32 apart, every kernel value is ~0 and the GP predicts its prior (chance accuracy, measured)."""
    return float(torch.pdist(z.detach().double()).median().clamp_min(1e-3))


class _Exact(gpytorch.models.ExactGP):
    """Inputs arrive flattened (N, prod(in_shape)) because GPyTorch concatenates train and test inputs
    along dim -2; the feature map sees them in their own shape."""

    def __init__(self, x, y, likelihood, features: nn.Module, in_shape: tuple[int, ...]) -> None:
        super().__init__(x, y, likelihood)
        self.features, self.in_shape = features, in_shape
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

    def forward(self, x):
        z = self.features(x.view(-1, *self.in_shape))
        return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))


class _SVGP(gpytorch.models.ApproximateGP):
    """K independent GPs (one latent function per class) on the features."""

    def __init__(self, inducing: torch.Tensor, k: int) -> None:  # inducing (M, D)
        batch = torch.Size([k])
        dist = gpytorch.variational.CholeskyVariationalDistribution(len(inducing), batch_shape=batch)
        strategy = gpytorch.variational.IndependentMultitaskVariationalStrategy(
            gpytorch.variational.VariationalStrategy(self, inducing.expand(k, *inducing.shape).clone(), dist,
                                                     learn_inducing_locations=True), num_tasks=k)
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean(batch_shape=batch)
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(batch_shape=batch),
                                                         batch_shape=batch)

    def forward(self, z):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))


class GPHead(Predictive):
    name = "gp_head"

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, regression: bool, classes: int,
                 epochs: int, lr: float, batch_size: int, inducing: int, max_points: int, seed: int,
                 device: torch.device) -> None:
        """``x`` (N, ...) training inputs; ``y`` (N,) class ids, or regression targets in the model's
        output units."""
        self.regression, self.device = regression, device
        self.in_shape = tuple(x.shape[1:])
        gen = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            body, _ = backbone(model, "eval.gp_head")
            body = body.to(device).eval()  # norms keep their statistics; gradients still flow
            with torch.no_grad():
                f = torch.cat([body(x[i:i + 512].to(device)).flatten(1) for i in range(0, len(x), 512)])
            self.features = nn.Sequential(body, nn.Flatten(), _Standardise(f.mean(0), f.std(0).clamp_min(1e-6)))
            if regression:
                self._fit_exact(x, y, epochs, lr, max_points, gen)
            else:
                self._fit_svgp(x, y, classes, epochs, lr, batch_size, inducing, gen)

    def _fit_exact(self, x, y, epochs, lr, max_points, gen) -> None:
        if len(x) > max_points:
            keep = torch.randperm(len(x), generator=gen)[:max_points]
            x, y = x[keep], y[keep]
        xf, yf = x.flatten(1).to(self.device), y.float().to(self.device)
        self.likelihood = gpytorch.likelihoods.GaussianLikelihood().to(self.device)
        self.gp = _Exact(xf, yf, self.likelihood, self.features, self.in_shape).to(self.device)
        with torch.no_grad():
            self.gp.covar_module.base_kernel.lengthscale = median_distance(self.features(xf[:512].view(
                -1, *self.in_shape)))
        self.gp.train()
        self.likelihood.train()
        self.features[0].eval()
        opt = torch.optim.Adam([{"params": self.features.parameters(), "lr": lr * 0.1},
                                {"params": [p for n, p in self.gp.named_parameters() if not n.startswith("features")]},
                                ], lr=0.05)
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(self.likelihood, self.gp)
        for _ in range(epochs * 5):  # full batch: a few steps per "epoch"
            opt.zero_grad()
            loss = -mll(self.gp(xf), yf)
            loss.backward()
            opt.step()
        self.gp.eval()
        self.likelihood.eval()
        self.noise_var = float(self.likelihood.noise.detach())

    def _fit_svgp(self, x, y, classes, epochs, lr, batch_size, inducing, gen) -> None:
        with torch.no_grad():
            pick = torch.randperm(len(x), generator=gen)[:inducing]
            z0 = self.features(x[pick].to(self.device))
        self.gp = _SVGP(z0, classes).to(self.device)
        self.gp.covar_module.base_kernel.lengthscale = median_distance(z0)
        self.likelihood = gpytorch.likelihoods.SoftmaxLikelihood(num_features=classes, num_classes=classes,
                                                                 mixing_weights=False).to(self.device)
        elbo = gpytorch.mlls.VariationalELBO(self.likelihood, self.gp, num_data=len(x))
        opt = torch.optim.Adam([{"params": self.features.parameters(), "lr": lr * 0.1},
                                {"params": list(self.gp.parameters()) + list(self.likelihood.parameters())}],
                               lr=0.01)
        self.gp.train()
        self.likelihood.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=gen).split(batch_size):
                opt.zero_grad()
                loss = -elbo(self.gp(self.features(x[idx].to(self.device))), y[idx].to(self.device))
                loss.backward()
                opt.step()
        self.gp.eval()
        self.likelihood.eval()

    @torch.no_grad()
    def __call__(self, x):
        if self.regression:
            with gpytorch.settings.fast_pred_var():
                post = self.gp(x.flatten(1).to(self.device))
            return post.mean.float(), post.variance.float()
        with gpytorch.settings.num_likelihood_samples(32):
            out = self.likelihood(self.gp(self.features(x.to(self.device))))
        return out.probs.mean(0).float()
