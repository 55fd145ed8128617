"""The catalogue of tricks. Each family module registers its tricks on import."""

from dltricks.tricks import architecture, augmentation, training  # noqa: F401  (register)
from dltricks.tricks import compression as _compression  # noqa: F401  (register: pruning, quantization)
from dltricks.tricks import methods as _methods  # noqa: F401  (register: transfer, distillation, multi-task)
from dltricks.tricks import preprocessing as _preprocessing  # noqa: F401  (register: input standardisation)
from dltricks.tricks import uncertainty as _uncertainty  # noqa: F401  (register: calibration, uncertainty)
from dltricks.tricks import unlabelled as _unlabelled  # noqa: F401  (register: semi-supervised, domain adaptation)
from dltricks.tricks.catalogue import Trick, catalogue, get, parse_trick, register, trick

__all__ = ["Trick", "catalogue", "get", "parse_trick", "register", "trick"]
