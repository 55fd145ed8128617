"""The catalogue of tricks. Each family module registers its tricks on import."""

from dltricks.tricks import architecture, augmentation, compression, training  # noqa: F401  (register)
from dltricks.tricks.catalogue import Trick, catalogue, get, parse_trick, register, trick

__all__ = ["Trick", "catalogue", "get", "parse_trick", "register", "trick"]
