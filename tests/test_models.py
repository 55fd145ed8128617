"""Model builders: every registered model builds from its recipe section, runs forward and backward on
its data's shapes (1D/2D/3D where it applies), returns the promised output shape, and the cnn's existing
keys keep their default architecture."""

from __future__ import annotations

import pytest
import torch

from dltricks.errors import DltricksError
from dltricks.nn import build_model, models
from dltricks.nn.models.cnn import CNNSpec
from dltricks.nn.models.mlp import MLPSpec
from dltricks.nn.models.resnet import ResNetSpec, resnet50_spec
from dltricks.nn.models.sequence import RNNSpec, TransformerSpec
from dltricks.nn.models.unet import UNetSpec
from dltricks.recipe import Recipe

SHAPES = {1: (2, 16), 2: (2, 12, 12), 3: (1, 8, 8, 8)}


def _run(model: torch.nn.Module, shape: tuple[int, ...], n: int = 2) -> torch.Tensor:
    x = torch.randn(n, *shape, requires_grad=True)
    y = model(x)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    return y


def test_all_models_registered() -> None:
    assert set(models()) >= {"mlp", "cnn", "resnet", "unet", "rnn", "transformer"}


CLASSIFIERS = {
    "cnn_plain": CNNSpec(channels=[4, 8]),
    "cnn_tricks": CNNSpec(channels=[4, 8], residual=True, se=True, se_reduction=2, attention=True,
                          attention_heads=2, head="spp", stack_3x3=True, kernel_size=5, separable=True,
                          spatial_dropout=0.1, norm="group", weight_standardization=True),
    "cnn_stride_dilated_flatten": CNNSpec(channels=[4, 8], downsample="stride", dilation=2, head="flatten",
                                          norm="instance", blocks_per_stage=2),
    "cnn_valid_padding": CNNSpec(channels=[4, 8], padding="valid", norm="layer", head="max"),
    "resnet_basic": ResNetSpec(channels=[4, 8], layers=[1, 1], stem_channels=4),
    "resnet_bottleneck_se": ResNetSpec(block="bottleneck", channels=[2, 4], layers=[1, 1], stem_channels=4,
                                       se=True, downsample="max", norm="group"),
    "resnet_preact": ResNetSpec(block="preact", channels=[4, 8], layers=[1, 2], stem_channels=4, stem_kernel=5,
                                stack_3x3=True, stem_pool=True, spatial_dropout=0.1),
    "mlp": MLPSpec(hidden=[8]),
}


@pytest.mark.parametrize("dims", (1, 2, 3))
@pytest.mark.parametrize("case", sorted(CLASSIFIERS))
def test_classifiers_in_every_dimension(case: str, dims: int) -> None:
    torch.manual_seed(0)
    model = build_model(CLASSIFIERS[case], SHAPES[dims], 5)
    y = _run(model, SHAPES[dims])
    assert y.shape == (2, 5)


@pytest.mark.parametrize("dims", (1, 2, 3))
@pytest.mark.parametrize("spec", [
    UNetSpec(channels=[4, 8]),
    UNetSpec(channels=[4, 8, 8], skip_connections=False, downsample="stride", upsample="linear", norm="instance"),
    UNetSpec(channels=[4, 8], dilated_bottleneck=True, dual_pathway=True, norm="group",
             weight_standardization=True, dropout=0.1, upsample="nearest", downsample="avg"),
], ids=["default", "no_skips_stride_linear", "dilated_dual_pathway"])
def test_unet_returns_maps_at_input_resolution(spec: UNetSpec, dims: int) -> None:
    torch.manual_seed(0)
    shape = SHAPES[dims]
    model = build_model(spec, shape, 3)
    assert _run(model, shape).shape == (2, 3, *shape[1:])
    odd = (shape[0], *[s - 1 for s in shape[1:]])  # not divisible by 2^levels: padded and cropped back
    with torch.no_grad():
        assert model(torch.randn(1, *odd)).shape == (1, 3, *odd[1:])


