"""Search and compression claims: a model-based sampler against random search at the same budget, evolution
against random architecture search, and what quantization and pruning cost in size, latency and accuracy."""

from __future__ import annotations

from dltricks.search.evidence.architecture import CNN_TASK, MNIST1D, MNIST1D_QUICK
from dltricks.search.evidence.claim import Anchor, Claim

# One trial of a search: a short MNIST-1D run. The budget is the same for both strategies.
TRIAL = {"data.num_samples": 1500, "train.epochs": 3}
TRIAL_QUICK = {"data.num_samples": 300, "train.epochs": 1}
COMPRESS_QUICK = {**MNIST1D_QUICK, "compress.finetune_epochs": 0}

CLAIMS = [
    Claim("tpe_vs_random", "search", "A model-based sampler (TPE) finds better settings than random search "
          "with the same number of trials.", "mnist1d-cnn", (), "best_val_accuracy", kind="search",
          task="MNIST-1D (1500 signals), 1D CNN, 3 epochs a trial; lr, weight decay, schedule, smoothing",
          overrides=TRIAL, quick=TRIAL_QUICK, baseline="random search", tunable=False, max_seeds=6,
          search={"kind": "tune", "baseline": "random", "variant": "tpe", "trials": 12, "quick_trials": 3},
          anchor=Anchor("Bergstra et al. 2011, Algorithms for Hyper-Parameter Optimization (NIPS); Turner et al. "
                        "2021, Bayesian Optimization is Superior to Random Search (arXiv:2104.10201)",
                        "at equal budgets, TPE and Bayesian optimisation beat random search", "helps")),
    Claim("evolution_vs_random_nas", "search", "Regularised evolution finds better architectures than random "
          "search with the same number of trials.", "mnist1d-cnn", (), "best_val_accuracy", kind="search",
          task="MNIST-1D (1500 signals), 1D CNN space (depth, widths, kernel, norm, residual, SE, ...), 3 epochs",
          overrides=TRIAL, quick=TRIAL_QUICK, baseline="random search", tunable=False, max_seeds=6,
          search={"kind": "nas", "baseline": "random", "variant": "evolution", "trials": 12, "quick_trials": 3},
          anchor=Anchor("Real et al. 2019, Regularized Evolution (arXiv:1802.01548), Fig. 3; Li & Talwalkar 2019",
                        "evolution reached better CIFAR-10 architectures than random search at equal compute; "
                        "random search stays a strong baseline", "helps")),
    # PyTorch's dynamic quantization converts Linear layers only: an MLP is where it acts
    Claim("quantize_dynamic", "compression", "", "mnist1d-mlp", ("quantize_dynamic",), "test_accuracy",
          task="MNIST-1D (3000 signals), MLP 512-512, 20 epochs", overrides={"data.num_samples": 3000,
                                                                             "train.epochs": 20},
          quick=COMPRESS_QUICK, baseline="float32", tunable=False,
          anchor=Anchor("Jacob et al. 2018, Quantization and Training of Neural Networks (arXiv:1712.05877)",
                        "int8 weights cost ImageNet classifiers about a point of accuracy or less", "equivalent"),
          also=(("size_bytes", Anchor("Jacob et al. 2018", "int8 weights: 4x smaller than float32", "lower")),
                ("latency_b1_ms", Anchor("Jacob et al. 2018", "integer arithmetic ran faster on mobile CPUs",
                                         "helps")))),
    Claim("prune_magnitude", "compression", "", "mnist1d-cnn", ("prune_magnitude",), "test_accuracy",
          task=CNN_TASK + ", half the weights pruned by magnitude", overrides=MNIST1D, quick=COMPRESS_QUICK,
          baseline="dense", tunable=False,
          anchor=Anchor("Han et al. 2015, Learning both Weights and Connections (arXiv:1506.02626)",
                        "9x-13x fewer weights in AlexNet and VGG-16 with no accuracy lost (after retraining)",
                        "equivalent"),
          also=(("size_bytes", Anchor("Han et al. 2015", "the pruned weights need not be stored", "lower")),
                ("latency_b1_ms", Anchor("Han et al. 2015", "sparse layers ran 3x-4x faster with sparse kernels; "
                                         "dense kernels gain nothing from zeros", "equivalent")))),
]
