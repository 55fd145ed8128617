"""Sparse storage where it pays: a pruned Linear layer's weight kept as CSR (compressed sparse rows).

CSR keeps, per non-zero, its value (4 bytes) and column (4 bytes, int32), plus one row pointer per row:
smaller than the dense fp32 matrix below 50% density, and a sparse-dense product beats the dense one
on this CPU only when most weights are zero (2.2x at 90% zeros, batch 64). Hence the threshold: a layer
of at most 25% density is converted, denser ones stay dense. Convolutions stay dense (torch has no
fast sparse convolution on the CPU).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from dltricks.compress.layers import replace_module

__all__ = ["MAX_DENSITY", "SparseLinear", "sparsify"]

MAX_DENSITY = 0.25


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` (out, in) in CSR. Input ``(N, in)`` (or ``(in,)``), output ``(N, out)``.

    The three CSR arrays are plain buffers (``crow``, ``col``, ``values``), so the layer saves as
    safetensors like any other."""

    def __init__(self, layer: nn.Linear):
        super().__init__()
        with warnings.catch_warnings():  # "CSR support is in beta": nothing for a user to act on
            warnings.simplefilter("ignore", UserWarning)
            csr = layer.weight.detach().to_sparse_csr()
        self.shape = tuple(layer.weight.shape)
        self.register_buffer("crow", csr.crow_indices().to(torch.int32))
        self.register_buffer("col", csr.col_indices().to(torch.int32))
        self.register_buffer("values", csr.values().clone())
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().clone())

    def weight_csr(self) -> torch.Tensor:
        return torch.sparse_csr_tensor(self.crow, self.col, self.values, self.shape, check_invariants=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.shape[1])
        out = torch.sparse.mm(self.weight_csr(), flat.t()).t()  # (out, in) @ (in, N) -> (N, out)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.shape[0])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the number of non-zeros is only known from the file: take the stored arrays' sizes
        for name in ("col", "values"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"{self.shape[1]} -> {self.shape[0]}, {self.values.numel()} non-zeros (CSR)"


def density(layer: nn.Linear) -> float:
    return float((layer.weight != 0).float().mean())


def sparsify(model: nn.Module, max_density: float = MAX_DENSITY) -> list[str]:
    """Replace (in place) every Linear layer of at most ``max_density`` non-zeros by :class:`SparseLinear`;
    return the names replaced (the plan for rebuilding)."""
    names = [n for n, m in model.named_modules() if type(m) is nn.Linear and density(m) <= max_density]
    for name in names:
        to_csr(model, name)
    return names


def to_csr(model: nn.Module, name: str) -> None:
    """Replace the Linear layer ``name`` by its :class:`SparseLinear` (in place)."""
    replace_module(model, name, SparseLinear(model.get_submodule(name)))
