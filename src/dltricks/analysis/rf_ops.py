"""The dispatch mode that carries a receptive-field state through every aten op of a traced pass.

Working at the aten level means residual additions, concatenations, upsampling and functional calls are
seen exactly like modules, so residual nets, multi-branch blocks and U-Nets need no special cases: a merge
takes the union of its inputs' fields (:mod:`dltricks.analysis.fields` holds the arithmetic).
"""

from __future__ import annotations

import math
import re

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from dltricks.analysis.fast_meta import fast_meta
from dltricks.analysis.fields import MIXED, POOLED, Global, Local, State, resample, transposed, union, window

__all__ = ["RFMode"]


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



class RFMode(TorchDispatchMode):
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
        out = fast_meta(func, args, kwargs)
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
            state = MIXED
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
                return POOLED if sx.pooled else sx
            return sx
        if name == "convolution":
            if len(tracked) > 1 or sx is None:  # weights computed from the input: a dynamic filter
                self.context.add("mixing")
                return MIXED
            w = args[1]
            nsp = w.dim() - 2
            stride, padding, dilation = (_ints(args[i], nsp) for i in (3, 4, 5))
            kernel = list(w.shape[2:])
            if args[6]:
                return transposed(sx, x.dim(), nsp, kernel, stride, padding, dilation)
            return window(sx, x.dim(), nsp, kernel, stride, padding, dilation)
        if name.startswith(("max_pool", "avg_pool")):
            nsp = _nsp(name)
            kernel = _ints(args[1], nsp)
            stride = _ints(_arg(args, kwargs, 2, "stride"), nsp, kernel)
            padding = _ints(_arg(args, kwargs, 3, "padding", 0), nsp)
            dilation = _ints(_arg(args, kwargs, 4, "dilation", 1), nsp) if name.startswith("max") else [1] * nsp
            return window(sx, x.dim(), nsp, kernel, stride, padding, dilation)
        if name.startswith(("_adaptive", "adaptive")):
            if all(out.shape[a] == 1 for a in sx.axes):
                return POOLED
            return resample(sx, x.shape, out.shape, 0)
        if "upsample" in name:
            modes = ("bicubic", "trilinear", "bilinear", "linear", "nearest")
            mode = next((m for m in modes if m in name), "nearest")
            return resample(sx, x.shape, out.shape, _UPSAMPLE_TAPS[mode])
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
                return MIXED
            return Local(tuple(a - (a > dim) for a in sx.axes), sx.size, sx.jump, sx.start)
        if name in ("split", "split_with_sizes", "chunk", "unsafe_split", "unsafe_chunk", "narrow",
                    "split_with_sizes_copy", "tensor_split"):
            return sx
        if name in _VIEWS:
            axes = _view_axes(tuple(x.shape), tuple(out.shape), sx.axes)
            return MIXED if axes is None else Local(axes, sx.size, sx.jump, sx.start)
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
                return POOLED
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
                return MIXED
            return sx
        if name in _MATMUL:
            return self._matmul(name, args, out)
        if "attention" in name:
            self.context.add("mixing")
            return MIXED
        self.unknown.add(str(func))
        self.context.add("mixing")
        return MIXED

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
        res = union(locals_)
        for g in globals_:
            if g.pooled:
                self.context.add("pooled")
            else:
                self.context.add("mixing")
                return MIXED
        return res

    def _matmul(self, name: str, args, out: torch.Tensor) -> State:
        ia, ib = _MATMUL[name]
        a, b = args[ia], args[ib]
        sa = self.states.get(a) if a in self.states else None
        sb = self.states.get(b) if b in self.states else None
        if isinstance(sa, Global) or isinstance(sb, Global):
            return MIXED if not all(isinstance(s, Global) and s.pooled for s in (sa, sb) if s is not None) \
                else POOLED
        if sa is not None and sb is not None:
            self.context.add("mixing")
            return MIXED
        s, contract = (sa, a.dim() - 1) if sa is not None else (sb, b.dim() - 2)
        if contract in s.axes:  # a dense layer over positions (a flatten head, an MLP): global from here on
            return MIXED
        return s
