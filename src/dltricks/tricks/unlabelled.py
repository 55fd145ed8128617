"""Semi-supervised and domain adaptation tricks: each acts through :mod:`dltricks.methods.ssl` or
:mod:`dltricks.methods.domain`. The semi-supervised ones need ``data.labels_per_class`` (the unlabelled
remainder); the domain ones need a ``[data.target]`` section and are compared on ``test_target_accuracy``.
"""

from dltricks.tricks.catalogue import trick

trick("pseudo_label", "semi-supervised",
      """Use the model's own confident predictions on unlabelled data as labels (confidence >= 0.95), with
      their weight ramped up so that early, poor guesses count little.""",
      {"train.semi_supervised": "pseudo_label"}, {"train.semi_supervised": "none"},
      "Lee 2013, Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep Neural "
      "Networks (ICML workshop)")

trick("pi_model", "semi-supervised",
      """Consistency regularisation: two randomly augmented views of each unlabelled input should get the
      same class probabilities.""",
      {"train.semi_supervised": "pi_model"}, {"train.semi_supervised": "none"},
      "Laine & Aila 2017, Temporal Ensembling for Semi-Supervised Learning (arXiv:1610.02242)")

trick("mean_teacher", "semi-supervised",
      """Consistency with a teacher whose weights are an exponential moving average of the student's: a
      steadier target than the student itself; its weight ramps up over training.""",
      {"train.semi_supervised": "mean_teacher"}, {"train.semi_supervised": "none"},
      "Tarvainen & Valpola 2017, Mean teachers are better role models (arXiv:1703.01780)")

trick("fixmatch", "semi-supervised",
      """A confident prediction on a weakly augmented unlabelled input becomes the label of a strongly
      augmented view of it; mu unlabelled samples per labelled one.""",
      {"train.semi_supervised": "fixmatch"}, {"train.semi_supervised": "none"},
      "Sohn et al. 2020, FixMatch: Simplifying Semi-Supervised Learning with Consistency and Confidence "
      "(arXiv:2001.07685)")

trick("dann", "domain adaptation",
      """Make the features useless for telling source from target: a domain discriminator on them, trained
      through a gradient reversal layer whose strength grows as 2/(1+exp(-10p)) - 1.""",
      {"train.domain_adaptation": "dann"}, {"train.domain_adaptation": "none"},
      "Ganin et al. 2016, Domain-Adversarial Training of Neural Networks (arXiv:1505.07818)")

trick("self_training", "domain adaptation",
      """Label the unlabelled target data with the model's own confident predictions and train on them too,
      so the decision boundary moves to where the target data are.""",
      {"train.domain_adaptation": "self_training"}, {"train.domain_adaptation": "none"},
      "Zou et al. 2018, Unsupervised Domain Adaptation via Class-Balanced Self-Training (arXiv:1810.07911)")

trick("coral", "domain adaptation",
      """Align the second-order statistics of source and target features (their covariance matrices): a
      cheap, parameter-free statistic-matching loss.""",
      {"train.domain_adaptation": "coral"}, {"train.domain_adaptation": "none"},
      "Sun & Saenko 2016, Deep CORAL: Correlation Alignment for Deep Domain Adaptation (arXiv:1607.01719)")
