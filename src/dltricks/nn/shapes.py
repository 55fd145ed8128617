"""Shape inference without computation: the output shape of a module, worked out by arithmetic.

The layers and blocks a model builder stacks (convolutions, pools, norms, activations, the residual,
squeeze-excitation, attention and pyramid blocks of :mod:`dltricks.nn.blocks`, and any ``nn.Sequential``
of them) have a rule here: the sizes torch would compute, and the same checks (channels that do not
match, a map too small for a kernel). A module without a rule runs on meta tensors instead (no memory,
no FLOPs), which gives the same answer but costs seconds the first time: meta kernels import
``torch._dynamo`` and sympy.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch import nn

from dltricks.nn.layers import BuildError

Shape = tuple[int, ...]  # a whole batch: (N, C, *spatial), or (N, F) for vectors


class _Mismatch(Exception):
    """The input does not fit a layer; the message says why, in torch's words where it has some."""


def output_shape(module: nn.Module, in_shape: tuple[int, ...], batch: int = 2) -> tuple[int, ...]:
    """The shape of ``module``'s output for one sample of shape ``in_shape`` (no batch dimension).

    Raises :class:`BuildError` (``input of shape ... does not fit this model: ...``) where torch would
    fail on such an input. A batch of 2 is assumed, as BatchNorm in training mode needs more than one
    value per channel."""
    try:
        out = infer(module, (batch, *in_shape))
    except _Mismatch as e:
        raise BuildError(f"input of shape {tuple(in_shape)} does not fit this model: {e}") from None
    return tuple(out[1:])


def meta_output_shape(module: nn.Module, in_shape: tuple[int, ...], batch: int = 2) -> tuple[int, ...]:
    """:func:`output_shape` by running ``module`` on meta tensors through :func:`torch.func.functional_call`
    (its own weights are never touched or copied): right for any module, but slow to start."""
    try:
        return tuple(_run_on_meta(module, (batch, *in_shape))[1:])
    except _Mismatch as e:
        raise BuildError(f"input of shape {tuple(in_shape)} does not fit this model: {e}") from None


def _run_on_meta(module: nn.Module, shape: Shape) -> Shape:
    meta = {name: torch.empty_like(t, device="meta")
            for name, t in itertools.chain(module.named_parameters(), module.named_buffers())}
    x = torch.empty(*shape, device="meta")
    try:
        with torch.no_grad():
            out = torch.func.functional_call(module, meta, (x,))
    except (RuntimeError, ValueError) as e:
        raise _Mismatch(str(e).splitlines()[0]) from None
    return tuple(out.shape)


# ---- the rules -------------------------------------------------------------------------------------

Rule = Callable[[nn.Module, Shape], Shape]
_RULES: dict[type, Rule] = {}
_blocks_registered = False


def rule(*types: type) -> Callable[[Rule], Rule]:
    """Register the shape rule of ``types`` (and of their subclasses that keep the same ``forward``)."""
    def deco(fn: Rule) -> Rule:
        for t in types:
            _RULES[t] = fn
        return fn
    return deco


def infer(module: nn.Module, shape: Shape) -> Shape:
    """The output shape of ``module`` on a batch of shape ``shape``; meta tensors where no rule applies."""
    fn = _rule_for(type(module))
    return fn(module, shape) if fn is not None else _run_on_meta(module, shape)


def _rule_for(cls: type) -> Rule | None:
    if not _blocks_registered:
        _register_blocks()
    owner = next((c for c in cls.__mro__ if "forward" in c.__dict__), nn.Module)  # whose forward runs
    for base in cls.__mro__:
        fn = _RULES.get(base)
        if fn is not None:
            # a subclass that computes something else than the class the rule is for gets no rule;
            # torch's own subclasses (Conv1d of _ConvNd, ...) compute what the rule says
            same = owner is base or (issubclass(owner, base) and owner.__module__.startswith("torch."))
            return fn if same else None
    return None


def _need_dims(m: nn.Module, shape: Shape, dims: int) -> None:
    if len(shape) != dims + 2:
        raise _Mismatch(f"{type(m).__name__} expects (N, C, {dims} spatial dims) input, got {len(shape)}D")


def _channels(m: nn.Module, shape: Shape, expected: int) -> None:
    if shape[1] != expected:
        raise _Mismatch(f"{type(m).__name__} expected input to have {expected} channels, but got {shape[1]}")


