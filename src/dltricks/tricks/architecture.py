"""Architecture tricks: each acts on model keys (``model.*``) of the builders in :mod:`dltricks.nn.models`.

``applies_to`` names the models whose schema has the keys; patching another model is a validation error.
"""

from dltricks.tricks.catalogue import trick

_CONV = ("model.name=cnn", "model.name=resnet", "model.name=unet")
_CNN = ("model.name=cnn",)
_UNET = ("model.name=unet",)

trick("batch_norm", "architecture",
      """Normalise each layer's pre-activations over the batch (placed after the conv, before the
      activation): training is more stable, tolerates larger learning rates and usually converges much
      faster. Needs batches of ~16 or more; below that prefer group_norm.""",
      {"model.norm": "batch"}, {"model.norm": "none"},
      "Ioffe & Szegedy 2015, Batch Normalization (arXiv:1502.03167)", applies_to=_CONV)

trick("group_norm", "architecture",
      """Normalise over groups of channels within each sample instead of over the batch: the statistics no
      longer depend on the batch size, so small batches (under ~16, usual in 3D) stop hurting.""",
      {"model.norm": "group"}, {"model.norm": "batch"},
      "Wu & He 2018, Group Normalization (arXiv:1803.08494)", applies_to=_CONV)

trick("weight_standardization", "architecture",
      """Standardise each conv filter to zero mean and unit variance before use; with GroupNorm it recovers
      most of BatchNorm's benefit at batch sizes of 1-4.""",
      {"model.weight_standardization": True}, {"model.weight_standardization": False},
      "Qiao et al. 2019, Micro-Batch Training with Batch-Channel Normalization and Weight Standardization "
      "(arXiv:1903.10520)", applies_to=_CONV)

trick("stack_3x3", "architecture",
      """Replace each 7x7 conv by three stacked 3x3 convs: the same receptive field with fewer weights in 2D
      and 3D (27 vs 49 per channel pair in 2D, 81 vs 343 in 3D) and two more non-linearities. The off
      variant keeps the 7x7 kernels, so the comparison is at equal receptive field.""",
      {"model.kernel_size": 7, "model.stack_3x3": True}, {"model.kernel_size": 7, "model.stack_3x3": False},
      "Simonyan & Zisserman 2015, Very Deep Convolutional Networks (arXiv:1409.1556)",
      applies_to=("model.name=cnn", "model.name=unet"))

trick("dilation", "architecture",
      """Dilate every conv by 2: each kernel spreads its taps, so the receptive field grows without more
      weights, depth or downsampling (watch for gridding with large rates).""",
      {"model.dilation": 2}, {"model.dilation": 1},
      "Yu & Koltun 2016, Multi-Scale Context Aggregation by Dilated Convolutions (arXiv:1511.07122)",
      applies_to=_CNN)

trick("dilated_bottleneck", "architecture",
      """Dilate the U-Net bottleneck's convs (rates 2, 4): more context for every voxel without another
      level of downsampling.""",
      {"model.dilated_bottleneck": True}, {"model.dilated_bottleneck": False},
      "Yu & Koltun 2016 (arXiv:1511.07122); Chen et al. 2017, DeepLab (arXiv:1606.00915)", applies_to=_UNET)

trick("separable", "architecture",
      """Split each conv into a depthwise k^d conv per channel and a pointwise 1x1 conv: a fraction of the
      weights and FLOPs for the same receptive field; often nearly as accurate.""",
      {"model.separable": True}, {"model.separable": False},
      "Chollet 2017, Xception (arXiv:1610.02357); Howard et al. 2017, MobileNets (arXiv:1704.04861)",
      applies_to=_CNN)

trick("residual", "architecture",
      """Add a shortcut around each conv unit (a 1x1 projection where the shape changes): the block learns a
      correction to its input, gradients reach early layers, and deeper nets train.""",
      {"model.residual": True}, {"model.residual": False},
      "He et al. 2016, Deep Residual Learning (arXiv:1512.03385)", applies_to=_CNN)

trick("pre_activation", "architecture",
      """Use pre-activation residual blocks (norm-act-conv, nothing after the addition): a clean identity
      path from input to output, which helps the deepest nets.""",
      {"model.block": "preact"}, {"model.block": "basic"},
      "He et al. 2016, Identity Mappings in Deep Residual Networks (arXiv:1603.05027)",
      applies_to=("model.name=resnet",))

