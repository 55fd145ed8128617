"""Compression tricks: each sets ``compress.*`` keys, so the recipe runner prunes or quantizes the trained
model before its test metrics, and ``dltricks ablate`` tells whether accuracy really dropped (paired seeds).
See :mod:`dltricks.compress`; ``dltricks compress RUN_ID`` measures size and latency side by side."""

from dltricks.tricks.catalogue import trick

trick("prune_magnitude", "compression",
      """Remove the half of the weights with the smallest magnitude, ranked over the whole model: often
      free in accuracy, but the zeros stay in dense tensors, so the model is no smaller or faster unless
      it is stored sparse (done here for Linear layers of <= 25% density).""",
      {"compress.prune": 0.5, "compress.prune_scope": "global"},
      {"compress.prune": 0.0, "compress.prune_scope": "global"},
      "Han et al. 2015, Learning both Weights and Connections (arXiv:1506.02626); "
      "Blalock et al. 2020, What is the State of Neural Network Pruning? (arXiv:2003.03033)")

trick("prune_iterative", "compression",
      """Prune to 80% zeros in three steps with an epoch of fine-tuning after each: the network recovers
      between cuts, so high sparsity costs less accuracy than one cut of the same size.""",
      {"compress.prune": 0.8, "compress.prune_steps": 3, "compress.finetune_epochs": 1},
      {"compress.prune": 0.0, "compress.prune_steps": 1, "compress.finetune_epochs": 0},
      "Han et al. 2015 (arXiv:1506.02626); Zhu & Gupta 2017, To prune, or not to prune (arXiv:1710.01878)")

trick("lottery_ticket", "compression",
      """Prune 80% of the weights, reset the survivors to their values at initialisation and retrain: a
      sparse 'winning ticket' trains to the dense network's accuracy (at small scale).""",
      {"compress.prune": 0.8, "compress.rewind": True, "compress.finetune_epochs": 3},
      {"compress.prune": 0.0, "compress.rewind": False, "compress.finetune_epochs": 0},
      "Frankle & Carbin 2019, The Lottery Ticket Hypothesis (arXiv:1803.03635)")

trick("prune_channels", "compression",
      """Remove half of the channels of every conv (smallest filter norms), with the layers coupled to them,
      and fine-tune five epochs: a smaller dense model that is faster on any hardware.""",
      {"compress.prune": 0.5, "compress.prune_mode": "structured", "compress.finetune_epochs": 5},
      {"compress.prune": 0.0, "compress.prune_mode": "structured", "compress.finetune_epochs": 0},
      "Li et al. 2017, Pruning Filters for Efficient ConvNets (arXiv:1608.08710); "
      "Fang et al. 2023, DepGraph (arXiv:2301.12900)")

trick("quantize_dynamic", "compression",
      """Store Linear/LSTM/GRU weights in int8 and quantize activations on the fly: about 4x smaller and
      faster at large batches on x86 CPUs; the cheapest quantization to try.""",
      {"compress.quantize": "dynamic"}, {"compress.quantize": "none"},
      "Jacob et al. 2018, Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only "
      "Inference (arXiv:1712.05877)")

trick("quantize_static", "compression",
      """Post-training int8 of weights and activations, calibrated on a few training batches, convs fused
      with their norm and ReLU: the fast path for conv nets on CPUs.""",
      {"compress.quantize": "static"}, {"compress.quantize": "none"},
      "Krishnamoorthi 2018, Quantizing deep convolutional networks for efficient inference (arXiv:1806.08342)")

trick("quantize_qat", "compression",
      """Quantization-aware training: fine-tune two epochs with fake int8 quantization in the forward pass
      so the weights adapt to the rounding, then convert as static int8.""",
      {"compress.quantize": "qat", "compress.finetune_epochs": 2},
      {"compress.quantize": "none", "compress.finetune_epochs": 0},
      "Jacob et al. 2018 (arXiv:1712.05877); Krishnamoorthi 2018 (arXiv:1806.08342)")

trick("quantize_weight_only", "compression",
      """Keep weights in int8 with one scale per output channel and compute in float: 4x smaller on disk
      and in memory at almost no accuracy cost, but no faster.""",
      {"compress.quantize": "weight_only"}, {"compress.quantize": "none"},
      "Dettmers et al. 2022, LLM.int8() (arXiv:2208.07339)")
