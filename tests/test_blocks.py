"""Blocks: every block runs forward and backward in 1D, 2D and 3D with every norm, keeps the shapes its
docstring promises, and does what its name says (SPP's fixed length, SE's per-channel gate, attention's
global reach, the 3x3 stack's equal field with fewer weights)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dltricks.errors import DltricksError
from dltricks.nn import (
    ASPP,
    SPP,
    BasicBlock,
    Bottleneck,
    ConvNormAct,
    DualPathway,
    LargeKernelConv,
    PreActBlock,
    SelfAttention,
    SeparableConv,
    SqueezeExcite,
    WSConv,
    downsample,
    layers,
    make_conv,
)

DIMS = (1, 2, 3)
NORMS = layers.NORMS
SIZE = {1: 12, 2: 8, 3: 6}  # tiny maps: 3D is 6^3 = 216 positions


def _x(dims: int, ch: int = 4, n: int = 2, size: int | None = None) -> torch.Tensor:
    s = size or SIZE[dims]
    return torch.randn(n, ch, *([s] * dims), requires_grad=True)


# block name -> (factory(dims, norm), expected output channels, spatial divisor)
BLOCKS = {
    "conv_norm_act": (lambda d, n: ConvNormAct(4, 6, 3, d, norm=n), 6, 1),
    "conv_norm_act_preact_ws_drop": (lambda d, n: ConvNormAct(4, 6, 3, d, norm=n, order="norm-act-conv",
                                                              weight_standardization=True, dropout=0.2), 6, 1),
    "conv_separable_strided": (lambda d, n: ConvNormAct(4, 6, 3, d, stride=2, norm=n, separable=True,
                                                        act="gelu"), 6, 2),
    "large_kernel": (lambda d, n: LargeKernelConv(4, 6, 5, d, norm=n, act="silu"), 6, 1),
    "large_kernel_stack_3x3": (lambda d, n: LargeKernelConv(4, 6, 5, d, stack_3x3=True, stride=2, norm=n,
                                                            act="leaky_relu"), 6, 2),
    "basic_block": (lambda d, n: BasicBlock(4, 6, d, stride=2, norm=n, se=True), 6, 2),
    "bottleneck": (lambda d, n: Bottleneck(4, 8, d, norm=n, dilation=2), 8, 1),
    "preact_block": (lambda d, n: PreActBlock(4, 6, d, stride=2, norm=n, stack_3x3=True, kernel_size=5), 6, 2),
    "squeeze_excite": (lambda d, n: SqueezeExcite(4, 2, d), 4, 1),
    "self_attention": (lambda d, n: SelfAttention(4, 2, d, init_scale=1.0), 4, 1),
    "aspp": (lambda d, n: ASPP(4, 6, (1, 2), d, norm=n), 6, 1),
    "dual_pathway": (lambda d, n: DualPathway(4, 6, d, factor=3, norm=n), 6, 1),
    "downsample_stride": (lambda d, n: downsample("stride", 4, d, norm=n), 4, 2),
    "downsample_max": (lambda d, n: downsample("max", 4, d), 4, 2),
    "downsample_avg": (lambda d, n: downsample("avg", 4, d), 4, 2),
}


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_block_forward_backward(block: str, dims: int, norm: str) -> None:
    factory, out_ch, div = BLOCKS[block]
    torch.manual_seed(0)
    m = factory(dims, norm)
    x = _x(dims)
    y = m(x)
    assert y.shape == (2, out_ch, *([SIZE[dims] // div] * dims))
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{block}: no gradient for {name}"
    m.eval()
    with torch.no_grad():
        assert m(x).shape == y.shape  # eval mode (running statistics) works too


@pytest.mark.parametrize("dims", DIMS)
def test_spp_gives_fixed_length_for_any_size(dims: int) -> None:
    spp = SPP((1, 2, 4), dims)
    lengths = {spp(torch.randn(2, 3, *([s] * dims))).shape[1] for s in (4, 5, 9)}
    assert lengths == {spp.out_features(3)} == {3 * (1 + 2 ** dims + 4 ** dims)}
    with pytest.raises(DltricksError):
        SPP((0, 2), dims)


@pytest.mark.parametrize("dims", (2, 3))
def test_stack_3x3_same_field_fewer_weights(dims: int) -> None:
    from dltricks.analysis import receptive_field

    big = LargeKernelConv(8, 8, 7, dims, norm="none")
    stack = LargeKernelConv(8, 8, 7, dims, stack_3x3=True, norm="none")
    assert len(big) == 1 and len(stack) == 3
    n_big = sum(p.numel() for p in big.parameters())
    n_stack = sum(p.numel() for p in stack.parameters())
    assert n_stack < n_big  # 3 * 3^d < 7^d per channel pair for d >= 2
    shape = (8, *([24] * dims))
    assert receptive_field(big, shape).size == receptive_field(stack, shape).size == (7,) * dims
    # with dilation the stack still matches: 1 + 3 * 2 * 2 = 13 = 2 * (7 - 1) + 1
    d_big = LargeKernelConv(8, 8, 7, dims, dilation=2, norm="none")
    d_stack = LargeKernelConv(8, 8, 7, dims, dilation=2, stack_3x3=True, norm="none")
    assert receptive_field(d_big, shape).size == receptive_field(d_stack, shape).size == (13,) * dims


def test_separable_has_fewer_weights_and_same_shape() -> None:
    sep = SeparableConv(16, 32, 3, 2)
    full = make_conv(16, 32, 3, 2)
    x = torch.randn(1, 16, 8, 8)
    assert sep(x).shape == full(x).shape
    assert sum(p.numel() for p in sep.parameters()) < sum(p.numel() for p in full.parameters()) / 4


def test_weight_standardization_uses_standardised_filters() -> None:
    torch.manual_seed(0)
    ws = make_conv(3, 5, 3, 2, weight_standardization=True)
    assert isinstance(ws, WSConv)
    x = torch.randn(2, 3, 7, 7)
    w = ws.conv.weight
    std = torch.sqrt(w.var((1, 2, 3), keepdim=True, unbiased=False) + 1e-5)
    w_hat = (w - w.mean((1, 2, 3), keepdim=True)) / std
    torch.testing.assert_close(ws(x), F.conv2d(x, w_hat, ws.conv.bias, padding=1))


def test_squeeze_excite_is_a_per_channel_gate() -> None:
    se = SqueezeExcite(6, 2, 2)
    x = torch.rand(2, 6, 5, 5) + 0.5
    gate = se(x) / x
    assert torch.allclose(gate, gate[..., :1, :1].expand_as(gate), atol=1e-6)  # same at every position
    assert ((gate > 0) & (gate < 1)).all()


def test_self_attention_reaches_every_position() -> None:
    torch.manual_seed(0)
    att = SelfAttention(8, 2, 2, init_scale=1.0).eval()
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    att(x)[0, :, 0, 0].sum().backward()
    assert x.grad[0, :, 5, 5].abs().sum() > 0  # the far corner influences the first position
    identity = SelfAttention(8, 2, 2)  # SAGAN init: starts as the identity
    torch.testing.assert_close(identity(x), x)
    with pytest.raises(DltricksError):
        SelfAttention(6, 4)


@pytest.mark.parametrize("dims", DIMS)
def test_dual_pathway_keeps_size_for_sizes_not_divisible(dims: int) -> None:
    m = DualPathway(2, 4, dims, factor=3, depth=1, norm="group")
    x = torch.randn(1, 2, *([7] * dims))
    assert m(x).shape == (1, 4, *([7] * dims))


def test_spatial_dropout_drops_whole_channels() -> None:
    m = ConvNormAct(1, 64, 1, 2, norm="none", act="none", dropout=0.5)
    with torch.no_grad():
        m[0].weight.fill_(1.0)
        m[0].bias.zero_()
    y = m(torch.ones(1, 1, 4, 4))
    per_channel = y[0].flatten(1)
    zero = (per_channel == 0).all(1)
    assert 0 < zero.sum() < 64
    assert ((per_channel != 0).all(1) | zero).all()  # each channel is all kept or all dropped


def test_zero_init_residual_starts_as_identity() -> None:
    block = BasicBlock(4, 4, 2, zero_init=True).eval()
    x = torch.rand(1, 4, 5, 5)  # non-negative: relu(0 + x) == x
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("bad", [
    lambda: ConvNormAct(4, 4, norm="batchy"),
    lambda: ConvNormAct(4, 4, act="swishy"),
    lambda: ConvNormAct(4, 4, dims=4),
    lambda: ConvNormAct(4, 4, order="act-conv"),
    lambda: LargeKernelConv(4, 4, 6, stack_3x3=True),
    lambda: make_conv(4, 4, 3, 2, padding="full"),
    lambda: downsample("bilinear", 4, 2),
    lambda: layers.dropout(2, 1.5),
])
def test_user_mistakes_raise_one_line_errors(bad) -> None:
    with pytest.raises(DltricksError) as e:
        bad()
    assert "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)  # also catchable the Python way
