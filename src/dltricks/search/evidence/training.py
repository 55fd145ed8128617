"""Normalisation and optimisation claims: batch, group and weight-standardised norms, clipping, schedules,
optimisers, label smoothing, dropout and L2 on small data, augmentation, weight averaging."""

from __future__ import annotations

from dltricks.search.evidence.architecture import CNN_TASK, MNIST1D, MNIST1D_QUICK
from dltricks.search.evidence.claim import Anchor, Claim, Setting, arm

WU_HE = "Wu & He 2018, Group Normalization (arXiv:1803.08494), Fig. 1"
# Small data: 500 training signals, where regularisers are meant to matter.
SMALL_MLP = {"data.train_limit": 500, "train.epochs": 40, "model.dropout": 0.0, "train.weight_decay": 0.0}
SMALL_MLP_QUICK = {"data.num_samples": 400, "train.epochs": 1}
SMALL_TASK = "MNIST-1D, 500 training signals, MLP 512-512, 40 epochs"
GRU = {"data.num_samples": 2000, "train.epochs": 6, "model.hidden": 64}
GRU_QUICK = {"data.num_samples": 300, "train.epochs": 1, "model.hidden": 16}

CLAIMS = [
    Claim("batch_norm", "normalisation", "", "mnist1d-cnn", ("batch_norm",), "test_accuracy",
          task="MNIST-1D (3000 signals), 1D CNN, 3 epochs: a short budget, where speed shows",
          overrides={**MNIST1D, "train.epochs": 3}, quick=MNIST1D_QUICK, baseline="no norm",
          anchor=Anchor("Ioffe & Szegedy 2015, Batch Normalization (arXiv:1502.03167), sec. 4.2",
                        "Inception reached its accuracy in 14 times fewer training steps with BN", "helps")),
    Claim("group_norm_small_batch", "normalisation", "", "mnist1d-cnn", ("group_norm",), "test_accuracy",
          task="MNIST-1D (1500 signals), 1D CNN, 3 epochs", overrides={"data.num_samples": 1500, "train.epochs": 3},
          quick={"data.num_samples": 200, "train.epochs": 1}, baseline="batch norm",
          settings=(Setting("batch 2", {"train.batch_size": 2}, "helps"),
                    Setting("batch 4", {"train.batch_size": 4}, "helps"),
                    Setting("batch 16", {"train.batch_size": 16}, "equivalent")),
          anchor=Anchor(WU_HE, "ResNet-50 ImageNet error at batch 2 / 4 / 16 per GPU: BN 34.7 / 27.3 / 23.7%, "
                        "GN 24.1% at every batch", "helps")),
    Claim("weight_standardization", "normalisation", "", "mnist1d-cnn", ("weight_standardization",),
          "test_accuracy", task=CNN_TASK + ", group norm, batch 4",
          overrides={**MNIST1D, "data.num_samples": 1500, "train.epochs": 3, "model.norm": "group",
                     "train.batch_size": 4},
          quick={"data.num_samples": 200, "train.epochs": 1, "model.norm": "group"}, baseline="group norm",
          anchor=Anchor("Qiao et al. 2019, Micro-Batch Training with Batch-Channel Normalization and Weight "
                        "Standardization (arXiv:1903.10520), Table 1", "with group norm at 1 image per GPU, WS "
                        "lowered ResNet-50 ImageNet error", "helps")),
    Claim("grad_clip_high_lr", "optimisation", "Clip the gradient norm when the learning rate is high: one bad "
          "step no longer throws the weights away.", "mnist1d-gru", ("grad_clip",), "test_accuracy",
          task="MNIST-1D (2000 signals), bidirectional GRU 64, 6 epochs, lr 0.05",
          overrides={**GRU, "train.lr": 0.05, "train.grad_clip": 0.0}, quick=GRU_QUICK, baseline="no clipping",
          anchor=Anchor("Pascanu et al. 2013, On the difficulty of training RNNs (arXiv:1211.5063)",
                        "clipping let SGD train RNNs on long-range tasks where it failed without", "helps")),
    Claim("lr_annealing", "optimisation", "Anneal the learning rate: step, cosine or one-cycle against a "
          "constant rate.", "mnist1d-cnn", ("step_decay", "cosine", "one_cycle"), "test_accuracy", task=CNN_TASK,
          overrides={**MNIST1D, "train.schedule": "constant", "train.step_size": 3}, quick=MNIST1D_QUICK,
          baseline="constant lr",  # step: x0.1 after epochs 3 and 6 of 8
          anchor=Anchor("Loshchilov & Hutter 2017, SGDR (arXiv:1608.03983); Smith & Topin 2019, Super-convergence",
                        "annealed rates reached lower CIFAR error than a fixed rate, in fewer epochs", "helps")),
    Claim("sgd_momentum", "optimisation", "", "mnist1d-cnn", ("sgd_momentum",), "test_accuracy",
          task=CNN_TASK + ", SGD lr 0.05", overrides={**MNIST1D, "train.optimizer": "sgd", "train.lr": 0.05},
          quick=MNIST1D_QUICK, baseline="plain SGD",
          anchor=Anchor("Sutskever et al. 2013, On the importance of initialization and momentum (ICML)",
                        "momentum trained deep and recurrent nets that plain SGD could not", "helps")),
    Claim("optimisers", "optimisation", "SGD with momentum, Adam and RMSProp: with their rates tuned, no "
          "optimiser wins everywhere.", "mnist1d-cnn",
          (arm("sgd_momentum", {"train.optimizer": "sgd", "train.momentum": 0.9, "train.nesterov": True,
                                "train.lr": 0.05}, {"train.optimizer": "adam", "train.momentum": 0.9,
                                                    "train.nesterov": False, "train.lr": 3e-3}),
           arm("rmsprop", {"train.optimizer": "rmsprop", "train.lr": 1e-3, "train.momentum": 0.0},
               {"train.optimizer": "adam", "train.lr": 3e-3, "train.momentum": 0.9})),
          "test_accuracy", task=CNN_TASK, overrides=MNIST1D, quick=MNIST1D_QUICK, baseline="Adam",
          anchor=Anchor("Schmidt et al. 2021, Descending through a Crowded Valley (arXiv:2007.01547)",
                        "across 15 optimisers and 8 problems, none tuned one dominated", "equivalent")),
    Claim("label_smoothing", "regularisation", "", "mnist1d-cnn", ("label_smoothing",), "test_accuracy",
          task=CNN_TASK, overrides=MNIST1D, quick=MNIST1D_QUICK, baseline="hard targets",
          anchor=Anchor("Szegedy et al. 2016, Rethinking the Inception Architecture (arXiv:1512.00567), sec. 7",
                        "ImageNet top-1 error about 0.2 points lower", "helps"),
          also=(("test_ece", Anchor("Müller, Kornblith & Hinton 2019, When Does Label Smoothing Help? "
                                    "(arXiv:1906.02629)", "label smoothing lowered the ECE of hard-target nets, "
                                    "much as temperature scaling does", "helps")),)),
    Claim("dropout_small_data", "regularisation", "", "mnist1d-mlp", ("dropout",), "test_accuracy", task=SMALL_TASK,
          overrides=SMALL_MLP, quick=SMALL_MLP_QUICK, baseline="no dropout",
          anchor=Anchor("Srivastava et al. 2014, Dropout (JMLR 15), Table 2", "dropout lowered the MNIST test error "
                        "of every fully connected net", "helps")),
    Claim("l2_small_data", "regularisation", "Weight decay (L2) keeps the weights small and the fit smoother "
          "when the data are few.", "mnist1d-mlp",
          (arm("weight_decay", {"train.weight_decay": 0.05}, {"train.weight_decay": 0.0}),), "test_accuracy",
          task=SMALL_TASK + ", AdamW", overrides=SMALL_MLP, quick=SMALL_MLP_QUICK, baseline="no decay",
          anchor=Anchor("Krogh & Hertz 1991, A Simple Weight Decay Can Improve Generalization (NIPS)",
                        "weight decay lowered the generalisation error of linear and small nonlinear nets", "helps")),
    Claim("augmentation", "augmentation", "Try the augmentation and see: an op that keeps the label helps, one "
          "that changes what the input means hurts.", "mnist1d-cnn",
          ("augment_shift", "augment_scale", "augment_noise", "augment_flip"), "test_accuracy", task=CNN_TASK,
          overrides=MNIST1D, quick=MNIST1D_QUICK, baseline="no augmentation",
          expects={"augment_flip": "hurts"},
          anchor=Anchor("Simard et al. 2003, Best practices for CNNs applied to visual document analysis (ICDAR); "
                        "Cubuk et al. 2019, AutoAugment (arXiv:1805.09501)", "label-preserving distortions lowered "
                        "MNIST error; learnt policies drop ops that change the class (flips for digits)", "helps")),
    Claim("mixup_cutmix", "augmentation", "", "digits-cnn", ("mixup", "cutmix"), "test_accuracy",
          task="8x8 digits (1797 images), 2D CNN 32-64, 10 epochs", overrides={"train.epochs": 10},
          quick={"train.epochs": 1}, baseline="no mixing",
          anchor=Anchor("Zhang et al. 2018, mixup (arXiv:1710.09412); Yun et al. 2019, CutMix (arXiv:1905.04899)",
                        "CutMix: ResNet-50 ImageNet top-1 error 23.68% → 21.40%; mixup lowered CIFAR-10 error",
                        "helps")),
    Claim("weight_averaging", "weight averaging", "", "mnist1d-cnn", ("ema", "swa"), "test_accuracy", task=CNN_TASK,
          overrides=MNIST1D, quick={**MNIST1D_QUICK, "train.epochs": 2}, baseline="last weights",
          anchor=Anchor("Izmailov et al. 2018, SWA (arXiv:1803.05407), Table 1", "SWA raised CIFAR-10 and "
                        "CIFAR-100 test accuracy of every network over SGD's last weights", "helps")),
    Claim("compile", "speed", "", "mnist1d-mlp", ("compile",), "wall_time_s",
          task="MNIST-1D (3000 signals), MLP 512-512, 10 epochs, on this machine's CPU",
          overrides={"data.num_samples": 3000, "train.epochs": 10}, quick=SMALL_MLP_QUICK, baseline="eager",
          tunable=False, max_seeds=6,
          anchor=Anchor("Ansel et al. 2024, PyTorch 2 (ASPLOS)", "torch.compile trained 180+ models 1.41x faster "
                        "(geometric mean) on an A100 GPU", "helps"),
          also=(("test_accuracy", Anchor("Ansel et al. 2024", "compilation changes no arithmetic on purpose",
                                         "equivalent")),)),
    Claim("lr_find", "optimisation", "", "mnist1d-cnn", ("lr_find",), "test_accuracy", task=CNN_TASK,
          overrides=MNIST1D, quick=MNIST1D_QUICK, baseline="the recipe's lr 3e-3", tunable=False,
          anchor=Anchor("Smith 2017, Cyclical Learning Rates (arXiv:1506.01186), sec. 3.3", "the range test "
                        "finds a good rate in one short run, without a grid search", "helps")),
]
