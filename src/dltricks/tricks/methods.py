"""Learning set-up tricks (transfer, distillation, multi-task): each acts through :mod:`dltricks.methods`.

``fine_tune`` and ``distill`` name the run to learn from as ``recipe:NAME``: a bundled recipe that is
trained once and reused from the ledger, so every seed of a study starts from the same pretrained model
or teacher. On another task, name your own: ``--trick fine_tune_mine:model.init_from=RUN_ID``.
"""

from dltricks.tricks.catalogue import trick

_MNIST1D = ("data.name=mnist1d",)  # the bundled pretrained model and teacher take MNIST-1D signals

trick("fine_tune", "transfer",
      """Start from the weights of a model trained on a related task instead of random ones, and train
      on: with few labels, pretrained features are often worth far more than the labels themselves. The
      head is re-initialised when the classes differ. Here: a CNN pretrained on MNIST-1D classes 0-4.""",
      {"model.init_from": "recipe:mnist1d-pretrain-0to4"}, {"model.init_from": ""},
      "Yosinski et al. 2014, How transferable are features in deep neural networks? (arXiv:1411.1792)",
      applies_to=_MNIST1D)

trick("freeze_backbone", "transfer",
      """Train only the new head on top of frozen pretrained features (a linear probe); frozen norm layers
      keep their statistics. Safest with very few labels, since nothing pretrained can be overwritten.""",
      {"train.freeze": ["backbone"]}, {"train.freeze": []},
      "Donahue et al. 2014, DeCAF (arXiv:1310.1531); Kornblith et al. 2019, Do Better ImageNet Models "
      "Transfer Better? (arXiv:1805.08974)")

trick("discriminative_lr", "transfer",
      """Lower learning rates for lower layers when fine-tuning (here halved per layer from the head
      down): general low-level features need less change than the task-specific top.""",
      {"train.layer_lr_decay": 0.5}, {"train.layer_lr_decay": 1.0},
      "Howard & Ruder 2018, Universal Language Model Fine-tuning (ULMFiT, arXiv:1801.06146)")

trick("gradual_unfreeze", "transfer",
      """Fine-tune from the top down: train the new head first, then unfreeze one more layer each epoch,
      so that the random head's early gradients do not wreck the pretrained features below.""",
      {"train.unfreeze_every": 1}, {"train.unfreeze_every": 0},
      "Howard & Ruder 2018, Universal Language Model Fine-tuning (ULMFiT, arXiv:1801.06146)")

trick("distill", "distillation",
      """Train a compact student to match a larger teacher's softened outputs (temperature 4, weight 0.9)
      as well as the labels: the teacher's 'dark knowledge' about which wrong classes are similar is a
      richer target than one-hot labels. Here the teacher is a wide MNIST-1D CNN.""",
      {"train.teacher": "recipe:mnist1d-teacher"}, {"train.teacher": ""},
      "Hinton, Vinyals & Dean 2015, Distilling the Knowledge in a Neural Network (arXiv:1503.02531)",
      applies_to=_MNIST1D)

trick("distill_features", "distillation",
      """Add a hint loss: a learned projection of the student's features must match the teacher's
      (here the features entering each head). Needs train.teacher.""",
      {"train.hint_weight": 1.0}, {"train.hint_weight": 0.0},
      "Romero et al. 2015, FitNets: Hints for Thin Deep Nets (arXiv:1412.6550)")

trick("target_normalization", "multitask",
      """Standardise each regression target (zero mean, unit variance from the training set) inside the
      loss; metrics stay in the original units. Without it a target on a scale of thousands dominates
      the summed loss and the other tasks are barely learnt.""",
      {"train.normalize_targets": True}, {"train.normalize_targets": False},
      "LeCun et al. 1998, Efficient BackProp; Kendall et al. 2018 (arXiv:1705.07115)")

trick("uncertainty_weighting", "multitask",
      """Learn each task's loss weight as exp(-s) with a log-variance s per task (plus a penalty s), so
      noisy or large-scale tasks are down-weighted automatically instead of by hand-tuned weights.""",
      {"train.task_weighting": "uncertainty"}, {"train.task_weighting": "fixed"},
      "Kendall, Gal & Cipolla 2018, Multi-Task Learning Using Uncertainty to Weigh Losses (arXiv:1705.07115)")

trick("pcgrad", "multitask",
      """Project away the part of each task's gradient that points against another task's (PCGrad), so
      conflicting tasks stop undoing each other's progress on the shared layers.""",
      {"train.pcgrad": True}, {"train.pcgrad": False},
      "Yu et al. 2020, Gradient Surgery for Multi-Task Learning (arXiv:2001.06782)")

