"""Building blocks usable on their own; every block takes ``dims`` (1, 2 or 3) and (N, C, *spatial) input."""

from dltricks.nn.blocks.attention import SelfAttention, SqueezeExcite
from dltricks.nn.blocks.conv import (
                                     ConvNormAct,
                                     LargeKernelConv,
                                     SeparableConv,
                                     WSConv,
                                     downsample,
                                     make_conv,
                                     same_padding,
)
from dltricks.nn.blocks.multiscale import DualPathway
from dltricks.nn.blocks.pooling import ASPP, SPP, ImagePool
from dltricks.nn.blocks.residual import BasicBlock, Bottleneck, PreActBlock, Residual, projection

__all__ = [
                                     "ASPP",
                                     "SPP",
                                     "BasicBlock",
                                     "Bottleneck",
                                     "ConvNormAct",
                                     "DualPathway",
                                     "ImagePool",
                                     "LargeKernelConv",
                                     "PreActBlock",
                                     "Residual",
                                     "SelfAttention",
                                     "SeparableConv",
                                     "SqueezeExcite",
                                     "WSConv",
                                     "downsample",
                                     "make_conv",
                                     "projection",
                                     "same_padding",
]
