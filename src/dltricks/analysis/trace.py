"""One pass through a model that records, per layer, what it sees and what it costs.

The model runs once on meta tensors (shapes only: no memory, no arithmetic) under two dispatch modes:
:class:`torch.utils.flop_counter.FlopCounterMode` counts FLOPs, and :class:`~dltricks.analysis.rf_ops.RFMode`
propagates a receptive-field state (:mod:`dltricks.analysis.fields`) through every aten op. The result is a
:class:`Trace`: one :class:`LayerRow` per leaf layer call, the largest field, the FLOPs and the memory.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from dltricks.analysis.fields import Global, Local, State
from dltricks.analysis.rf_ops import RFMode
from dltricks.errors import DltricksError

__all__ = ["Global", "LayerRow", "Local", "State", "Trace", "trace"]


@dataclass
class LayerRow:
    """One leaf layer call: its name, kind, output shape, parameters, FLOPs and receptive field
    (None where the output depends on every input position)."""

    name: str
    kind: str
    out_shape: tuple[int, ...]
    params: int
    flops: int
    out_bytes: int
    rf_size: tuple[float, ...] | None = None
    rf_stride: tuple[float, ...] | None = None
    rf_padding: tuple[float, ...] | None = None
    pooled: bool = False


@dataclass
class Trace:
    """What one pass over ``input_shape`` (one sample: (C, *spatial)) found."""

    input_shape: tuple[int, ...]
    batch_size: int
    output_shape: tuple[int, ...]
    rows: list[LayerRow]
    largest: Local | None
    output_state: State | None
    context: set[str]
    unknown_ops: set[str]
    flops: int
    flops_by_op: dict[str, int]
    merges: int
    params: int
    trainable_params: int
    param_bytes: int
    buffer_bytes: int
    on_meta: bool
    notes: list[str] = field(default_factory=list)

    @property
    def activation_bytes(self) -> int:
        return sum(r.out_bytes for r in self.rows)


def _restore_modes(model: nn.Module, modes: dict[nn.Module, bool]) -> None:
    for m, training in modes.items():
        m.training = training


def trace(model: nn.Module, input_shape: tuple[int, ...] | list[int], batch_size: int = 1,
          dtype: torch.dtype = torch.float32) -> Trace:
    """Run ``model`` once on a (batch_size, *input_shape) input of meta tensors (falling back to real zeros
    on the CPU for ops without a meta kernel) in eval mode, and record every leaf layer call."""
    input_shape = tuple(int(s) for s in input_shape)
    if not input_shape or any(s < 1 for s in input_shape):
        raise DltricksError(f"input shape must be (C, *spatial) with positive sizes, got {input_shape}")
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        try:
            return _trace(model, input_shape, batch_size, dtype, meta=True)
        except (NotImplementedError, RuntimeError) as e:
            if "meta" not in str(e).lower() and "NotImplemented" not in type(e).__name__:
                raise
            t = _trace(model, input_shape, batch_size, dtype, meta=False)
            t.notes.append("traced on the CPU (an op has no meta kernel)")
            return t
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[0]
        raise DltricksError(f"model does not run on input of shape {input_shape}: {reason}") from None
    finally:
        _restore_modes(model, modes)


def _trace(model: nn.Module, input_shape, batch_size: int, dtype, meta: bool) -> Trace:
    names = {m: n for n, m in model.named_modules()}
    rows: list[LayerRow] = []
    stack: list[list] = []  # [module, flops at entry, called a child?]
    seen_params: set[int] = set()
    counter = FlopCounterMode(display=False)
    rf = RFMode()

    def total() -> int:
        return sum(counter.flop_counts["Global"].values()) if "Global" in counter.flop_counts else 0

    def pre(mod, inputs):
        if stack:
            stack[-1][2] = True
        stack.append([mod, total(), False, inputs])

    def post(mod, inputs, output):
        if not stack or stack[-1][0] is not mod:
            return
        _, f0, had_child, ins = stack.pop()
        if had_child:
            return
        o = next((t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)), None)
        if o is None:
            return
        params = 0
        if id(mod) not in seen_params:
            seen_params.add(id(mod))
            params = sum(p.numel() for p in mod.parameters())
        first_in = next((t for t in tree_flatten(ins)[0] if isinstance(t, torch.Tensor)), None)
        inplace = first_in is o
        s = rf.states.get(o) if o in rf.states else None
        row = LayerRow(names.get(mod, type(mod).__name__), type(mod).__name__, tuple(o.shape), params,
                       total() - f0, 0 if inplace else o.numel() * o.element_size())
        if isinstance(s, Local):
            row.rf_size, row.rf_stride, row.rf_padding = s.size, s.jump, tuple(-v for v in s.start)
        elif isinstance(s, Global):
            row.pooled = s.pooled
        rows.append(row)

    handles = []
    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    device = torch.device("meta") if meta else torch.device("cpu")
    state = {n: (torch.empty_like(t, device="meta") if meta else t)
             for n, t in itertools.chain(model.named_parameters(), model.named_buffers())}
    try:
        x = torch.zeros((batch_size, *input_shape), dtype=dtype, device=device)
        spatial = tuple(range(2, x.dim()))
        with torch.no_grad(), counter, rf:
            rf.track(x, Local(spatial, (1.0,) * len(spatial), (1.0,) * len(spatial), (0.0,) * len(spatial)))
            rf.largest = None
            out = torch.func.functional_call(model, state, (x,)) if meta else model(x)
    finally:
        for h in handles:
            h.remove()
    o = next((t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)), None)
    params = list(model.parameters())
    uniq = {id(p): p for p in params}.values()
    flops_by_op = {str(k): v for k, v in counter.flop_counts.get("Global", {}).items()}
    return Trace(
        input_shape=tuple(input_shape), batch_size=batch_size,
        output_shape=tuple(o.shape[1:]) if o is not None else (),
        rows=rows, largest=rf.largest,
        output_state=rf.states.get(o) if o is not None and o in rf.states else None,
        context=set(rf.context), unknown_ops=set(rf.unknown), flops=total(), flops_by_op=flops_by_op,
        merges=rf.merges, params=sum(p.numel() for p in uniq),
        trainable_params=sum(p.numel() for p in uniq if p.requires_grad),
        param_bytes=sum(p.numel() * p.element_size() for p in uniq),
        buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()), on_meta=meta)
