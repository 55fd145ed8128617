"""One pass through a model that records, per layer, what it sees and what it costs.

The model runs once on meta tensors (shapes only: no memory, no arithmetic) under two dispatch modes:
:class:`torch.utils.flop_counter.FlopCounterMode` counts FLOPs, and :class:`_RFMode` propagates a
receptive-field state through every aten op. Working at the aten level means residual additions,
concatenations, upsampling and functional calls are seen exactly like modules, so residual nets,
multi-branch blocks and U-Nets need no special cases: a merge takes the union of its inputs' fields.

A tensor's state is either :class:`Local` (each position sees a window of the input: size, jump and
start per spatial axis, after Araujo et al., Distill 2019) or :class:`Global` (it depends on all positions:
after global pooling, flattening, attention or a recurrent layer).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.weak import WeakIdKeyDictionary

from dltricks.errors import DltricksError

aten = torch.ops.aten


# ---- receptive-field states ---------------------------------------------------------------------

@dataclass(frozen=True)
class Local:
    """Each position of the tensor sees a window of the input, per input spatial axis ``i``:
    ``size[i]`` input pixels starting at ``start[i] + p * jump[i]`` for position ``p`` along tensor dim
    ``axes[i]``. ``-start`` is Araujo et al.'s effective padding, ``jump`` their effective stride."""

    axes: tuple[int, ...]
    size: tuple[float, ...]
    jump: tuple[float, ...]
    start: tuple[float, ...]

    def area(self) -> float:
        return math.prod(self.size)


@dataclass(frozen=True)
class Global:
    """The tensor depends on every input position. ``pooled``: it is a spatial summary (global pooling,
    squeeze-excitation) rather than a map that mixes positions (attention, recurrence, flattening)."""

    pooled: bool = False


State = Local | Global
_MIXED = Global(False)
_POOLED = Global(True)


def _union(states: list[Local]) -> Local | Global:
    """The field of a merge (addition, concatenation): per axis the smallest window covering all inputs."""
    first = states[0]
    if any(s.axes != first.axes for s in states[1:]):
        return _MIXED
    size, jump, start = [], [], []
    for i in range(len(first.axes)):
        lo = min(s.start[i] for s in states)
        hi = max(s.start[i] + s.size[i] for s in states)
        size.append(hi - lo)
        jump.append(max(s.jump[i] for s in states))
        start.append(lo)
    return Local(first.axes, tuple(size), tuple(jump), tuple(start))


def _window(s: Local, ndim: int, nsp: int, kernel, stride, padding, dilation) -> Local:
    """A sliding window (conv or pool) over the last ``nsp`` dims: Araujo et al.'s recurrences
    r += (k_eff - 1) * j,  start -= p * j,  j *= s."""
    size, jump, start = list(s.size), list(s.jump), list(s.start)
    for i, a in enumerate(s.axes):
        w = a - (ndim - nsp)
        if w < 0:
            continue
        k_eff = dilation[w] * (kernel[w] - 1) + 1
        size[i] = size[i] + (k_eff - 1) * jump[i]
        start[i] = start[i] - padding[w] * jump[i]
        jump[i] = jump[i] * stride[w]
    return Local(s.axes, tuple(size), tuple(jump), tuple(start))


def _transposed(s: Local, ndim: int, nsp: int, kernel, stride, padding, dilation) -> Local:
    """A transposed conv: output o gathers inputs i with i*s - p + t*d = o. At most ceil(k_eff / s) of them
    (the field grows by that many input steps minus one, its largest value over positions); the jump
    divides by s; position 0's first input is ceil((p - (k_eff - 1)) / s)."""
    size, jump, start = list(s.size), list(s.jump), list(s.start)
    for i, a in enumerate(s.axes):
        w = a - (ndim - nsp)
        if w < 0:
            continue
        k_eff = dilation[w] * (kernel[w] - 1) + 1
        n = math.ceil(k_eff / stride[w])
        first = math.ceil((padding[w] - (k_eff - 1)) / stride[w])
        start[i] = start[i] + first * jump[i]
        size[i] = size[i] + (n - 1) * jump[i]
        jump[i] = jump[i] / stride[w]
    return Local(s.axes, tuple(size), tuple(jump), tuple(start))


