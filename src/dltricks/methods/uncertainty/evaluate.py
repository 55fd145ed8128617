"""The uncertainty and calibration metrics of a run: its predictive distribution, chosen by the
recipe's ``eval`` keys, scored on the test split. Registered as the set-up ``uncertainty``, so
every classification and single-target regression run reports them.

Classification: ``test_accuracy``, ``test_nll``, ``test_brier``, ``test_ece`` (equal-width bins: the
headline, as in Guo et al. 2017) and ``test_ece_adaptive`` (equal-mass bins); with temperature scaling
also ``temperature`` and ``test_ece_unscaled``/``test_nll_unscaled``. Regression (in the target's units):
``test_nll`` (Gaussian), ``test_coverage_{50,90,95}``, ``test_width_{50,90,95}`` and the predictive
mean's ``test_mae``/``test_rmse``. With ``eval.ood``: ``test_ood_auroc``, from the predictive entropy
(classification) or variance (regression). These replace the plain model's values of the same name.

Where a predictive has no noise model of its own (the plain network, MC dropout, an ensemble), the
regression noise variance is the mean squared residual of its mean on (up to 4000) training points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from dltricks.errors import DltricksError
from dltricks.loop import calibration as cal
from dltricks.loop.training import eval_batch_size
from dltricks.methods.registry import Setup, Trained, register_method
from dltricks.methods.uncertainty.predictive import Ensemble, MCDropout, Plain, Predictive

__all__ = ["Uncertainty", "evaluate_uncertainty", "check_recipe", "build_predictive", "predict", "ood_inputs",
           "asked_methods"]

_NOISE_POINTS = 4000


def asked_methods(e: Any) -> list[str]:
    """The recipe keys that ask for a predictive other than the plain network."""
    on = {"eval.mc_samples": e.mc_samples > 0, "eval.ensemble": e.ensemble > 1, "eval.laplace": e.laplace != "off",
          "eval.gp_head": e.gp_head}
    return [k for k, v in on.items() if v]


def _kind(bundle: Any, task: Any) -> str | None:
    from dltricks.loop.targets import Targets

    # embeddings (metric learning) and attribute heads (DAP) give no class scores to calibrate
    scores_classes = getattr(task, "counts_accuracy", True)
    if bundle.task == "classification" and not isinstance(task, Targets) and scores_classes:
        return "classification"
    if isinstance(task, Targets) and len(task.targets) == 1 and task.targets[0].kind == "regression":
        return "regression"
    return None


def predict(pred: Predictive, x: torch.Tensor, device: torch.device, batch_size: int):
    """``pred`` over ``x`` in batches: probabilities (N, K), or (mean, var) (N,) each, on the CPU."""
    outs = [pred(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)]
    if pred.regression:
        return torch.cat([m.cpu() for m, _ in outs]), torch.cat([v.cpu() for _, v in outs])
    return torch.cat([p.cpu() for p in outs])


def ood_inputs(kind: str, bundle: Any, x_test: torch.Tensor, seed: int) -> torch.Tensor:
    """Out-of-distribution inputs: ``noise`` draws each input value from a Gaussian with the training
    inputs' per-position mean and std; ``shuffle`` permutes the positions (time steps, pixels) of each
    test input, which keeps its values but destroys its structure (both shaped like ``x_test``);
    ``target`` takes the test inputs of the recipe's ``[data.target]`` domain, a shift of the data itself
    (MNIST-1D's generator keys, corruptions), which is what a deployed model meets."""
    if kind == "target":
        return bundle.target_test[0]
    x_train = bundle.train[0]
    g = torch.Generator().manual_seed(seed)
    if kind == "noise":
        return x_train.mean(0) + x_train.std(0) * torch.randn(x_test.shape, generator=g)
    flat = x_test.reshape(len(x_test), x_test.shape[1] if x_test.dim() > 2 else 1, -1)
    perm = torch.argsort(torch.rand(len(x_test), flat.shape[-1], generator=g), dim=1)
    return torch.gather(flat, 2, perm[:, None, :].expand_as(flat)).reshape(x_test.shape)


class _Units:
    """Standardised model outputs <-> target units for a regression task (identity when not normalised)."""

    def __init__(self, task: Any) -> None:
        self.m, self.s = float(task.mean[0]), float(task.std[0])

    def to_model(self, y: torch.Tensor) -> torch.Tensor:
        return (y[:, 0].float() - self.m) / self.s


def build_predictive(recipe: Any, bundle: Any, model: nn.Module, task: Any, device: torch.device, *,
                     ledger: Any = None, run_dir: Path | None = None, progress: bool = False,
                     members: list[nn.Module] | None = None) -> Predictive:
    """The predictive the recipe's ``eval`` keys ask for (before temperature scaling)."""
    e = recipe.eval
    regression = _kind(bundle, task) == "regression"
    model.eval().to(device)
    if members:
        return Ensemble([model, *members], regression).to(device)
    if e.mc_samples:
        return MCDropout(model, e.mc_samples, regression, seed=recipe.seed)
    if e.ensemble > 1:
        from dltricks.methods.uncertainty.ensemble import train_members

        extra = train_members(recipe, bundle, task, device, e.ensemble, ledger=ledger, run_dir=run_dir,
                              progress=progress)
        return Ensemble([model, *extra], regression).to(device)
    x, y = bundle.train
    if e.laplace != "off":
        from dltricks.methods.uncertainty.laplace import LastLayerLaplace

        noise = 1.0
        if regression:
            noise = _noise_var(Plain(model, True), bundle, task, device, recipe)
        la = LastLayerLaplace(model, x, e.laplace, regression, device, noise_var=noise)
        if e.laplace_prior_precision > 0:
            la.tau = e.laplace_prior_precision
        elif bundle.val is not None:
            xv, yv = bundle.val
            if regression:
                yz = _Units(task).to_model(yv)
                la.choose_prior(xv, yz, lambda p, t: cal.gaussian_nll(p[0], p[1] + noise, t))
            else:
                la.choose_prior(xv, yv, lambda p, t: cal.nll(p, t))
        return la
    if e.gp_head:
        from dltricks.methods.uncertainty.gp import GPHead

        target = _Units(task).to_model(y) if regression else y
        return GPHead(model, x, target, regression=regression, classes=bundle.num_classes, epochs=e.gp_epochs,
                      lr=recipe.train.lr, batch_size=recipe.train.batch_size, inducing=e.gp_inducing,
                      max_points=e.gp_max_points, seed=recipe.seed, device=device)
    return Plain(model, regression)


def _noise_var(pred: Predictive, bundle: Any, task: Any, device: torch.device, recipe: Any) -> float:
    """Observation noise of a regression predictive in the model's units: its own, or the mean squared
    training residual of its mean."""
    if pred.noise_var is not None:
        return pred.noise_var
    x, y = bundle.train
    x, y = x[:_NOISE_POINTS], y[:_NOISE_POINTS]
    mean, _ = predict(pred, x, device, eval_batch_size(recipe.train.batch_size))
    return max(float((_Units(task).to_model(y) - mean).pow(2).mean()), 1e-8)


def check_recipe(recipe: Any, bundle: Any, model: nn.Module, task: Any, members: list | None = None) -> None:
    """Refuse, with one line, uncertainty keys that cannot work on this data and model."""
    e = recipe.eval
    kind = _kind(bundle, task)
    asked = asked_methods(e) + (["eval.temperature_scaling"] if e.temperature_scaling else [])
    if kind is None:
        if asked:
            raise DltricksError(f"{asked[0]} works on classification or single-target regression data, not on "
                                f"{bundle.task} data")
        return
    if e.ood == "target" and getattr(bundle, "target_test", None) is None:
        raise DltricksError("eval.ood = 'target' scores the [data.target] domain's test inputs as out of "
                            "distribution, but this recipe has no [data.target]; add one (e.g. "
                            "data.target.noise=0.5) or use eval.ood = 'noise' or 'shuffle'")
    if e.ensemble_runs and not members:
        raise DltricksError("eval.ensemble_runs is written by `dltricks ensemble RUN...`; to train an ensemble "
                            "in one run set eval.ensemble = N")
    if len(asked_methods(e)) > 1:
        raise DltricksError(f"{' and '.join(asked_methods(e))} each give a predictive distribution; use one of "
                            "them (temperature scaling combines with any)")
    if e.temperature_scaling and kind == "regression":
        raise DltricksError("eval.temperature_scaling calibrates class probabilities; this is regression data "
                            "(its intervals come from eval.ensemble, eval.mc_samples, eval.laplace or eval.gp_head)")
    if e.temperature_scaling and bundle.val is None:
        raise DltricksError("eval.temperature_scaling fits the temperature on the validation split, but this "
                            "recipe has none; set data.val_fraction > 0 (e.g. 0.1)")
    if e.mc_samples:
        MCDropout(model, e.mc_samples, kind == "regression")  # refuses a model without dropout
    if e.laplace != "off" or e.gp_head:
        from dltricks.methods.uncertainty.features import linear_head

        linear_head(model, "eval.laplace" if e.laplace != "off" else "eval.gp_head")


def evaluate_uncertainty(recipe: Any, bundle: Any, model: nn.Module, task: Any, device: torch.device, *,
                         run_dir: Path | None = None, ledger: Any = None, progress: bool = False,
                         members: list[nn.Module] | None = None) -> dict[str, float]:
    """``test_*`` uncertainty metrics (and ``temperature``) of the recipe's predictive; writes the plots
    into ``run_dir`` when ``eval.plots``. ``members``: further trained models to average with ``model``."""
    check_recipe(recipe, bundle, model, task, members)
    kind = _kind(bundle, task)
    if kind is None:
        return {}
    regression = kind == "regression"
    bs = eval_batch_size(recipe.train.batch_size)
    was = model.training
    try:
        pred = build_predictive(recipe, bundle, model, task, device, ledger=ledger, run_dir=run_dir,
                                progress=progress, members=members)
        out = (_regression(pred, recipe, bundle, task, device, bs, run_dir) if regression else
               _classification(pred, recipe, bundle, device, bs, run_dir))
    finally:
        model.train(was)
    return out


def _classification(pred, recipe, bundle, device, bs, run_dir) -> dict[str, float]:
    from dltricks.methods.uncertainty.temperature import Tempered, fit_temperature

    e = recipe.eval
    x, y = bundle.test
    out: dict[str, float] = {}
    if e.temperature_scaling:
        before = cal.classification_metrics(predict(pred, x, device, bs), y, e.ece_bins)
        xv, yv = bundle.val
        t = fit_temperature(predict(pred, xv, device, bs), yv)
        pred = Tempered(pred, t)
        out.update(temperature=t, test_ece_unscaled=before["ece"], test_nll_unscaled=before["nll"])
    p = predict(pred, x, device, bs)
    m = cal.classification_metrics(p, y, e.ece_bins)
    out.update({f"test_{k}": v for k, v in m.items()})
    if e.ood:
        p_ood = predict(pred, ood_inputs(e.ood, bundle, x, recipe.seed), device, bs)
        out["test_ood_auroc"] = cal.ood_auroc(cal.entropy(p.double()), cal.entropy(p_ood.double()))
    if e.plots and run_dir is not None:
        from dltricks.methods.uncertainty.plots import reliability_diagram

        conf, guess = p.max(1)
        rel = cal.reliability(conf.double(), guess == y, e.ece_bins)
        reliability_diagram(rel, Path(run_dir) / "reliability.png", f"{recipe.name} ({_label(pred)})",
                            m["ece"], m["ece_adaptive"])
    return out


def _label(pred: Predictive) -> str:
    inner = getattr(pred, "inner", None)
    return f"{inner.name} + {pred.name}" if inner is not None else pred.name


def _regression(pred, recipe, bundle, task, device, bs, run_dir) -> dict[str, float]:
    e = recipe.eval
    units = _Units(task)
    noise = _noise_var(pred, bundle, task, device, recipe)
    x, y = bundle.test

    def gaussian(inputs):
        mean, var = predict(pred, inputs, device, bs)
        return mean.double() * units.s + units.m, (var.double() + noise) * units.s ** 2

    mean, var = gaussian(x)
    target = y[:, 0].double()
    m = cal.interval_metrics(mean, var, target)
    out = {f"test_{k}": v for k, v in m.items()}
    err = mean - target
    out.update(test_mae=err.abs().mean().item(), test_rmse=err.pow(2).mean().sqrt().item(),
               noise_std=noise ** 0.5 * units.s)
    if e.ood:
        _, var_ood = gaussian(ood_inputs(e.ood, bundle, x, recipe.seed))
        out["test_ood_auroc"] = cal.ood_auroc(var.float(), var_ood.float())
    if e.plots and run_dir is not None and x[0].numel() == 1:
        from dltricks.methods.uncertainty.plots import interval_plot

        xs = torch.cat([bundle.train[0], x]).flatten()
        lo, hi = float(xs.min()), float(xs.max())
        grid = torch.linspace(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), 300).view(-1, *x.shape[1:])
        gm, gv = gaussian(grid)
        interval_plot(grid.flatten(), gm, gv.sqrt(), (bundle.train[0].flatten(), bundle.train[1][:, 0]),
                      (x.flatten(), target), Path(run_dir) / "intervals.png",
                      f"{recipe.name} ({_label(pred)}): 90% coverage {m['coverage_90']:.2f}")
    return out


