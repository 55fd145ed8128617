"""Quantization: fewer bits per weight (and, for static int8, per activation).

- ``dynamic``: Linear (and LSTM/GRU) weights in int8, activations quantized on the fly per batch;
- ``static``: post-training int8 of weights and activations, calibrated on training batches (convs
  fused with their norm and ReLU), via torch's FX graph mode;
- ``qat``: quantization-aware training, fake quantization during fine-tuning, then int8 as ``static``;
- ``weight_only``: int8 weights with one scale per output channel, dequantized in the forward pass
  (4x smaller on disk and in memory; the arithmetic stays fp32, so it is not faster).

The torch.ao calls are isolated in :mod:`dltricks.compress.ao`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from dltricks.compress import ao
from dltricks.compress.layers import replace_module
from dltricks.errors import DltricksError

__all__ = ["QUANTIZERS", "WeightOnlyInt8", "dynamic_int8", "qat_int8", "static_int8", "weight_only_int8"]

QUANTIZERS = ("dynamic", "static", "qat", "weight_only")
_DYNAMIC_TYPES = (nn.Linear, nn.LSTM, nn.GRU)
_CONVS = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


def dynamic_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 of every Linear, LSTM and GRU layer (a copy; ``model`` is unchanged)."""
    found = {type(m) for m in model.modules() if isinstance(m, _DYNAMIC_TYPES)}
    if not found:
        raise DltricksError("dynamic quantization acts on Linear, LSTM and GRU layers and this model has none "
                            "that matter; try --quantize static (conv nets) or weight_only")
    return ao.quantize_dynamic(model, {t for t in _DYNAMIC_TYPES if t in found})


def _traced(fn: Callable[[], nn.Module], what: str) -> nn.Module:
    try:
        return fn()
    except Exception as e:  # FX cannot trace data-dependent control flow; say so in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DltricksError(f"{what} int8 needs a model that torch.fx can trace, and this one cannot be "
                            f"({type(e).__name__}: {first[:160]}); try --quantize dynamic or weight_only") from None


def static_int8(model: nn.Module, example: torch.Tensor, calibration: Iterable[torch.Tensor]) -> nn.Module:
    """Post-training static int8: observe activation ranges on ``calibration`` batches ``(N, C, *spatial)``,
    then convert (a copy; CPU only)."""
    prepared = _traced(lambda: ao.prepare_static(model.cpu(), example.cpu()), "static")
    with torch.no_grad():
        for x in calibration:
            prepared(x.cpu())
    return ao.convert(prepared)


def qat_int8(model: nn.Module, example: torch.Tensor, train: Callable[[nn.Module], None]) -> nn.Module:
    """Quantization-aware training: ``train(prepared)`` fine-tunes the fake-quantized copy in place (any
    device), then it is converted to int8 (CPU)."""
    prepared = _traced(lambda: ao.prepare_qat(model.cpu(), example.cpu()), "QAT")
    train(prepared)
    return ao.convert(prepared)


class WeightOnlyInt8(nn.Module):
    """A Linear or Conv{1,2,3}d whose weight is int8 with one fp32 scale per output channel (symmetric,
    [-127, 127]); the forward pass dequantizes it and calls the float op. Input and output as the layer's."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        if not isinstance(layer, (nn.Linear, *_CONVS)):
            raise TypeError(f"weight-only int8 takes Linear or Conv layers, not {type(layer).__name__}")
        if isinstance(layer, tuple(_CONVS)) and layer.padding_mode != "zeros":
            raise TypeError(f"weight-only int8 supports zero padding only, not {layer.padding_mode!r}")
        w = layer.weight.detach().float()
        axes = tuple(range(1, w.dim()))
        scale = w.abs().amax(dim=axes).clamp_min(1e-12) / 127.0  # (out,)
        shaped = scale.view(-1, *([1] * len(axes)))
        self.register_buffer("qweight", torch.round(w / shaped).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().clone())
        self.conv = _CONVS.get(type(layer))
        self.conv_kw = {} if self.conv is None else {"stride": layer.stride, "padding": layer.padding,
                                                     "dilation": layer.dilation, "groups": layer.groups}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.qweight.to(x.dtype) * self.scale.to(x.dtype).view(-1, *([1] * (self.qweight.dim() - 1)))
        if self.conv is None:
            return F.linear(x, w, self.bias)
        return self.conv(x, w, self.bias, **self.conv_kw)

    def extra_repr(self) -> str:
        return f"int8 weight {tuple(self.qweight.shape)}, per-channel scale"


def weight_only_int8(model: nn.Module) -> nn.Module:
    """``model`` with every Linear and Conv layer replaced by :class:`WeightOnlyInt8` (in place)."""
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, *_CONVS))]
    if not targets:
        raise DltricksError("weight-only int8 acts on Linear and Conv layers and this model has none")
    for name, layer in targets:
        replace_module(model, name, WeightOnlyInt8(layer))
    return model
