"""``[eval]``: the headline metric, calibration and uncertainty, few-shot episodes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from dltricks.recipe.section import Section


class EvalSpec(Section):
    metric: str = Field("test_accuracy", description="the headline metric that sweeps compare")
    ece_bins: int = Field(15, ge=2, description="confidence bins of the expected calibration error")
    # ---- uncertainty and calibration (dltricks.methods.uncertainty) ----
    mc_samples: int = Field(0, ge=0, description="MC dropout: average N stochastic forward passes with "
                                                  "dropout on at test time; 0 = off (needs model.dropout > 0)")
    ensemble: int = Field(1, ge=1, le=50, description="deep ensemble: train N members (the recipe's seed "
                                                      "and N-1 more) and average their predictions; 1 = off")
    ensemble_runs: list[str] = Field(default_factory=list, description="the member runs of an ensemble run "
                                                                       "(written by `dltricks ensemble`)")
    temperature_scaling: bool = Field(False, description="divide logits by one temperature fitted on the "
                                                         "validation split (Guo et al. 2017)")
    laplace: Literal["off", "diag", "kron"] = Field("off", description="last-layer Laplace approximation "
                                                                       "with a probit predictive")
    laplace_prior_precision: float = Field(0.0, ge=0.0, description="0 = chosen by validation NLL")
    gp_head: bool = Field(False, description="replace the head by a Gaussian process on the learnt features "
                                             "(deep kernel learning, GPyTorch)")
    gp_epochs: int = Field(30, ge=1, description="epochs of joint GP + feature training")
    gp_inducing: int = Field(64, ge=4, description="inducing points of the variational GP (classification)")
    gp_max_points: int = Field(3000, ge=10, description="exact GP (regression): at most this many training "
                                                        "points, drawn by seed")
    ood: Literal["", "noise", "shuffle", "target"] = Field(
        "", description="OOD inputs for test_ood_auroc: 'noise' (Gaussian, the training inputs' mean/std), "
                        "'shuffle' (test inputs with positions permuted) or 'target' (the [data.target] "
                        "domain's test inputs: a shift of the data)")
    plots: bool = Field(False, description="write the reliability diagram (and, for 1D inputs, the "
                                           "predictive intervals) as PNGs beside the run")
    # few-shot episodes on data.novel_classes (dltricks.methods.episodes)
    n_way: int = Field(5, ge=2, description="classes per few-shot episode")
    shots: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 5], min_length=1,
                                                     description="K of the N-way K-shot episodes")
    queries: int = Field(15, ge=1, description="query samples per class and episode")
    episodes: int = Field(600, ge=1, description="episodes per N-way K-shot accuracy (fixed by seed)")
    episode_head: Literal["centroid", "linear"] = Field("centroid", description="classify an episode's "
                                                        "queries by nearest centroid or a head fitted to its support")
    adapt_steps: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 10], min_length=1,
                                   description="gradient steps (at "
                                   "train.inner_lr) on each test task's support before its post-update score "
                                   "(a meta-learner's episode accuracy: after train.inner_steps)")

