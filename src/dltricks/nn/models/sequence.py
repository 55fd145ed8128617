"""Sequence classifiers: recurrent nets (LSTM, GRU) and a transformer encoder.

Both take (N, C, L) tensors like MNIST-1D's (N, 1, 40) and treat L as time (a flat (F,) sample is read as
(1, F)); they return (N, num_classes) logits.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from dltricks.nn.layers import BuildError
from dltricks.nn.models.registry import register_model
from dltricks.recipe import ModelSpec


def _sequence_shape(kind: str, in_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(in_shape) == 1:
        return 1, in_shape[0]
    if len(in_shape) == 2:
        return in_shape[0], in_shape[1]
    raise BuildError(f"{kind} takes sequences of shape (C, L) or (L,), got {tuple(in_shape)}; "
                     "use cnn, resnet or unet for images and volumes")


def _as_sequence(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(1) if x.dim() == 2 else x


# ---- RNN ------------------------------------------------------------------------------------------

class RNNSpec(ModelSpec):
    name: str = "rnn"
    cell: Literal["lstm", "gru"] = "lstm"
    hidden: int = Field(64, ge=1)
    num_layers: int = Field(1, ge=1)
    bidirectional: bool = False
    pool: Literal["last", "mean"] = Field("last", description="classify from the final state or the mean "
                                                              "over time of the outputs")


class RNNClassifier(nn.Module):
    """LSTM (Hochreiter & Schmidhuber 1997) or GRU (Cho et al. 2014) over time, then a linear head.

    (N, C, L) -> (N, num_classes). Bidirectional nets classify from both directions' final states.
    Recurrent nets need gradient clipping (``train.grad_clip``): the advisor says so."""

    def __init__(self, spec: RNNSpec, in_ch: int, num_classes: int):
        super().__init__()
        cls = nn.LSTM if spec.cell == "lstm" else nn.GRU
        self.rnn = cls(in_ch, spec.hidden, spec.num_layers, batch_first=True, bidirectional=spec.bidirectional,
                       dropout=spec.dropout if spec.num_layers > 1 else 0.0)
        self.pool = spec.pool
        out = spec.hidden * (2 if spec.bidirectional else 1)
        self.head = nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(out, num_classes))
        self.directions = 2 if spec.bidirectional else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = _as_sequence(x).transpose(1, 2)  # (N, L, C): time first after the batch
        out, state = self.rnn(seq)
        if self.pool == "mean":
            feat = out.mean(1)
        else:
            h = state[0] if isinstance(state, tuple) else state  # (layers * directions, N, H)
            feat = torch.cat(list(h[-self.directions:]), dim=-1)
        return self.head(feat)


@register_model("rnn", RNNSpec)
def build_rnn(spec: RNNSpec, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    ch, _ = _sequence_shape("rnn", tuple(in_shape))
    return RNNClassifier(spec, ch, num_classes)


# ---- Transformer ----------------------------------------------------------------------------------

class TransformerSpec(ModelSpec):
    name: str = "transformer"
    d_model: int = Field(64, ge=1)
    heads: int = Field(4, ge=1)
    num_layers: int = Field(2, ge=1)
    dim_feedforward: int = Field(128, ge=1)
    patch_size: int = Field(1, ge=1, description="time steps per token (a strided conv embeds each patch)")
    pos_embedding: Literal["learned", "sinusoidal", "none"] = "learned"
    pool: Literal["cls", "mean"] = "cls"
    act: Literal["gelu", "relu"] = "gelu"


def sinusoidal(length: int, dim: int) -> torch.Tensor:
    """(1, length, dim) sine/cosine position codes (Vaswani et al. 2017)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe[None]


class SequenceTransformer(nn.Module):
    """Patch embedding (a strided Conv1d) + positional embedding + pre-norm transformer encoder, classified
    from a CLS token or the mean token. (N, C, L) -> (N, num_classes).

    A learned positional embedding is sized for the training length and linearly resized for other lengths;
    the sinusoidal one extends to any length."""

    def __init__(self, spec: TransformerSpec, in_ch: int, length: int, num_classes: int):
        super().__init__()
        if spec.d_model % spec.heads:
            raise BuildError(f"model.heads = {spec.heads} must divide model.d_model = {spec.d_model}")
        tokens = length // spec.patch_size
        if tokens < 1:
            raise BuildError(f"model.patch_size = {spec.patch_size} is longer than the sequence ({length})")
        self.embed = nn.Conv1d(in_ch, spec.d_model, spec.patch_size, stride=spec.patch_size)
        self.pos_kind, self.pool = spec.pos_embedding, spec.pool
        if spec.pos_embedding == "learned":
            self.pos = nn.Parameter(torch.zeros(1, tokens, spec.d_model))
            nn.init.trunc_normal_(self.pos, std=0.02)
        elif spec.pos_embedding == "sinusoidal":
            self.register_buffer("pos", sinusoidal(tokens, spec.d_model), persistent=False)
        else:
            self.pos = None
        self.cls = nn.Parameter(torch.zeros(1, 1, spec.d_model)) if spec.pool == "cls" else None
        layer = nn.TransformerEncoderLayer(spec.d_model, spec.heads, spec.dim_feedforward, spec.dropout,
                                           activation=spec.act, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, spec.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(spec.d_model)
        self.head = nn.Linear(spec.d_model, num_classes)

    def _positions(self, n: int, device, dtype) -> torch.Tensor | None:
        if self.pos is None:
            return None
        if self.pos.shape[1] == n:
            return self.pos
        if self.pos_kind == "sinusoidal":
            return sinusoidal(n, self.pos.shape[2]).to(device=device, dtype=dtype)
        return F.interpolate(self.pos.transpose(1, 2), size=n, mode="linear", align_corners=False).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(_as_sequence(x)).transpose(1, 2)  # (N, tokens, d_model)
        pos = self._positions(t.shape[1], t.device, t.dtype)
        if pos is not None:
            t = t + pos
        if self.cls is not None:
            t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
        t = self.norm(self.encoder(t))
        return self.head(t[:, 0] if self.cls is not None else t.mean(1))


@register_model("transformer", TransformerSpec)
def build_transformer(spec: TransformerSpec, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    ch, length = _sequence_shape("transformer", tuple(in_shape))
    return SequenceTransformer(spec, ch, length, num_classes)
