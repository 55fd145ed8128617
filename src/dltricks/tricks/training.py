"""Optimisation and regularisation tricks: all act in the training loop (recipe keys under ``train``)."""

from dltricks.tricks.catalogue import trick

trick("label_smoothing", "regularisation",
      """Train on targets that keep a little probability (here 0.1) for the wrong classes, so the model
      cannot become arbitrarily confident; often better calibrated and a little more accurate.""",
      {"train.label_smoothing": 0.1}, {"train.label_smoothing": 0.0},
      "Szegedy et al. 2016, Rethinking the Inception Architecture (arXiv:1512.00567); "
      "Muller et al. 2019, When does label smoothing help? (arXiv:1906.02629)")

# --8<-- [start:flooding]
trick("flooding", "regularisation",
      """Stop the training loss from reaching zero: below a small level b the step climbs the gradient
      instead (|loss - b| + b, here b = 0.05), so the weights drift at that level rather than memorising
      the training set; helps most where a model can fit every label.""",
      {"train.flood_level": 0.05}, {"train.flood_level": 0.0},
      "Ishida et al. 2020, Do We Need Zero Training Loss After Achieving Zero Training Error? (arXiv:2002.08709)")
# --8<-- [end:flooding]

trick("grad_clip", "optimisation",
      """Rescale the gradient when its global norm exceeds a threshold (here 1.0): one bad batch can no
      longer throw the weights far away. Essential for RNNs, cheap insurance elsewhere.""",
      {"train.grad_clip": 1.0, "train.grad_clip_mode": "norm"},
      {"train.grad_clip": 0.0, "train.grad_clip_mode": "norm"},
      "Pascanu et al. 2013, On the difficulty of training recurrent neural networks (arXiv:1211.5063)")

trick("one_cycle", "lr_schedule",
      """Warm the learning rate up to its peak, then anneal it far below the start within one cycle;
      trains fast and often generalises better than a constant rate.""",
      {"train.schedule": "one_cycle"}, {"train.schedule": "constant"},
      "Smith & Topin 2019, Super-convergence (arXiv:1708.07120)")

trick("cosine", "lr_schedule",
      """Anneal the learning rate along half a cosine from its start to min_lr over the run: large steps
      early to explore, small steps late to settle.""",
      {"train.schedule": "cosine"}, {"train.schedule": "constant"},
      "Loshchilov & Hutter 2017, SGDR (arXiv:1608.03983)")

trick("step_decay", "lr_schedule",
      """Divide the learning rate by 10 every step_size epochs: the classic schedule of the ResNet era.""",
      {"train.schedule": "step"}, {"train.schedule": "constant"},
      "He et al. 2016, Deep Residual Learning (arXiv:1512.03385)")

trick("warmup", "lr_schedule",
      """Ramp the learning rate up linearly over the first epochs: adaptive optimisers and large batches
      are unstable while their statistics are still empty.""",
      {"train.warmup_epochs": 2}, {"train.warmup_epochs": 0},
      "Goyal et al. 2017, Accurate, Large Minibatch SGD (arXiv:1706.02677)")

trick("weight_decay", "regularisation",
      """Penalise large weights (L2; decoupled for AdamW). Norm and bias parameters are exempt unless
      train.decay_norm_and_bias is set, since shrinking them only fights the normalisation.""",
      {"train.weight_decay": 5e-4}, {"train.weight_decay": 0.0},
      "Krogh & Hertz 1991, A Simple Weight Decay Can Improve Generalization; "
      "Loshchilov & Hutter 2019, Decoupled Weight Decay Regularization (arXiv:1711.05101)")

trick("dropout", "regularisation",
      """Zero a random share of activations (here 0.2) during training so that units cannot co-adapt.
      Keep it moderate: much above 0.5 tends to underfit.""",
      {"model.dropout": 0.2}, {"model.dropout": 0.0},
      "Srivastava et al. 2014, Dropout (JMLR 15)")

trick("adamw", "optimiser",
      """Adam with weight decay decoupled from the gradient step, so that decay acts the same for every
      parameter regardless of its gradient history.""",
      {"train.optimizer": "adamw"}, {"train.optimizer": "adam"},
      "Loshchilov & Hutter 2019, Decoupled Weight Decay Regularization (arXiv:1711.05101)")

trick("sgd_momentum", "optimiser",
      """SGD with momentum 0.9 (Nesterov): slower to tune than Adam, often better at the end. Needs a
      larger learning rate than Adam.""",
      {"train.optimizer": "sgd", "train.momentum": 0.9, "train.nesterov": True},
      {"train.optimizer": "sgd", "train.momentum": 0.0, "train.nesterov": False},
      "Sutskever et al. 2013, On the importance of initialization and momentum in deep learning")

