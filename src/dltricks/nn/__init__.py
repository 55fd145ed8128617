"""Building blocks and model builders (mlp, cnn, resnet, unet, rnn, transformer) for 1D, 2D and 3D data.

Blocks take (N, C, *spatial) tensors and ``dims`` = 1, 2 or 3, and are usable on their own like timm's
layers; models register under their recipe ``model.name`` and are built with :func:`build_model`.
"""

from dltricks.nn.blocks import (
                                ASPP,
                                SPP,
                                BasicBlock,
                                Bottleneck,
                                ConvNormAct,
                                DualPathway,
                                ImagePool,
                                LargeKernelConv,
                                PreActBlock,
                                Residual,
                                SelfAttention,
                                SeparableConv,
                                SqueezeExcite,
                                WSConv,
                                downsample,
                                make_conv,
                                projection,
)
from dltricks.nn.layers import BuildError
from dltricks.nn.models import build_model, models, register_model
from dltricks.nn.shapes import output_shape

__all__ = ["ASPP", "SPP", "BasicBlock", "Bottleneck", "BuildError", "ConvNormAct", "DualPathway", "ImagePool",
           "LargeKernelConv", "PreActBlock", "Residual", "SelfAttention", "SeparableConv", "SqueezeExcite",
           "WSConv", "build_model", "downsample", "make_conv", "models", "output_shape", "projection",
           "register_model"]
