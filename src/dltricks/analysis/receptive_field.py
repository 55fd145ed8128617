"""Receptive fields: exact from the graph, and empirical from input gradients.

:func:`receptive_field` follows Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural
Networks" (Distill 2019): for a chain of layers with kernel k, stride s, padding p and dilation d,

    r_out = r_in + (d (k - 1)) * j_in,   j_out = j_in * s,   start_out = start_in - p * j_in,

where r is the field size, j the effective stride and -start the effective padding. Merges (residual
additions, concatenation in Inception-style blocks and U-Nets) take the union of their inputs' fields,
i.e. the largest path; transposed convs and upsampling divide the stride and add at most
ceil(k/s) - 1 (or one or three interpolation neighbours) steps. The reported field is the largest one of
any feature map in the net (for a classifier: the last map before global pooling; for a U-Net: its output).
Normalisation statistics, squeeze-excitation gates and image pooling are treated as context, not as
part of the local field (``context`` says when they are there); attention and recurrence see everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from rich.table import Table
from rich.text import Text
from torch import nn

from dltricks.analysis.fields import Global, Local
from dltricks.analysis.trace import LayerRow, Trace, trace
from dltricks.errors import DltricksError

__all__ = ["RF", "EmpiricalRF", "empirical_receptive_field", "fmt_dims", "receptive_field"]


def _clean(v: float) -> float | int:
    r = round(v)
    return int(r) if abs(v - r) < 1e-9 else round(v, 3)


def fmt_dims(values, sep: str = "x") -> str:
    """``(212, 212)`` -> ``212``; ``(5, 7)`` -> ``5x7``; None -> ``-``."""
    if values is None:
        return "-"
    vals = [_clean(v) for v in values]
    if not vals:
        return "-"
    return str(vals[0]) if all(v == vals[0] for v in vals) else sep.join(str(v) for v in vals)


@dataclass
class RF:
    """The receptive field of a model on inputs of ``input_size`` (spatial sizes).

    ``size``, ``stride`` and ``padding`` are per spatial axis (effective stride and padding as in Araujo et
    al.); ``layers`` has one row per leaf layer call; ``context`` names what reaches every position beyond
    the local field: ``pooled`` (squeeze-excitation, image pooling) or ``mixing`` (attention, recurrence).
    """

    size: tuple[int | float, ...]
    stride: tuple[int | float, ...]
    padding: tuple[int | float, ...]
    input_size: tuple[int, ...]
    layers: list[LayerRow] = field(default_factory=list)
    context: tuple[str, ...] = ()
    unknown_ops: tuple[str, ...] = ()

    @property
    def applies(self) -> bool:
        """False for a feature vector (F,): no spatial axis, so no receptive field ("n/a")."""
        return bool(self.input_size)

    @property
    def ratio(self) -> tuple[float, ...]:
        """Field size over input size per axis (>= 1: every output position can see the whole input)."""
        return tuple(s / n for s, n in zip(self.size, self.input_size))

    @property
    def min_ratio(self) -> float:
        return min(self.ratio) if self.ratio else 1.0

    @property
    def sees_everything(self) -> bool:
        """Every output depends on the whole input: attention/recurrence, or a field at least input-sized."""
        return "mixing" in self.context or all(r >= 1 for r in self.ratio)

    def to_dict(self) -> dict:
        return {"size": list(self.size), "stride": list(self.stride), "padding": list(self.padding),
                "input_size": list(self.input_size), "ratio": [round(r, 4) for r in self.ratio],
                "context": list(self.context)}

    def table(self, title: str | None = None) -> Table:
        t = Table("layer", "kind", "output", "RF", "stride", "padding", title=title, box=None)
        for r in self.layers:
            rf = "n/a" if not self.applies else fmt_dims(r.rf_size) if r.rf_size else (
                "global" if not r.pooled else "pooled")
            t.add_row(r.name, r.kind, "x".join(map(str, r.out_shape[1:])), rf, fmt_dims(r.rf_stride),
                      fmt_dims(r.rf_padding))
        return t

    def summary(self) -> str:
        if not self.applies:
            return "receptive field n/a (the input is a feature vector, without spatial axes)"
        ctx = f" + global context ({', '.join(self.context)})" if self.context else ""
        ratio = ", ".join(f"{r:.2f}" for r in self.ratio)
        return (f"receptive field {fmt_dims(self.size)} (stride {fmt_dims(self.stride)}, padding "
                f"{fmt_dims(self.padding)}) on input {fmt_dims(self.input_size)}: ratio {ratio}{ctx}")

    def __rich__(self):
        from rich.console import Group

        return Group(self.table(), Text(self.summary()))


def rf_from_trace(t: Trace) -> RF:
    spatial = t.input_shape[1:]
    if not spatial:  # a feature vector (F,): nothing is local, the field does not apply
        return RF(size=(), stride=(), padding=(), input_size=(), layers=t.rows, context=tuple(sorted(t.context)),
                  unknown_ops=tuple(sorted(t.unknown_ops)))
    best = t.largest
    dense = isinstance(t.output_state, Global) and not t.output_state.pooled
    if best is None or (max(best.size) <= 1 and dense):
        # no spatial windows, and an output that depends on every position through dense or recurrent
        # layers (an MLP, an RNN, a transformer on single-step tokens): the field is the whole input
        n = len(spatial)
        whole = tuple(float(s) for s in spatial)
        best = Local(tuple(range(n)), whole, whole, (0.0,) * n)
    return RF(size=tuple(_clean(v) for v in best.size), stride=tuple(_clean(v) for v in best.jump),
              padding=tuple(_clean(-v) for v in best.start), input_size=tuple(spatial), layers=t.rows,
              context=tuple(sorted(t.context)), unknown_ops=tuple(sorted(t.unknown_ops)))


def receptive_field(model: nn.Module, input_shape: tuple[int, ...] | list[int]) -> RF:
    """The exact receptive field of ``model`` for one input of shape ``input_shape`` = (C, *spatial).

    Runs the model once on meta tensors (no arithmetic, no memory), so it takes well under a second even
    for a ResNet-50 at 224x224.

    >>> rf = receptive_field(vgg16, (3, 224, 224)); rf.size, rf.stride   # ((212, 212), (32, 32))
    """
    if len(input_shape) < 2:
        raise DltricksError(f"receptive_field needs input_shape (C, *spatial), got {tuple(input_shape)}")
    return rf_from_trace(trace(model, input_shape))


# ---- empirical check ------------------------------------------------------------------------------

@dataclass
class EmpiricalRF:
    """The field measured from input gradients: per spatial axis the span of input positions with a
    non-zero gradient of the centre output. ``clipped`` marks axes where the span reached the border (the
    true field may be larger: use a larger input)."""

    size: tuple[int, ...]
    clipped: tuple[bool, ...]
    layer: str
    position: tuple[int, ...]


def _target_layer(model: nn.Module, x: torch.Tensor) -> tuple[str, torch.Tensor | None]:
    """The last leaf module whose output is still a spatial map shaped like the input (N, C, *spatial)."""
    found: list[tuple[str, torch.Tensor]] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(mod, inputs, output):
        leaf_map = isinstance(output, torch.Tensor) and output.dim() == x.dim() and not list(mod.children())
        if leaf_map and (any(s > 1 for s in output.shape[2:]) or not found):
            found.append((names[mod], output))

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    if isinstance(out, torch.Tensor) and out.dim() == x.dim():
        return "output", out
    if not found:
        return "", None
    return found[-1]


def empirical_receptive_field(model: nn.Module, input_shape: tuple[int, ...] | list[int], samples: int = 8,
                              positions: int = 1, seed: int = 0) -> EmpiricalRF:
    """Measure the field from gradients: the span of input positions whose gradient for the centre output
    (of the model if it is a dense predictor, else of its last spatial feature map) is non-zero.

    The union over ``samples`` random inputs avoids ReLUs that happen to be off; with ``positions`` > 1 the
    centre and the next positions-1 positions along the diagonal are measured and the largest span kept
    (upsampling makes the field depend on the position's phase). Eval mode; batch statistics, GroupNorm
    and attention couple all positions, so this check is meant for nets without them."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    try:
        x = torch.randn((samples, *input_shape), generator=gen).requires_grad_(True)
        best: list[int] | None = None
        clipped = [False] * (len(input_shape) - 1)
        layer, centre = "", ()
        for p in range(positions):
            layer, y = _target_layer(model, x)
            if y is None:
                raise DltricksError("empirical_receptive_field: the model has no spatial feature map to probe")
            centre = tuple(s // 2 + p if s // 2 + p < s else s - 1 for s in y.shape[2:])
            sel = y[(slice(None), slice(None), *centre)]
            (g,) = torch.autograd.grad(sel.sum(), x)
            hit = g.abs().sum(dim=(0, 1)) > 0
            spans = []
            for ax in range(hit.dim()):
                other = tuple(d for d in range(hit.dim()) if d != ax)
                idx = hit.any(dim=other).nonzero().flatten() if other else hit.nonzero().flatten()
                if idx.numel() == 0:
                    spans.append(0)
                    continue
                lo, hi = int(idx.min()), int(idx.max())
                spans.append(hi - lo + 1)
                clipped[ax] = clipped[ax] or lo == 0 or hi == hit.shape[ax] - 1
            best = spans if best is None else [max(a, b) for a, b in zip(best, spans)]
        return EmpiricalRF(tuple(best or ()), tuple(clipped), layer, centre)
    finally:
        for m, training in modes.items():
            m.training = training