trick("rmsprop", "optimiser",
      """RMSProp: divide each step by a running average of squared gradients; robust on recurrent nets.""",
      {"train.optimizer": "rmsprop"}, {"train.optimizer": "adam"},
      "Tieleman & Hinton 2012, Lecture 6.5, Neural Networks for Machine Learning")

trick("early_stopping", "regularisation",
      """Stop when the validation loss has not improved for 5 epochs and keep the best epoch's weights:
      the cheapest regulariser there is.""",
      {"train.early_stopping": 5}, {"train.early_stopping": 0},
      "Prechelt 1998, Early Stopping - But When?")

trick("mixed_precision", "efficiency",
      """Compute in bfloat16 (fp16 with loss scaling on CUDA) where it is safe: faster and lighter on
      hardware with fast half precision, usually at no cost in accuracy.""",
      {"train.precision": "bf16"}, {"train.precision": "fp32"},
      "Micikevicius et al. 2018, Mixed Precision Training (arXiv:1710.03740)")

trick("dice_loss", "segmentation",
      """Add a soft Dice loss to cross-entropy: Dice scores overlap per class, so a small lesion counts as
      much as the large background; plain cross-entropy is dominated by the majority class.""",
      {"train.loss": "ce_dice"}, {"train.loss": "ce"},
      "Milletari et al. 2016, V-Net (arXiv:1606.04797); Isensee et al. 2021, nnU-Net (Nature Methods 18)")

# ---- weight averaging, the LR range test, compilation (issue 25) --------------------------------------------

trick("ema", "weight_averaging",
      """Keep an exponential moving average of the weights (decay 0.99 per step: a horizon of about 100
      steps; raise it for long runs) and evaluate and ship the average: it smooths the noise of the last
      steps, often for a little accuracy and calibration at no training cost (timm's ModelEmaV2,
      Lightning's EMA callback).""",
      {"train.ema": 0.99}, {"train.ema": 0.0},
      "Polyak & Juditsky 1992, Acceleration of Stochastic Approximation by Averaging (SIAM J. Control 30:4); "
      "Tarvainen & Valpola 2017, Mean teachers (arXiv:1703.01780)")

trick("swa", "weight_averaging",
      """Stochastic weight averaging: for the last quarter of training, hold the learning rate at a
      moderate value and average the weights at each epoch's end (batch-norm statistics recomputed for
      the average): wider optima that tend to generalise better.""",
      {"train.swa_start": 0.75}, {"train.swa_start": 0},
      "Izmailov et al. 2018, Averaging Weights Leads to Wider Optima and Better Generalization "
      "(arXiv:1803.05407)")

trick("lr_find", "optimiser",
      """Pick the learning rate by an LR range test before training (an exponential ramp over 100 steps;
      the rate at the smoothed loss's minimum, divided by 10) instead of the recipe's fixed guess.""",
      {"train.lr": "find"}, {},
      "Smith 2017, Cyclical Learning Rates for Training Neural Networks (arXiv:1506.01186); "
      "Howard & Gugger 2020, fastai (arXiv:2002.04688)")

trick("compile", "speed",
      """torch.compile the model (TorchInductor): fused kernels, often faster steps after a one-off
      compilation; the same numbers up to rounding, so an ablation should show 'equivalent' accuracy
      and differ in wall time.""",
      {"train.compile": "inductor"}, {"train.compile": "off"},
      "Ansel et al. 2024, PyTorch 2: Faster Machine Learning Through Dynamic Python Bytecode "
      "Transformation and Graph Compilation (ASPLOS '24)")

trick("grad_accum", "optimisation",
      """Compute each batch in several micro-batches (here 4) and add their gradients before one step: the
      same update as the whole batch for a model without batch statistics, in a quarter of the activation
      memory, so a batch that does not fit the device can still be used.""",
      {"train.grad_accum_steps": 4}, {"train.grad_accum_steps": 1},
      "Goyal et al. 2017, Accurate, Large Minibatch SGD (arXiv:1706.02677); PyTorch DDP no_sync")

trick("sync_batchnorm", "normalisation",
      """On several processes, compute batch-norm statistics over the whole batch of all ranks rather than
      each rank's share: with small shares per device (detection, segmentation, 3D) the per-rank
      statistics are noisy and training suffers.""",
      {"train.sync_batchnorm": True}, {"train.sync_batchnorm": False},
      "Peng et al. 2018, MegDet: A Large Mini-Batch Object Detector (arXiv:1711.07240); torch.nn.SyncBatchNorm")