def _resample(s: Local, in_shape, out_shape, taps: int) -> Local:
    """Interpolation (upsampling) or adaptive pooling from the shapes: each output reads ``taps``
    neighbouring inputs (nearest 1, linear 2, cubic 4; for adaptive pooling the widest bin) and the jump
    scales by in/out."""
    size, jump, start = list(s.size), list(s.jump), list(s.start)
    for i, a in enumerate(s.axes):
        n_in, n_out = in_shape[a], out_shape[a]
        if n_in == n_out:
            continue
        # adaptive pooling: bin o spans [floor(o * in / out), ceil((o + 1) * in / out))
        widest = max(math.ceil((o + 1) * n_in / n_out) - (o * n_in) // n_out for o in range(n_out))
        t = taps if taps > 0 else widest
        size[i] = size[i] + (t - 1) * jump[i]
        jump[i] = jump[i] * n_in / n_out
    return Local(s.axes, tuple(size), tuple(jump), tuple(start))


# ---- aten op rules ------------------------------------------------------------------------------------

def _ints(v, n: int, default=None) -> list[int]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        return list(default) if default is not None else [1] * n
    if isinstance(v, int):
        return [v] * n
    v = [int(x) for x in v]
    return v * n if len(v) == 1 else v


def _arg(args, kwargs, i: int, name: str, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _nsp(name: str) -> int:
    m = re.search(r"(\d)d", name)
    return int(m.group(1)) if m else 2


def _view_axes(in_shape, out_shape, axes) -> tuple[int, ...] | None:
    """Where each tracked axis lands after a view/reshape (same prefix product and size), None when an axis
    is merged with another (flattened)."""
    new = []
    for a in axes:
        pre, size = math.prod(in_shape[:a]), in_shape[a]
        p, found = 1, None
        for b, sb in enumerate(out_shape):
            if p == pre and sb == size:
                found = b
                break
            p *= sb
        if found is None:
            return None
        new.append(found)
    return tuple(new)


def _reduced_dims(args, kwargs, ndim: int, name: str) -> set[int]:
    dim = _arg(args, kwargs, 2 if name == "linalg_vector_norm" else 1, "dim")
    if dim is None or isinstance(dim, bool) or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        return set(range(ndim))
    if not isinstance(dim, (list, tuple)):
        if not isinstance(dim, int):
            return set(range(ndim))
        dim = [dim]
    return {d % ndim for d in dim}


_PASS = {"_to_copy", "clone", "detach", "alias", "lift_fresh", "lift_fresh_copy", "contiguous", "_copy_from",
         "native_dropout", "dropout", "feature_dropout", "native_batch_norm", "_native_batch_norm_legit",
         "_native_batch_norm_legit_no_training", "_native_batch_norm_legit_functional", "native_group_norm",
         "native_layer_norm", "_fused_rms_norm", "rms_norm", "type_as", "to", "_conj", "resolve_conj",
         "resolve_neg",
         "flip", "roll", "masked_fill", "hardtanh_", "_unsafe_masked_index"}
_NO_DATA = {"empty_like", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like", "randint_like",
            "new_empty", "new_zeros", "new_ones", "new_full", "new_empty_strided", "empty_strided", "fill_",
            "zero_",
            "bernoulli_", "normal_", "uniform_", "size", "sym_size", "stride", "sym_stride", "numel", "sym_numel",
            "_local_scalar_dense", "is_nonzero", "equal", "is_same_size", "_has_compatible_shallow_copy_type"}
_VIEWS = {"view", "_unsafe_view", "reshape", "_reshape_alias", "squeeze", "unsqueeze", "unflatten", "flatten",
          "view_as", "_reshape_copy", "view_copy", "squeeze_", "unsqueeze_"}
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "var", "std", "var_mean", "std_mean", "prod", "logsumexp",
           "norm", "linalg_vector_norm", "argmax", "argmin", "any", "all", "count_nonzero", "nansum", "nanmean",
           "median", "nanmedian", "mode"}
_ALONG = {"_softmax", "_log_softmax", "_safe_softmax", "softmax", "log_softmax", "cumsum", "cumprod", "sort",
          "topk", "cummax", "cummin", "logcumsumexp"}
_MATMUL = {"mm": (0, 1), "addmm": (1, 2), "bmm": (0, 1), "baddbmm": (1, 2)}
_UPSAMPLE_TAPS = {"nearest": 1, "linear": 2, "bilinear": 2, "trilinear": 2, "bicubic": 4}


_SHAPE_KEEPING = {"relu", "gelu", "silu", "sigmoid", "tanh", "leaky_relu", "hardtanh", "elu", "hardswish",
                  "hardsigmoid", "mish", "clone"}
_SAME_SHAPE_BINARY = {"add", "sub", "mul", "div"}


def _fast_meta(func, args, kwargs) -> Any:
    """The result of a shape-preserving op on meta tensors without running torch's Python meta functions
    (activations and norms are ~5 ms each there, which would make a ResNet-50 trace take seconds).
    None where the op must really run."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or x.device.type != "meta":
        return None
    name = func._overloadpacket.__name__
    base = name.rstrip("_")
    inplace = name.endswith("_") and not name.startswith("_")
    if base in _SHAPE_KEEPING and not any(isinstance(a, torch.Tensor) for a in args[1:]) and not kwargs:
        return x if inplace else torch.empty_like(x)
    if base in _SAME_SHAPE_BINARY and len(args) >= 2 and isinstance(args[1], torch.Tensor) \
            and args[1].shape == x.shape and args[1].dtype == x.dtype and args[1].device == x.device \
            and not kwargs and all(not isinstance(a, torch.Tensor) for a in args[2:]):
        return x if inplace else torch.empty_like(x)
    if name in ("native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit"):
        c = x.shape[1] if x.dim() > 1 else 0
        return torch.empty_like(x), x.new_empty((c,)), x.new_empty((c,))
    if name == "native_group_norm":
        n, groups = args[3], args[6]
        return torch.empty_like(x), x.new_empty((n, groups)), x.new_empty((n, groups))
    if name == "native_layer_norm":
        k = len(args[1])
        stat = tuple(x.shape[: x.dim() - k]) + (1,) * k
        return torch.empty_like(x), x.new_empty(stat), x.new_empty(stat)
    return None


class _RFMode(TorchDispatchMode):
    """Propagates a :data:`State` alongside every tensor computed from the traced input."""

    def __init__(self) -> None:
        super().__init__()
        self.states: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.largest: Local | None = None
        self.context: set[str] = set()
        self.unknown: set[str] = set()
        self.merges = 0  # additions or concatenations of two spatial maps: shortcuts

    def track(self, t: torch.Tensor, state: State) -> None:
        self.states[t] = state
        if isinstance(state, Local) and (self.largest is None or state.area() >= self.largest.area()):
            self.largest = state

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = _fast_meta(func, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        flat, _ = tree_flatten((args, kwargs))
        tracked = [(t, self.states[t]) for t in flat if isinstance(t, torch.Tensor) and t in self.states]
        name = func._overloadpacket.__name__
        if name in _NO_DATA or name.endswith("_like"):
            if isinstance(out, torch.Tensor) and out in self.states:  # overwritten in place
                del self.states[out]
            return out
        if not tracked:
            return out
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if not outs:
            return out
        try:
            state = self._rule(func, name, args, kwargs, outs[0], tracked)
        except Exception:  # noqa: BLE001 - a rule that does not fit an unusual call: be conservative, say so
            self.unknown.add(str(func))
            state = _MIXED
        for o in outs:
            if state is not None:
                self.track(o, state)
        return out

    # one rule per kind of op; ``tracked`` lists (tensor, state) for the inputs that come from the input
    def _rule(self, func, name: str, args, kwargs, out: torch.Tensor, tracked) -> State | None:
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        sx = self.states.get(x) if x is not None and x in self.states else None

        if name == "copy_":  # dst takes src's field, or none when src does not come from the input
            src = self.states.get(args[1]) if args[1] in self.states else None
            if src is None and args[0] in self.states:
                del self.states[args[0]]
            return src
        if name in _PASS:
            return sx if sx is not None else tracked[0][1]
        if torch.Tag.pointwise in func.tags or name in ("cat", "where", "stack", "hstack"):
            return self._pointwise(name, out, tracked, args, kwargs)
        if isinstance(sx, Global):
            if name in _REDUCE or name.startswith(("_adaptive", "adaptive")):
                return _POOLED if sx.pooled else sx
            return sx
        if name == "convolution":
            if len(tracked) > 1 or sx is None:  # weights computed from the input: a dynamic filter
                self.context.add("mixing")
                return _MIXED
            w = args[1]
            nsp = w.dim() - 2
            stride, padding, dilation = (_ints(args[i], nsp) for i in (3, 4, 5))
            kernel = list(w.shape[2:])
            if args[6]:
                return _transposed(sx, x.dim(), nsp, kernel, stride, padding, dilation)
            return _window(sx, x.dim(), nsp, kernel, stride, padding, dilation)
        if name.startswith(("max_pool", "avg_pool")):
            nsp = _nsp(name)
            kernel = _ints(args[1], nsp)
            stride = _ints(_arg(args, kwargs, 2, "stride"), nsp, kernel)
            padding = _ints(_arg(args, kwargs, 3, "padding", 0), nsp)
            dilation = _ints(_arg(args, kwargs, 4, "dilation", 1), nsp) if name.startswith("max") else [1] * nsp
            return _window(sx, x.dim(), nsp, kernel, stride, padding, dilation)
        if name.startswith(("_adaptive", "adaptive")):
            if all(out.shape[a] == 1 for a in sx.axes):
                return _POOLED
            return _resample(sx, x.shape, out.shape, 0)
        if "upsample" in name:
            modes = ("bicubic", "trilinear", "bilinear", "linear", "nearest")
            mode = next((m for m in modes if m in name), "nearest")
            return _resample(sx, x.shape, out.shape, _UPSAMPLE_TAPS[mode])
        if name in ("constant_pad_nd",) or name.startswith(("reflection_pad", "replication_pad")):
            pad = list(args[1])
            start = list(sx.start)
            for i, a in enumerate(sx.axes):
                k = x.dim() - 1 - a
                if 2 * k < len(pad):
                    start[i] -= pad[2 * k] * sx.jump[i]
            return Local(sx.axes, sx.size, sx.jump, tuple(start))
        if name == "slice":
            dim = _arg(args, kwargs, 1, "dim", 0) % x.dim()
            if dim not in sx.axes:
                return sx
            i = sx.axes.index(dim)
            n = x.shape[dim]
            s0 = _arg(args, kwargs, 2, "start", 0) or 0
            s0 = min(max(s0 + n if s0 < 0 else s0, 0), n)
            step = _arg(args, kwargs, 4, "step", 1) or 1
            start, jump = list(sx.start), list(sx.jump)
            start[i] += s0 * jump[i]
            jump[i] *= step
            return Local(sx.axes, sx.size, tuple(jump), tuple(start))
        if name in ("select", "unbind"):
            dim = _arg(args, kwargs, 1, "dim", 0) % x.dim()
            if dim in sx.axes:
                return _MIXED
            return Local(tuple(a - (a > dim) for a in sx.axes), sx.size, sx.jump, sx.start)
        if name in ("split", "split_with_sizes", "chunk", "unsafe_split", "unsafe_chunk", "narrow",
                    "split_with_sizes_copy", "tensor_split"):
            return sx
        if name in _VIEWS:
            axes = _view_axes(tuple(x.shape), tuple(out.shape), sx.axes)
            return _MIXED if axes is None else Local(axes, sx.size, sx.jump, sx.start)
        if name == "expand":
            shift = out.dim() - x.dim()
            return Local(tuple(a + shift for a in sx.axes), sx.size, sx.jump, sx.start)
        if name == "permute":
            dims = [d % x.dim() for d in args[1]]
            return Local(tuple(dims.index(a) for a in sx.axes), sx.size, sx.jump, sx.start)
        if name in ("transpose", "swapaxes", "t", "transpose_"):
            d0, d1 = ((args[1] % x.dim(), args[2] % x.dim()) if name != "t" else (0, 1))
            swap = {d0: d1, d1: d0}
            return Local(tuple(swap.get(a, a) for a in sx.axes), sx.size, sx.jump, sx.start)
        if name in _REDUCE:
            dims = _reduced_dims(args, kwargs, x.dim(), name)
            if dims & set(sx.axes):
                return _POOLED
            keep = out.dim() == x.dim()
            axes = sx.axes if keep else tuple(a - sum(d < a for d in dims) for a in sx.axes)
            return Local(axes, sx.size, sx.jump, sx.start)
        if name in _ALONG:
            dim = _arg(args, kwargs, 1, "dim", -1)
            dim = (dim if isinstance(dim, int) else -1) % x.dim()
            if name == "topk":
                dim = _arg(args, kwargs, 2, "dim", -1) % x.dim()
            if dim in sx.axes:
                self.context.add("mixing")
                return _MIXED
            return sx
        if name in _MATMUL:
            return self._matmul(name, args, out)
        if "attention" in name:
            self.context.add("mixing")
            return _MIXED
        self.unknown.add(str(func))
        self.context.add("mixing")
        return _MIXED

    def _pointwise(self, name: str, out: torch.Tensor, tracked, args, kwargs) -> State:
        """Elementwise ops and concatenation: the union of the local inputs. A pooled summary that joins a
        map (squeeze-excitation gates, ASPP's image branch) adds global context without changing the local
        field; a map that already mixes all positions makes the result global."""
        locals_: list[Local] = []
        globals_: list[Global] = []
        for t, s in tracked:
            if isinstance(s, Local):
                shift = out.dim() - t.dim() if name not in ("stack",) else 0
                locals_.append(Local(tuple(a + shift for a in s.axes), s.size, s.jump, s.start) if shift else s)
            else:
                globals_.append(s)
        if not locals_:
            return Global(all(g.pooled for g in globals_))
        if len(locals_) > 1 and name in ("add", "add_", "sub", "sub_", "cat"):
            self.merges += 1  # a residual addition, or a concatenation (U-Net skip, dense block, branches)
        res = _union(locals_)
        for g in globals_:
            if g.pooled:
                self.context.add("pooled")
            else:
                self.context.add("mixing")
                return _MIXED
        return res

    def _matmul(self, name: str, args, out: torch.Tensor) -> State:
        ia, ib = _MATMUL[name]
        a, b = args[ia], args[ib]
        sa = self.states.get(a) if a in self.states else None
        sb = self.states.get(b) if b in self.states else None
        if isinstance(sa, Global) or isinstance(sb, Global):
            return _MIXED if not all(isinstance(s, Global) and s.pooled for s in (sa, sb) if s is not None) \
                else _POOLED
        if sa is not None and sb is not None:
            self.context.add("mixing")
            return _MIXED
        s, contract = (sa, a.dim() - 1) if sa is not None else (sb, b.dim() - 2)
        if contract in s.axes:  # a dense layer over positions (a flatten head, an MLP): global from here on
            return _MIXED
        return s


# ---- the traced pass ------------------------------------------------------------------------------

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
    rf = _RFMode()

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
