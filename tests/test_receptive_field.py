"""Receptive fields: the published values (Araujo et al., Distill 2019), exact values for dilated,
residual, multi-branch and U-Net graphs, and agreement with the gradient-based measurement."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dltricks.analysis import empirical_receptive_field, receptive_field
from dltricks.errors import DltricksError
from dltricks.nn import ASPP, BasicBlock, Bottleneck, SelfAttention, SqueezeExcite, build_model
from dltricks.nn.models.resnet import resnet50_spec
from dltricks.nn.models.unet import UNetSpec


def vgg16() -> nn.Module:
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers: list[nn.Module] = []
    c = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(nn.Sequential(*layers), nn.AdaptiveAvgPool2d(7), nn.Flatten(),
                         nn.Linear(512 * 49, 4096), nn.ReLU(), nn.Linear(4096, 1000))


def alexnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(True), nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d(6), nn.Flatten(), nn.Linear(256 * 36, 4096), nn.ReLU(True), nn.Linear(4096, 1000))


def slim_resnet50_v1() -> nn.Module:
    """TF-slim's resnet_v1_50 as in the Distill table: the stride sits on the 3x3 of each block's *last* unit."""
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    c = 64
    for width, units, stride in [(64, 3, 2), (128, 4, 2), (256, 6, 2), (512, 3, 1)]:
        for u in range(units):
            layers.append(Bottleneck(c, width * 4, 2, stride=stride if u == units - 1 else 1, norm="none"))
            c = width * 4
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 1000))


def _meta(factory):
    with torch.device("meta"):  # the trace never needs real weights: build big nets instantly
        return factory()


def test_vgg16_published_values() -> None:
    rf = receptive_field(_meta(vgg16), (3, 224, 224))
    assert rf.size == (212, 212) and rf.stride == (32, 32)
    assert rf.padding == (90, 90)  # Araujo et al.: effective padding 90
    assert rf.ratio == pytest.approx((212 / 224, 212 / 224))
    assert not rf.context and not rf.unknown_ops


def test_alexnet_published_values() -> None:
    rf = receptive_field(_meta(alexnet), (3, 224, 224))
    assert rf.size == (195, 195) and rf.stride == (32, 32)


def test_resnet50_published_and_torchvision_layouts() -> None:
    assert receptive_field(_meta(slim_resnet50_v1), (3, 224, 224)).size == (483, 483)  # the Distill table
    # torchvision's v1.5 layout puts the stride on each stage's first unit: 427 (computed by hand)
    rf = receptive_field(_meta(lambda: build_model(resnet50_spec(), (3, 224, 224), 1000)), (3, 224, 224))
    assert rf.size == (427, 427) and rf.stride == (32, 32)
    assert len([r for r in rf.layers if r.kind == "Conv2d"]) == 53


def test_dilated_stack_is_exact() -> None:
    net = nn.Sequential(*[nn.Conv1d(1 if i == 0 else 4, 4, 3, padding=d, dilation=d)
                          for i, d in enumerate((1, 2, 4))])
    rf = receptive_field(net, (1, 64))
    assert rf.size == (15,) and rf.stride == (1,) and rf.padding == (7,)
    assert [r.rf_size for r in rf.layers] == [(3,), (7,), (15,)]
    # dilation after downsampling multiplies with the stride: 15 + 2 * (2 * 2) = 23... and a dilated pool
    net2 = nn.Sequential(net, nn.MaxPool1d(2), nn.Conv1d(4, 4, 3, dilation=2), nn.MaxPool1d(3, 1, dilation=2))
    rf2 = receptive_field(net2, (1, 64))
    assert rf2.size == (15 + 1 + 2 * 2 * 2 + 2 * 2 * 2,) and rf2.stride == (2,)


def test_residual_takes_the_largest_path() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), BasicBlock(8, 8, 2, norm="none"),
                        BasicBlock(8, 16, 2, stride=2, norm="none"))
    rf = receptive_field(net, (3, 32, 32))
    # 3, then two 3x3 (7, 7+2 = 9... ): 3 -> 5 -> 7 -> (stride-2 conv) 9 -> 13 at stride 2
    assert rf.size == (13, 13) and rf.stride == (2, 2)


class Inception(nn.Module):
    """Parallel 1x1, 3x3 and 5x5 branches concatenated: the field is the widest branch's."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.ModuleList(nn.Conv2d(3, 4, k, padding=k // 2) for k in (1, 3, 5))

    def forward(self, x):
        return torch.cat([b(x) for b in self.b], 1)


