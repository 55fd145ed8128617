"""Augmentation tricks: one per op of :mod:`dltricks.data.augment` (recipe keys under ``data.augment``).

The working rule they test: choose the augmentations whose variation you expect to meet at validation
time; when unsure whether one fits, try it - sometimes it helps as plain regularisation. An ablation
(``dltricks ablate RECIPE --trick augment_flip``) turns that "try" into a measurement.
"""

from dltricks.tricks.catalogue import trick

_WHY = ("Krizhevsky et al. 2012, ImageNet Classification with Deep CNNs; "
        "Shorten & Khoshgoftaar 2019, A survey on Image Data Augmentation (J. Big Data 6:60)")
_MEDICAL = "Isensee et al. 2021, nnU-Net (Nature Methods 18:203; arXiv:1809.10486)"

trick("augment_flip", "augmentation",
      """Mirror each spatial axis with probability 0.5 (image and mask together). Free invariance when
      the task has no preferred side; harmful when left and right mean different things (some anatomy,
      digits).""",
      {"data.augment.flip": 0.5}, {"data.augment.flip": 0.0}, _WHY)

trick("augment_rotate90", "augmentation",
      """Turn by a random multiple of 90 degrees in a random plane with probability 0.5: exact (no
      interpolation) rotations for data without an upright, such as microscopy or axial slices.""",
      {"data.augment.rotate90": 0.5}, {"data.augment.rotate90": 0.0}, _MEDICAL)

trick("augment_rotate", "augmentation",
      """Rotate by a random angle of up to 15 degrees (about every axis in 3D): teaches tolerance to the
      small pose changes that scans and photos show anyway.""",
      {"data.augment.rotate": 15.0}, {"data.augment.rotate": 0.0}, _MEDICAL)

trick("augment_scale", "augmentation",
      """Zoom in or out by up to 15%: objects (organs, lesions, digits) come in different sizes, and a
      model that saw only one size may miss the others.""",
      {"data.augment.scale": 0.15}, {"data.augment.scale": 0.0}, _MEDICAL)

trick("augment_shift", "augmentation",
      """Translate by up to 10% of each side (for signals: shift in time). Convolutions are translation
      equivariant, but padding and pooling are not quite; shifting closes the gap.""",
      {"data.augment.shift": 0.1}, {"data.augment.shift": 0.0}, _WHY)

trick("augment_crop", "augmentation",
      """Cut a random window of 85% of each side and resize it back: the random-resized-crop of image
      classification, forcing the model to work from partial views.""",
      {"data.augment.crop": 0.15}, {"data.augment.crop": 0.0},
      "Szegedy et al. 2015, Going deeper with convolutions (arXiv:1409.4842)")

trick("augment_elastic", "augmentation",
      """Bend the image smoothly with a random displacement field (2% of the side): soft-tissue
      deformation is the variation biomedical images really have, and it multiplies small data sets.""",
      {"data.augment.elastic": 0.02}, {"data.augment.elastic": 0.0},
      "Ronneberger et al. 2015, U-Net (arXiv:1505.04597); Simard et al. 2003, Best practices for CNNs "
      "applied to visual document analysis")

trick("augment_noise", "augmentation",
      """Add gaussian noise (std 0.1 on normalised data): robustness to sensor and scanner noise, and a
      mild regulariser even where the data are clean.""",
      {"data.augment.noise": 0.1}, {"data.augment.noise": 0.0}, _MEDICAL)

trick("augment_gamma", "augmentation",
      """Bend intensities with a random gamma curve (|log gamma| up to 0.3) within each image's range:
      imitates differences in exposure and scanner contrast without moving anything.""",
      {"data.augment.gamma": 0.3}, {"data.augment.gamma": 0.0}, _MEDICAL)

trick("augment_contrast", "augmentation",
      """Stretch or squeeze contrast about each image's mean by up to 25%: the model must rely on shape
      and relative intensity, not on absolute grey values that vary between scanners.""",
      {"data.augment.contrast": 0.25}, {"data.augment.contrast": 0.0}, _MEDICAL)

trick("mixup", "augmentation",
      """Train on blends of two samples, x = lam x_i + (1 - lam) x_j with lam ~ Beta(0.2, 0.2), and the same
      blend of their labels: the model learns to behave linearly between samples, which regularises it and
      tempers its confidence. Classification only (a pixel cannot carry two masks' labels).""",
      {"data.mixup_alpha": 0.2}, {"data.mixup_alpha": 0.0},
      "Zhang et al. 2018, mixup: Beyond Empirical Risk Minimization (arXiv:1710.09412)")

trick("cutmix", "augmentation",
      """Paste a random box of another sample into each sample (a segment of a signal, a patch of an image,
      a block of a volume) and mix the labels by the box's share of the input; for segmentation the mask's
      box comes along. Unlike cutout no pixel is wasted; unlike mixup every pixel stays natural.""",
      {"data.cutmix_alpha": 1.0}, {"data.cutmix_alpha": 0.0},
      "Yun et al. 2019, CutMix: Regularization Strategy to Train Strong Classifiers with Localizable "
      "Features (arXiv:1905.04899)")
