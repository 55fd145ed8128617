"""Model builders, each registered under its recipe ``model.name``."""

from dltricks.nn.models import cnn, mlp, resnet, sequence, unet  # noqa: F401  (register)
from dltricks.nn.models.registry import build_model, models, register_model

__all__ = ["build_model", "models", "register_model"]