def test_unet_skip_connections_change_the_decoder() -> None:
    on = build_model(UNetSpec(channels=[4, 8]), (1, 8, 8), 2)
    off = build_model(UNetSpec(channels=[4, 8], skip_connections=False), (1, 8, 8), 2)
    assert on.decoders[0][0][0][0].in_channels == 8 and off.decoders[0][0][0][0].in_channels == 4


@pytest.mark.parametrize("spec", [
    RNNSpec(hidden=8), RNNSpec(cell="gru", hidden=8, num_layers=2, bidirectional=True, dropout=0.1),
    RNNSpec(hidden=8, pool="mean"),
    TransformerSpec(d_model=8, heads=2, dim_feedforward=16),
    TransformerSpec(d_model=8, heads=2, dim_feedforward=16, patch_size=4, pos_embedding="sinusoidal",
                    pool="mean"),
    TransformerSpec(d_model=8, heads=2, dim_feedforward=16, pos_embedding="none"),
], ids=["lstm", "bigru", "lstm_mean", "transformer", "transformer_patch_sin", "transformer_nopos"])
def test_sequence_models_take_mnist1d_shaped_input(spec) -> None:
    torch.manual_seed(0)
    model = build_model(spec, (1, 40), 10)
    assert _run(model, (1, 40), n=3).shape == (3, 10)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 33)).shape == (2, 10)  # other lengths work too
    assert build_model(spec, (40,), 10)(torch.randn(2, 40)).shape == (2, 10)  # flat (F,) read as (1, F)


def test_sequence_models_refuse_images() -> None:
    with pytest.raises(DltricksError, match="sequences"):
        build_model(RNNSpec(), (1, 8, 8), 10)
    with pytest.raises(DltricksError, match="heads"):
        build_model(TransformerSpec(d_model=10, heads=4), (1, 40), 10)


def test_resnet50_layout_has_the_published_parameter_count() -> None:
    with torch.device("meta"):  # no weights initialised: instant
        model = build_model(resnet50_spec(), (3, 224, 224), 1000)
    assert sum(p.numel() for p in model.parameters()) == 25_557_032  # torchvision's ResNet-50


def test_cnn_defaults_unchanged() -> None:
    """The bundled mnist1d-cnn recipe is tuned on the plain CNN: its layer structure must not drift."""
    model = build_model(CNNSpec(), (1, 40), 10)
    keys = [k for k in model.state_dict() if k.endswith("weight")]
    assert keys == ["0.0.0.0.weight", "0.0.0.1.weight", "0.2.0.0.weight", "0.2.0.1.weight", "0.4.0.0.weight",
                    "0.4.0.1.weight", "1.3.weight"]
    assert sum(p.numel() for p in model.parameters()) == 32_554


def test_new_cnn_keys_validate_in_recipes() -> None:
    r = Recipe.load("mnist1d-cnn", ["model.residual=true", "model.se=true", "model.attention=true",
                                    "model.head='spp'", "model.spatial_dropout=0.1"])
    model = build_model(r.model, (1, 40), 10)
    assert model(torch.randn(2, 1, 40)).shape == (2, 10)
    with pytest.raises(DltricksError, match="attention_heads"):
        build_model(CNNSpec(channels=[6], attention=True, attention_heads=4), (1, 40), 10)
    with pytest.raises(DltricksError):
        Recipe.load("mnist1d-cnn", ["model.head='pyramid'"])


def test_spp_head_accepts_other_input_sizes() -> None:
    model = build_model(CNNSpec(channels=[4, 8], head="spp"), (1, 16, 16), 3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 23, 11)).shape == (1, 3)


def test_inputs_too_small_for_valid_padding_say_so() -> None:
    with pytest.raises(DltricksError, match="does not fit"):
        build_model(CNNSpec(channels=[4, 4, 4], padding="valid", kernel_size=5), (1, 8), 2)