# ---- metric learning and few-shot (evaluated by N-way K-shot episodes on data.novel_classes) ----------
_METRIC_OFF = {"model.embedding_dim": 0, "train.metric_loss": "none", "train.pk_samples": 0}

trick("siamese", "fewshot",
      """Learn an embedding in which two samples of one class are close and two of different classes are
      at least a margin apart (contrastive loss on every pair of a P x K batch): new classes can then be
      recognised from one example each, by distance, without retraining.""",
      {"model.embedding_dim": 64, "train.metric_loss": "contrastive", "train.pk_samples": 4}, _METRIC_OFF,
      "Hadsell, Chopra & LeCun 2006, Dimensionality Reduction by Learning an Invariant Mapping; Koch et al. "
      "2015, Siamese Neural Networks for One-shot Image Recognition")

trick("triplet", "fewshot",
      """Triplet loss with batch-hard mining: for every anchor, its farthest same-class sample must be
      closer than its nearest other-class sample by a margin; P x K batches guarantee both exist.""",
      {"model.embedding_dim": 64, "train.metric_loss": "triplet", "train.pk_samples": 4}, _METRIC_OFF,
      "Schroff et al. 2015, FaceNet (arXiv:1503.03832); Hermans, Beyer & Leibe 2017, In Defense of the "
      "Triplet Loss for Person Re-Identification (arXiv:1703.07737)")

trick("protonet", "fewshot",
      """Prototypical networks: train on episodes the way the model is tested. Each P x K batch is a P-way
      task; the mean embedding of half of each class's samples is its prototype, and the other half are
      classified by distance to the prototypes.""",
      {"model.embedding_dim": 64, "train.metric_loss": "protonet", "train.pk_samples": 4}, _METRIC_OFF,
      "Snell, Swersky & Zemel 2017, Prototypical Networks for Few-shot Learning (arXiv:1703.05175)")

# ---- meta-learning (a task family: data.name = "sinusoid", or few-shot episodes of data.novel_classes) ----
_META_OFF = {"train.meta": "none", "train.inner_steps": 1}
_TASKS = ("data.name=sinusoid", "data.novel_classes")

trick("maml", "meta",
      """Learn an initialisation from which one or a few gradient steps on K examples of a new task already
      fit it (MAML, second order: the meta-gradient flows through the inner step). Beats pretraining on
      all tasks, whose average of many tasks adapts poorly to any one of them.""",
      {"train.meta": "maml", "train.inner_steps": 1}, _META_OFF,
      "Finn, Abbeel & Levine 2017, Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks "
      "(arXiv:1703.03400)", applies_to=_TASKS)

trick("fomaml", "meta",
      """First-order MAML: the same meta-objective with the inner gradient treated as a constant, so no
      second derivatives; the MAML paper found it nearly as good and much cheaper.""",
      {"train.meta": "fomaml", "train.inner_steps": 1}, _META_OFF,
      "Finn, Abbeel & Levine 2017 (arXiv:1703.03400), section 5.2", applies_to=_TASKS)

trick("reptile", "meta",
      """Reptile: train a few steps on a sampled task, then move the initial weights toward the adapted
      ones. First order, no support/query split, and as simple as plain training.""",
      {"train.meta": "reptile", "train.inner_steps": 5}, _META_OFF,
      "Nichol, Achiam & Schulman 2018, On First-Order Meta-Learning Algorithms (arXiv:1803.02999)",
      applies_to=_TASKS)

# ---- zero-shot (classes described by attributes: data.attributes, or data.name = "zsl1d") ---------------
trick("zero_shot_attributes", "zeroshot",
      """Recognise classes never seen in training from a description: train the model to predict the
      attributes of its input (DAP) instead of its class, then pick the unseen class whose attribute
      vector is most likely. The baseline maps a classifier's features to attributes in closed form
      (ESZSL); both are scored on unseen classes and on seen and unseen together (harmonic mean).""",
      {"train.zero_shot": "dap"}, {"train.zero_shot": "eszsl"},
      "Lampert, Nickisch & Harmeling 2014, Attribute-Based Classification for Zero-Shot Visual Object "
      "Categorization; Romera-Paredes & Torr 2015, ESZSL; Xian et al. 2018, Zero-Shot Learning - A "
      "Comprehensive Evaluation of the Good, the Bad and the Ugly (arXiv:1707.00600)")
