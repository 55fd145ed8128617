"""Building blocks usable on their own; every block takes ``dims`` (1, 2 or 3)."""

from dltricks.nn.blocks.conv import ConvNormAct, WSConv, make_conv

__all__ = ["ConvNormAct", "WSConv", "make_conv"]