trick("zero_init_residual", "architecture",
      """Initialise the last norm of each residual block to zero so every block starts as the identity: the
      net starts shallow and trains stably at large learning rates.""",
      {"model.zero_init_residual": True}, {"model.zero_init_residual": False},
      "Goyal et al. 2017, Accurate, Large Minibatch SGD (arXiv:1706.02677)", applies_to=("model.name=resnet",))

trick("se", "architecture",
      """Squeeze-and-excitation: rescale each conv unit's channels by a gate computed from their global
      average, a cheap way to give every position global context.""",
      {"model.se": True}, {"model.se": False},
      "Hu et al. 2018, Squeeze-and-Excitation Networks (arXiv:1709.01507)",
      applies_to=("model.name=cnn", "model.name=resnet"))

trick("self_attention", "architecture",
      """Add multi-head self-attention over the positions of the last feature map: every position can use
      evidence from anywhere, whatever the convolutional receptive field.""",
      {"model.attention": True}, {"model.attention": False},
      "Vaswani et al. 2017 (arXiv:1706.03762); Zhang et al. 2019, SAGAN (arXiv:1805.08318); Wang et al. 2018, "
      "Non-local Neural Networks (arXiv:1711.07971)", applies_to=_CNN)

trick("spp", "architecture",
      """Spatial pyramid pooling head: pool the last map into 1, 2 and 4 bins per axis and concatenate, a
      fixed-length vector for any input size that keeps coarse layout.""",
      {"model.head": "spp"}, {"model.head": "avg"},
      "He et al. 2014, Spatial Pyramid Pooling in Deep Convolutional Networks (arXiv:1406.4729)", applies_to=_CNN)

trick("skip_connections", "architecture",
      """Concatenate each encoder level's features into the decoder: detail lost to downsampling comes back
      and boundaries sharpen. The off variant is a plain encoder-decoder.""",
      {"model.skip_connections": True}, {"model.skip_connections": False},
      "Ronneberger et al. 2015, U-Net (arXiv:1505.04597)", applies_to=_UNET)

trick("dual_pathway", "architecture",
      """Process the input at full resolution and, in parallel, downsampled by 3, then fuse: the low-resolution
      pathway brings in wide context for the same weights.""",
      {"model.dual_pathway": True}, {"model.dual_pathway": False},
      "Kamnitsas et al. 2017, Efficient multi-scale 3D CNN with fully connected CRF (DeepMedic, "
      "arXiv:1603.05959)", applies_to=_UNET)

trick("strided_conv", "architecture",
      """Downsample with a learned strided convolution instead of max pooling: the net decides what to keep
      when it halves the resolution.""",
      {"model.downsample": "stride"}, {"model.downsample": "max"},
      "Springenberg et al. 2015, Striving for Simplicity: The All Convolutional Net (arXiv:1412.6806)",
      applies_to=_CONV)

trick("reflect_padding", "architecture",
      """Pad with the border's own values (reflection) instead of zeros: a zero frame is an edge the image
      does not have, so the outermost pixels are seen through an artefact; reflecting keeps the statistics
      at the border like those inside (scored by edge_dice in segmentation).""",
      {"model.padding_mode": "reflect"}, {"model.padding_mode": "zeros"},
      "Liu et al. 2018, Partial Convolution based Padding (arXiv:1811.11718); Alsallakh et al. 2021, Mind the Pad",
      applies_to=("model.name=cnn", "model.name=unet"))

trick("spatial_dropout", "regularisation",
      """Drop whole channels (here 10%) after conv units instead of single activations: neighbouring
      activations are correlated, so only dropping entire maps regularises conv features.""",
      {"model.spatial_dropout": 0.1}, {"model.spatial_dropout": 0.0},
      "Tompson et al. 2015, Efficient Object Localization Using Convolutional Networks (arXiv:1411.4280)",
      applies_to=("model.name=cnn", "model.name=resnet"))

trick("bidirectional", "architecture",
      """Run the recurrent net over the sequence in both directions and classify from both final states:
      each step's features then see the past and the future.""",
      {"model.bidirectional": True}, {"model.bidirectional": False},
      "Schuster & Paliwal 1997, Bidirectional Recurrent Neural Networks", applies_to=("model.name=rnn",))