def _tuple(v, n: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _too_small(m: nn.Module, shape: Shape, out: tuple[int, ...]) -> None:
    if any(s < 1 for s in out):
        raise _Mismatch(f"{type(m).__name__}: given input size {tuple(shape[2:])}, calculated output size "
                        f"{out} is too small")


@rule(nn.Sequential)
def _sequential(m: nn.Sequential, shape: Shape) -> Shape:
    for child in m:
        shape = infer(child, shape)
    return shape


@rule(nn.Identity, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Tanh, nn.Sigmoid, nn.Softmax,
      nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
def _same(m: nn.Module, shape: Shape) -> Shape:
    return shape


@rule(nn.modules.batchnorm._BatchNorm)
def _batch_norm(m: nn.Module, shape: Shape) -> Shape:
    _channels(m, shape, m.num_features)
    return shape


@rule(nn.modules.instancenorm._InstanceNorm)
def _instance_norm(m: nn.Module, shape: Shape) -> Shape:
    if m.affine or m.track_running_stats:  # without either torch only warns
        _channels(m, shape, m.num_features)
    if m.training and math.prod(shape[2:]) == 1:
        raise _Mismatch(f"Expected more than 1 spatial element when training, got input size {shape}")
    return shape


@rule(nn.GroupNorm)
def _group_norm(m: nn.GroupNorm, shape: Shape) -> Shape:
    _channels(m, shape, m.num_channels)
    return shape


@rule(nn.LayerNorm)
def _layer_norm(m: nn.LayerNorm, shape: Shape) -> Shape:
    k = len(m.normalized_shape)
    if tuple(shape[-k:]) != tuple(m.normalized_shape):
        raise _Mismatch(f"LayerNorm expects the last dims to be {tuple(m.normalized_shape)}, got {shape}")
    return shape


@rule(nn.modules.conv._ConvNd)
def _conv(m: nn.modules.conv._ConvNd, shape: Shape) -> Shape:
    dims = len(m.kernel_size)
    _need_dims(m, shape, dims)
    _channels(m, shape, m.in_channels)
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        out = tuple((i - 1) * s - 2 * p + d * (k - 1) + op + 1 for i, k, s, p, d, op in
                    zip(shape[2:], m.kernel_size, m.stride, m.padding, m.dilation, m.output_padding))
    elif m.padding == "same":
        out = tuple(shape[2:])
    else:
        pad = (0,) * dims if m.padding == "valid" else m.padding
        out = tuple((i + 2 * p - d * (k - 1) - 1) // s + 1 for i, k, s, p, d in
                    zip(shape[2:], m.kernel_size, m.stride, pad, m.dilation))
    _too_small(m, shape, out)
    return (shape[0], m.out_channels, *out)


def _pool_size(i: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    """torch's pooling_output_shape: a window that would start in the right padding is dropped."""
    span = i + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)
    out = span // s + 1
    if ceil and (out - 1) * s >= i + p:
        out -= 1
    return out


@rule(nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
def _pool(m: nn.Module, shape: Shape) -> Shape:
    dims = int(type(m).__name__[-2])
    _need_dims(m, shape, dims)
    k = _tuple(m.kernel_size, dims)
    s = _tuple(m.stride if m.stride is not None else m.kernel_size, dims)
    p = _tuple(m.padding, dims)
    d = _tuple(getattr(m, "dilation", 1), dims)
    if any(pi > (di * (ki - 1) + 1) // 2 for pi, ki, di in zip(p, k, d)):
        raise _Mismatch(f"{type(m).__name__}: pad should be at most half of effective kernel size")
    out = tuple(_pool_size(i, ki, si, pi, di, m.ceil_mode) for i, ki, si, pi, di in zip(shape[2:], k, s, p, d))
    _too_small(m, shape, out)
    return (*shape[:2], *out)


@rule(nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
      nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
def _adaptive_pool(m: nn.Module, shape: Shape) -> Shape:
    dims = int(type(m).__name__[-2])
    _need_dims(m, shape, dims)
    size = _tuple(m.output_size, dims)
    return (*shape[:2], *(i if o is None else o for i, o in zip(shape[2:], size)))


@rule(nn.Flatten)
def _flatten(m: nn.Flatten, shape: Shape) -> Shape:
    start, end = m.start_dim % len(shape), m.end_dim % len(shape)
    return (*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:])


@rule(nn.Linear)
def _linear(m: nn.Linear, shape: Shape) -> Shape:
    if shape[-1] != m.in_features:
        raise _Mismatch(f"mat1 and mat2 shapes cannot be multiplied ({math.prod(shape[:-1])}x{shape[-1]} and "
                        f"{m.in_features}x{m.out_features})")
    return (*shape[:-1], m.out_features)


def _add(a: Shape, b: Shape) -> Shape:
    """The broadcast shape of ``a + b`` (torch's rules), or torch's complaint where they do not broadcast."""
    n = max(len(a), len(b))
    a1, b1 = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for i, (x, y) in enumerate(zip(a1, b1)):
        if x != y and 1 not in (x, y):
            raise _Mismatch(f"The size of tensor a ({x}) must match the size of tensor b ({y}) at "
                            f"non-singleton dimension {i}")
        out.append(y if x == 1 else x)
    return tuple(out)


def _cat_channels(shapes: list[Shape]) -> Shape:
    first = shapes[0]
    for s in shapes[1:]:
        if len(s) != len(first) or s[:1] + s[2:] != first[:1] + first[2:]:
            raise _Mismatch(f"Sizes of tensors must match except in dimension 1: {first} and {s}")
    return (first[0], sum(s[1] for s in shapes), *first[2:])


def _register_blocks() -> None:
    """Rules for the blocks of :mod:`dltricks.nn.blocks`, registered on first use (they import this
    package's siblings, which must be importable without it)."""
    global _blocks_registered
    _blocks_registered = True
    from dltricks.nn.blocks import (
        ASPP,
        SPP,
        DualPathway,
        ImagePool,
        PreActBlock,
        Residual,
        SelfAttention,
        SqueezeExcite,
        WSConv,
    )

    @rule(WSConv)
    def _ws_conv(m: WSConv, shape: Shape) -> Shape:
        return infer(m.conv, shape)

    @rule(Residual)
    def _residual(m: Residual, shape: Shape) -> Shape:
        return infer(m.act, _add(infer(m.body, shape), infer(m.shortcut, shape)))

    @rule(PreActBlock)
    def _pre_act(m: PreActBlock, shape: Shape) -> Shape:
        pre = infer(m.pre, shape)
        shortcut = infer(m.shortcut, pre) if m.project else shape
        out = infer(m.se, infer(m.conv2, infer(m.drop, infer(m.conv1, pre))))
        return _add(out, shortcut)

    @rule(SqueezeExcite)
    def _squeeze_excite(m: SqueezeExcite, shape: Shape) -> Shape:
        squeezed = (*shape[:2], *(1,) * (len(shape) - 2))
        return _add(shape, infer(m.fc2, infer(m.act, infer(m.fc1, squeezed))))

    @rule(SelfAttention)
    def _self_attention(m: SelfAttention, shape: Shape) -> Shape:
        tokens = (shape[0], math.prod(shape[2:]), shape[1])
        infer(m.norm, tokens)
        if shape[1] != m.attn.embed_dim:
            raise _Mismatch(f"was expecting embedding dimension of {m.attn.embed_dim}, but got {shape[1]}")
        return shape

    @rule(SPP)
    def _spp(m: SPP, shape: Shape) -> Shape:
        return (shape[0], sum(math.prod(infer(p, shape)[1:]) for p in m.pools))

    @rule(ImagePool)
    def _image_pool(m: ImagePool, shape: Shape) -> Shape:
        squeezed = (*shape[:2], *(1,) * (len(shape) - 2))
        s = infer(m.act, infer(m.conv, squeezed))
        return (*s[:2], *shape[2:])

    @rule(ASPP)
    def _aspp(m: ASPP, shape: Shape) -> Shape:
        return infer(m.project, _cat_channels([infer(b, shape) for b in m.branches]))

    @rule(DualPathway)
    def _dual_pathway(m: DualPathway, shape: Shape) -> Shape:
        full = infer(m.full, shape)
        low = infer(m.low, infer(m.down, shape))
        return infer(m.fuse, _cat_channels([full, (*low[:2], *full[2:])]))