def test_multi_branch_blocks() -> None:
    assert receptive_field(Inception(), (3, 16, 16)).size == (5, 5)
    aspp = ASPP(3, 4, rates=(2, 6), dims=2, norm="none")
    rf = receptive_field(aspp, (3, 32, 32))
    assert rf.size == (13, 13)  # the rate-6 branch: 1 + 2 * 6
    assert rf.context == ("pooled",)  # the image-pooling branch brings global context


def test_unet_field_matches_hand_count_and_gradients() -> None:
    torch.manual_seed(0)
    model = build_model(UNetSpec(channels=[4, 4, 4], norm="none"), (1, 64, 64), 2)
    rf = receptive_field(model, (1, 64, 64))
    # enc0 3x3x2: 5 | pool: 6 (j2) | enc1: 14 | pool: 16 (j4) | bottleneck: 32 | up | dec1: 40 | up | dec0: 44
    assert rf.size == (44, 44) and rf.stride == (1, 1)
    emp = empirical_receptive_field(model, (1, 96, 96), samples=4, positions=4)
    assert emp.size == (44, 44) and not any(emp.clipped)


def test_empirical_agrees_on_strided_dilated_net() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv1d(8, 8, 3, padding=2, dilation=2), nn.ReLU(), nn.AvgPool1d(2),
                        nn.Conv1d(8, 8, 5, padding=2), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 3))
    exact = receptive_field(net, (1, 128))
    emp = empirical_receptive_field(net, (1, 128), samples=8)
    assert exact.size == (3 + 8 + 2 + 16,) and exact.stride == (4,)
    assert emp.size == exact.size and emp.layer == "5"  # probed at the last spatial map, before the pool
    clipped = empirical_receptive_field(net, (1, 16), samples=2)
    assert any(clipped.clipped)


def test_3d_and_anisotropic_kernels() -> None:
    net = nn.Sequential(nn.Conv3d(1, 2, (1, 3, 3), padding=(0, 1, 1)), nn.Conv3d(2, 2, 3, padding=1),
                        nn.MaxPool3d((1, 2, 2)))
    rf = receptive_field(net, (1, 8, 16, 16))
    assert rf.size == (3, 6, 6) and rf.stride == (1, 2, 2)


def test_upsampling_divides_the_stride() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3, 2, 1), nn.Upsample(scale_factor=2, mode="bilinear"),
                        nn.ConvTranspose2d(2, 2, 2, 2))
    rf = receptive_field(net, (1, 16, 16))
    # conv 3 (j2) -> bilinear reads 2 neighbours: 3 + 2 = 5 (j1) -> transposed k2 s2 reads one input (j 0.5)
    assert rf.size == (5, 5)
    assert [r.rf_stride for r in rf.layers] == [(2, 2), (1, 1), (0.5, 0.5)]


def test_context_flags_for_se_and_attention() -> None:
    se = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), SqueezeExcite(8, 2, 2))
    rf = receptive_field(se, (3, 16, 16))
    assert rf.size == (3, 3) and rf.context == ("pooled",) and not rf.sees_everything
    att = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), SelfAttention(8, 2, 2))
    rf = receptive_field(att, (3, 16, 16))
    assert rf.size == (3, 3) and "mixing" in rf.context and rf.sees_everything


def test_dense_and_recurrent_models_see_the_whole_input() -> None:
    from dltricks.nn.models.sequence import RNNSpec, TransformerSpec

    mlp = nn.Sequential(nn.Flatten(), nn.Linear(40, 8), nn.ReLU(), nn.Linear(8, 2))
    rf = receptive_field(mlp, (1, 40))
    assert rf.size == (40,) and rf.sees_everything and not rf.context
    assert rf.layers[-1].rf_size is None  # the output depends on every input position
    for spec in (RNNSpec(hidden=4), TransformerSpec(d_model=8, heads=2, dim_feedforward=8)):
        assert receptive_field(build_model(spec, (1, 40), 3), (1, 40)).size == (40,)
    # a 1x1-conv net with global average pooling is a bag of pixels: field 1
    bag = nn.Sequential(nn.Conv1d(1, 4, 1), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 2))
    assert receptive_field(bag, (1, 40)).size == (1,)
    # a flatten head does not make the conv field global (VGG's 212 is measured with its dense head)
    head = nn.Sequential(nn.Conv1d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 38, 2))
    rf = receptive_field(head, (1, 40))
    assert rf.size == (3,) and not rf.context


def test_bad_input_shape() -> None:
    with pytest.raises(DltricksError):
        receptive_field(nn.Conv1d(1, 1, 3), (40,))
    with pytest.raises(DltricksError, match="does not run"):
        receptive_field(nn.Conv2d(3, 1, 3), (1, 8, 8))  # wrong channel count
