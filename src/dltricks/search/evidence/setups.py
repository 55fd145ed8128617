"""Learning set-up claims: transfer, distillation, multi-task targets, semi-supervised learning, domain
adaptation, one-shot, zero-shot, meta-learning, and uncertainty (calibration, ensembles, MC dropout, GP head)."""

from __future__ import annotations

from dltricks.search.evidence.claim import Anchor, Claim, arm

QUICK = {"train.epochs": 1}
OOD = {"data.num_samples": 3000, "train.epochs": 15}
OOD_QUICK = {"data.num_samples": 400, "train.epochs": 1, "eval.gp_epochs": 2}

CLAIMS = [
    Claim("transfer_few_labels", "learning set-ups", "", "mnist1d-finetune", ("fine_tune",), "test_accuracy",
          task="MNIST-1D classes 5-9, 10 labels each; pretrained on classes 0-4", overrides={"train.epochs": 15},
          quick=QUICK, baseline="from scratch", tunable=False,
          anchor=Anchor("Yosinski et al. 2014, How transferable are features? (arXiv:1411.1792)", "transferred "
                        "features, fine-tuned, generalised better than training from scratch", "helps")),
    Claim("distillation", "learning set-ups", "", "mnist1d-distill", ("distill",), "test_accuracy",
          task="MNIST-1D, 1000 training signals; an 8-16 CNN student of a wide CNN teacher",
          overrides={"train.epochs": 10}, quick=QUICK, baseline="student alone", tunable=False,
          anchor=Anchor("Hinton, Vinyals & Dean 2015, Distilling the Knowledge in a Neural Network "
                        "(arXiv:1503.02531), sec. 3", "MNIST: a small net's 146 test errors fell to 74 when "
                        "distilled", "helps")),
    Claim("multitask_targets", "learning set-ups", "", "mnist1d-multitask", ("target_normalization",),
          "test_digit_accuracy", task="MNIST-1D digit + peak + energy heads (3000 signals), CNN, 6 epochs",
          overrides={"train.epochs": 6}, quick=QUICK, baseline="raw targets",
          anchor=Anchor("LeCun et al. 1998, Efficient BackProp; Kendall, Gal & Cipolla 2018 (arXiv:1705.07115)",
                        "losses on one scale let every task learn; raw scales let one loss swamp the others",
                        "helps")),
    Claim("semi_supervised", "learning set-ups", "", "mnist1d-ssl", ("pseudo_label", "mean_teacher", "fixmatch"),
          "test_accuracy", task="MNIST-1D, 100 labels + 3500 unlabelled signals, CNN 16-32-64, 30 epochs",
          overrides={"train.epochs": 30}, quick=QUICK, baseline="supervised on the 100 labels",
          anchor=Anchor("Oliver et al. 2018, Realistic Evaluation of Deep Semi-Supervised Learning "
                        "(arXiv:1804.09170), Table 1; Sohn et al. 2020, FixMatch", "CIFAR-10, 4000 labels: "
                        "each method beat a tuned supervised baseline (20.3% error), by less than first reported",
                        "helps")),
    Claim("domain_adaptation", "learning set-ups", "", "mnist1d-da",
          ("dann", "self_training", "coral",
           arm("coral_x100", {"train.domain_adaptation": "coral", "train.domain_weight": 100.0},
               {"train.domain_adaptation": "none", "train.domain_weight": 1.0})),
          "test_target_accuracy", task="MNIST-1D, shifted target domain (stronger shear, noise, scale), CNN, "
                                       "8 epochs", overrides={"train.epochs": 8, "data.num_samples": 2000},
          quick={**QUICK, "data.num_samples": 400}, baseline="source only",
          anchor=Anchor("Ganin et al. 2016, Domain-Adversarial Training (arXiv:1505.07818), Table 2; "
                        "Gulrajani & Lopez-Paz 2021, DomainBed", "MNIST → MNIST-M: source only 52.25%, DANN "
                        "76.66%; DomainBed: no method beat tuned ERM by a point", "helps")),
    Claim("one_shot", "learning set-ups", "", "mnist1d-oneshot", ("protonet", "siamese", "triplet"),
          "test_5way_1shot_accuracy",
          task="MNIST-1D, 5 novel classes, 5-way 1-shot episodes; CNN pretrained on the other 5",
          overrides={"train.epochs": 5, "eval.episodes": 300}, quick={**QUICK, "eval.episodes": 20},
          baseline="pretrain + nearest centroid", tunable=False,
          anchor=Anchor("Chen et al. 2019, A Closer Look at Few-shot Classification (arXiv:1904.04232), Table 3",
                        "a pretrained classifier's features with a nearest-centroid head matched ProtoNet "
                        "with deeper backbones", "equivalent")),
    Claim("zero_shot", "learning set-ups", "DAP predicts each attribute and multiplies their probabilities; "
          "ESZSL maps features to attributes in one closed-form step and is the stronger baseline.",
          "zsl1d-zeroshot", ("zero_shot_attributes",), "test_zsl_accuracy",
          task="1D signals of 20 classes described by attributes; 5 unseen in training",
          overrides={"train.epochs": 10}, quick=QUICK, baseline="ESZSL", tunable=False,
          anchor=Anchor("Romera-Paredes & Torr 2015, An embarrassingly simple approach to zero-shot learning "
                        "(ICML), Table 2", "Animals with Attributes: ESZSL 49.3% against DAP's 40.5%", "hurts"),
          also=(("test_gzsl_h", Anchor("Xian et al. 2018, Zero-Shot Learning: the Good, the Bad and the Ugly "
                                       "(arXiv:1707.00600), Table 4", "generalised ZSL on AwA1: DAP's harmonic "
                                       "mean 0.0 (it never names an unseen class), ESZSL's above it", "hurts")),)),
    Claim("maml_vs_pretraining", "learning set-ups", "", "sinusoid-maml", ("maml", "fomaml", "reptile"),
          "test_post_update_mse_1step",
          task="sinusoid regression, 10 points per task, MLP 40-40", overrides={"train.epochs": 5,
                                                                                "data.train_tasks": 300},
          quick={**QUICK, "data.train_tasks": 50, "train.meta_steps": 5}, baseline="pretrained on all tasks",
          tunable=False,
          anchor=Anchor("Finn, Abbeel & Levine 2017, MAML (arXiv:1703.03400), Fig. 2", "after one gradient step "
                        "MAML fits a new sinusoid; the pretrained regressor barely moves", "helps")),
    Claim("maml_mnist1d", "learning set-ups", "Meta-learning (MAML, first-order MAML, Reptile) against a "
          "classifier pretrained on the base classes with a nearest-centroid head, on few-shot episodes.",
          "mnist1d-meta", ("maml", "fomaml", "reptile"), "test_5way_1shot_accuracy",
          task="MNIST-1D, 5 base classes to meta-train, 5-way 1-shot episodes of 5 novel ones; MLP 128-128",
          overrides={"train.epochs": 3, "eval.episodes": 300}, quick={**QUICK, "train.meta_steps": 5,
                                                                      "eval.episodes": 20},
          baseline="pretrain + nearest centroid", tunable=False, max_seeds=6,
          anchor=Anchor("Tian et al. 2020, Rethinking Few-Shot Image Classification (arXiv:2003.11539)",
                        "a good pretrained embedding beat meta-learners, MAML among them, on miniImageNet",
                        "hurts")),
    Claim("temperature_scaling", "uncertainty", "", "mnist1d-calibration", ("temperature_scaling", "label_smoothing"),
          "test_ece",
          task="MNIST-1D, MLP 100-100, 15 epochs", overrides={"train.epochs": 15}, quick=QUICK,
          baseline="raw softmax", tunable=False,
          anchor=Anchor("Guo et al. 2017, On Calibration of Modern Neural Networks (arXiv:1706.04599), Table 1",
                        "ResNet-110 on CIFAR-100: ECE 16.53% → 0.96%, accuracy unchanged", "helps")),
    Claim("ensemble_nll", "uncertainty", "", "mnist1d-ensemble", ("ensemble",), "test_nll",
          task="MNIST-1D (3000 signals), MLP 100-100, 15 epochs; 5 members",
          overrides={"train.epochs": 15, "data.num_samples": 3000}, quick=QUICK, baseline="one network",
          tunable=False,
          anchor=Anchor("Lakshminarayanan, Pritzel & Blundell 2017, Deep Ensembles (arXiv:1612.01474)",
                        "ensembles of 5 lowered NLL on every benchmark", "helps")),
    Claim("ood_detection", "uncertainty", "", "mnist1d-ood", ("mc_dropout", "ensemble", "gp_head"), "test_ood_auroc",
          task="MNIST-1D (3000 signals) against noise inputs, MLP 100-100 with dropout 0.2, 15 epochs",
          overrides=OOD, quick=OOD_QUICK, baseline="softmax confidence", tunable=False,
          anchor=Anchor("Ovadia et al. 2019, Can You Trust Your Model's Uncertainty? (arXiv:1906.02530); "
                        "Liu et al. 2020, SNGP", "ensembles separated OOD inputs best; MC dropout and a GP head "
                        "also beat the plain softmax", "helps")),
]
