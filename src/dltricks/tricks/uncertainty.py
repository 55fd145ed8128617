"""Uncertainty and calibration tricks: each changes the predictive distribution a run is scored on
(:mod:`dltricks.methods.uncertainty`), so ``dltricks ablate --metric test_ece`` (or ``test_nll``,
``test_ood_auroc``, ``test_coverage_90``) can ask whether it helps."""

from dltricks.tricks.catalogue import trick

trick("mc_dropout", "uncertainty",
      """Keep dropout on at test time and average 20 stochastic passes: an approximate Bayesian
      predictive that is often better calibrated and more unsure off the data. Needs model.dropout > 0.""",
      {"eval.mc_samples": 20}, {"eval.mc_samples": 0},
      "Gal & Ghahramani 2016, Dropout as a Bayesian Approximation (arXiv:1506.02142)")

trick("ensemble", "uncertainty",
      """Train 5 networks from different random initialisations and average their predictions: a simple,
      strong baseline for accuracy, NLL, calibration and out-of-distribution detection (5x the cost).""",
      {"eval.ensemble": 5}, {"eval.ensemble": 1},
      "Lakshminarayanan, Pritzel & Blundell 2017, Simple and Scalable Predictive Uncertainty Estimation "
      "using Deep Ensembles (arXiv:1612.01474)")

trick("temperature_scaling", "uncertainty",
      """Divide the logits by one temperature fitted on the validation split: modern networks are
      overconfident, and this single parameter removes most of the calibration error without changing
      any prediction (accuracy stays the same). Needs a validation split.""",
      {"eval.temperature_scaling": True}, {"eval.temperature_scaling": False},
      "Guo, Pleiss, Sun & Weinberger 2017, On Calibration of Modern Neural Networks (arXiv:1706.04599)")

trick("laplace_last_layer", "uncertainty",
      """A Gaussian posterior over the last layer's weights (Kronecker-factored Hessian, prior precision
      chosen on validation) with a probit predictive: Bayesian uncertainty for an already trained
      network, at the cost of one pass over the training data.""",
      {"eval.laplace": "kron"}, {"eval.laplace": "off"},
      "Daxberger et al. 2021, Laplace Redux: Effortless Bayesian Deep Learning (arXiv:2106.14806); "
      "Ritter, Botev & Barber 2018 (K-FAC Laplace)")

trick("gp_head", "uncertainty",
      """Use Gaussian processes for uncertainty estimation: replace the network's head by a GP on its
      learnt features (deep kernel learning; exact GP for regression, variational GP with a softmax
      likelihood for classification), so predictions grow unsure away from the training data.""",
      {"eval.gp_head": True}, {"eval.gp_head": False},
      "Wilson, Hu, Salakhutdinov & Xing 2016, Deep Kernel Learning (arXiv:1511.02222) and Stochastic "
      "Variational Deep Kernel Learning (arXiv:1611.00336); GPyTorch (Gardner et al. 2018)")