def metric_names(recipe: Any, bundle: Any, task: Any) -> list[str]:
    """The names :func:`evaluate_uncertainty` records for this recipe."""
    kind, e = _kind(bundle, task), recipe.eval
    if kind is None:
        return []
    if kind == "classification":
        names = [f"test_{k}" for k in ("accuracy", "nll", "brier", "ece", "ece_adaptive")]
        if e.temperature_scaling:
            names += ["temperature", "test_ece_unscaled", "test_nll_unscaled"]
    else:
        names = ["test_nll", *(f"test_{w}_{round(level * 100)}" for level in cal.LEVELS for w in ("coverage", "width")),
                 "test_mae", "test_rmse", "noise_std"]
    return names + (["test_ood_auroc"] if e.ood else [])




@register_method("uncertainty")
class Uncertainty(Setup):
    """The recipe's predictive distribution (``eval.*`` keys) scored on the test split; its values replace
    the plain model's of the same name (``test_ece`` is that of the temperature-scaled model, say)."""

    order = 90
    on_test_split = True

    @classmethod
    def selects(cls, recipe, bundle) -> bool:
        return True

    def check_model(self, model: nn.Module, task: Any) -> None:
        check_recipe(self.recipe, self.bundle, model, task)

    def metric_names(self, model: nn.Module, task: Any) -> list[str]:
        return metric_names(self.recipe, self.bundle, task)

    def metrics(self, run: Trained) -> dict[str, float]:
        return evaluate_uncertainty(self.recipe, self.bundle, run.model, run.task, run.device, run_dir=run.run_dir,
                                    ledger=run.ledger, progress=run.progress)
