"""The one module that calls ``torch.ao.quantization``.

torch 2.10+ marks ``torch.ao.quantization`` deprecated (to be replaced by torchao's PT2E flow), but in
torch 2.13 its dynamic quantization and its FX graph mode (static int8, QAT) are what works on this
CPU: torchao's int8 configs ran slower than fp32 here, and PT2E lowering of a small CNN failed (see
the compress section of the README). Everything else in :mod:`dltricks.compress` goes through these
five functions, so that swapping the backend touches this file only.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["BACKEND", "convert", "prepare_qat", "prepare_static", "quantize_dynamic", "quiet"]

# the x86 backend (fbgemm with onednn kernels) is torch's default on this CPU
BACKEND = "x86"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the deprecation notice and the observers' advice, which say nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quant_min and quant_max.*")
        warnings.filterwarnings("ignore", message=r".*must run observer before calling calculate_qparams.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\..*")
        yield


def _set_engine() -> None:
    if BACKEND in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = BACKEND


def quantize_dynamic(model: nn.Module, layer_types: set[type[nn.Module]]) -> nn.Module:
    """A copy of ``model`` whose layers of ``layer_types`` (Linear, LSTM, GRU) hold int8 weights and
    quantize their input on the fly, batch by batch."""
    from torch.ao.quantization import quantize_dynamic as qd

    _set_engine()
    with quiet():
        return qd(copy.deepcopy(model).eval(), layer_types, dtype=torch.qint8)


def prepare_static(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` traced with observers for post-training static int8 (convs fused with norm and ReLU)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    _set_engine()
    with quiet():
        return prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping(BACKEND), (example,))


def prepare_qat(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` traced with fake quantization for quantization-aware training (in train mode)."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    _set_engine()
    with quiet():
        return prepare_qat_fx(copy.deepcopy(model).train(), get_default_qat_qconfig_mapping(BACKEND), (example,))


def convert(prepared: nn.Module) -> nn.Module:
    """The int8 model of a calibrated (or QAT-trained) prepared model; it runs on the CPU only."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with quiet():
        return convert_fx(prepared.cpu().eval())
