"""Building blocks and model builders (mlp, cnn, ...) for 1D, 2D and 3D data."""

from dltricks.nn.blocks import ConvNormAct, WSConv
from dltricks.nn.models import build_model, models, register_model

__all__ = ["ConvNormAct", "WSConv", "build_model", "models", "register_model"]
