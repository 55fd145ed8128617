"""Shape inference by arithmetic (nn/shapes.py) gives what running the module gives: on meta tensors (the
old way) and on real ones, for the block zoo in 1D/2D/3D with every norm, for CNNs with every trick and for
the bundled recipes' models; it refuses the same inputs; and it never needs the meta path (which imports
torch._dynamo) for the blocks a CNN is made of."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from dltricks.errors import DltricksError
from dltricks.nn import (
    ASPP,
    SPP,
    BasicBlock,
    Bottleneck,
    ConvNormAct,
    DualPathway,
    ImagePool,
    LargeKernelConv,
    PreActBlock,
    SelfAttention,
    SqueezeExcite,
    build_model,
    downsample,
    layers,
    shapes,
)
from dltricks.nn.models.cnn import CNNSpec
from dltricks.nn.shapes import meta_output_shape, output_shape

SIZE = {1: 13, 2: 7, 3: 5}  # odd sizes: floor and ceil modes differ

ZOO = {
    "conv_norm_act": lambda d, n: ConvNormAct(4, 6, 3, d, norm=n),
    "preact_ws_drop": lambda d, n: ConvNormAct(4, 6, 3, d, norm=n, order="norm-act-conv",
                                               weight_standardization=True, dropout=0.2),
    "separable_strided": lambda d, n: ConvNormAct(4, 6, 3, d, stride=2, norm=n, separable=True, act="gelu"),
    "valid_dilated": lambda d, n: ConvNormAct(4, 6, 3, d, norm=n, padding="valid", dilation=2),
    "large_kernel_stack": lambda d, n: LargeKernelConv(4, 6, 5, d, stack_3x3=True, stride=2, norm=n),
    "basic_block": lambda d, n: BasicBlock(4, 6, d, stride=2, norm=n, se=True),
    "bottleneck": lambda d, n: Bottleneck(4, 8, d, norm=n, dilation=2),
    "preact_block": lambda d, n: PreActBlock(4, 6, d, stride=2, norm=n, stack_3x3=True, kernel_size=5),
    "squeeze_excite": lambda d, n: SqueezeExcite(4, 2, d),
    "self_attention": lambda d, n: SelfAttention(4, 2, d),
    "spp": lambda d, n: SPP((1, 2), d),
    "image_pool": lambda d, n: ImagePool(4, 3, d),
    "aspp": lambda d, n: ASPP(4, 6, (1, 2), d, norm=n),
    "dual_pathway": lambda d, n: DualPathway(4, 6, d, factor=3, norm=n),
    "downsample_stride": lambda d, n: downsample("stride", 4, d, norm=n),
    "max_pool_ceil": lambda d, n: layers.max_pool(d, 3, 2, padding=1, ceil_mode=True),
    "avg_pool_ceil": lambda d, n: layers.avg_pool(d, 2, 2, ceil_mode=True),
    "adaptive": lambda d, n: layers.adaptive_max_pool(d, 2),
    "transpose": lambda d, n: layers.conv_transpose(d, 4, 3, 2, stride=2),
    "head": lambda d, n: nn.Sequential(layers.adaptive_avg_pool(d, 1), nn.Flatten(), nn.Linear(4, 3)),
}


def _refuse(module: nn.Module, shape) -> None:
    pytest.fail(f"{type(module).__name__} has no shape rule: it fell back to meta tensors")


@pytest.fixture
def no_meta(monkeypatch):
    """Fail if a module falls back to meta tensors: every block above has a rule."""
    monkeypatch.setattr(shapes, "_run_on_meta", _refuse)


@pytest.mark.parametrize("norm", layers.NORMS)
@pytest.mark.parametrize("dims", (1, 2, 3))
def test_zoo_shapes_equal_meta_and_real_runs(dims: int, norm: str, monkeypatch) -> None:
    in_shape = (4, *[SIZE[dims]] * dims)
    for name, make in ZOO.items():
        torch.manual_seed(0)
        block = make(dims, norm)
        want = _outcome(meta_output_shape, block, in_shape)
        with torch.no_grad():
            real = _outcome(lambda b: tuple(b(torch.randn(2, *in_shape)).shape[1:]), block)
        with monkeypatch.context() as m:
            m.setattr(shapes, "_run_on_meta", _refuse)
            got = _outcome(output_shape, block, in_shape)
        assert got == want == real, name


def _outcome(fn, *args):
    """The shape, or "refused" where the input does not fit (a 1x1x1 map under InstanceNorm, say)."""
    try:
        return fn(*args)
    except (ValueError, RuntimeError):  # BuildError is a ValueError
        return "refused"


CNNS = [
    CNNSpec(),
    CNNSpec(channels=[4, 8, 8], residual=True, se=True, se_reduction=2, head="spp", stack_3x3=True, kernel_size=5,
            separable=True, spatial_dropout=0.1, norm="group", weight_standardization=True),
    CNNSpec(channels=[4, 8], downsample="stride", dilation=2, head="flatten", norm="instance", blocks_per_stage=2),
    CNNSpec(channels=[4, 8], padding="valid", norm="layer", head="max", downsample="avg"),
    CNNSpec(channels=[4, 4, 4, 4, 4], downsample="max"),  # pools down to size 1, then stops pooling
]


@pytest.mark.parametrize("dims", (1, 2, 3))
@pytest.mark.parametrize("spec", CNNS, ids=range(len(CNNS)))
def test_cnn_builds_without_meta_tensors_and_shapes_agree(spec: CNNSpec, dims: int, no_meta) -> None:
    in_shape = (1, *[{1: 40, 2: 12, 3: 8}[dims]] * dims)
    model = build_model(spec, in_shape, 3)
    body = model[0]
    shape = in_shape
    for layer in body:  # every step the builder took agrees with running the layer
        torch.manual_seed(0)
        nxt = output_shape(layer, shape)
        with torch.no_grad():
            assert nxt == tuple(layer.eval()(torch.randn(2, *shape)).shape[1:])
        shape = nxt
    assert output_shape(model, in_shape) == (3,)


@pytest.mark.parametrize("recipe", ["mnist1d-cnn", "mnist1d-mlp", "digits-cnn", "seg2d-unet", "seg3d-unet"])
def test_bundled_models_shapes_equal_meta(recipe: str) -> None:
    from dltricks.analysis.inspect import data_info
    from dltricks.recipe import Recipe

    r = Recipe.load(recipe)
    info = data_info(r)
    model = build_model(r.model, info.in_shape, info.num_classes)
    assert output_shape(model, info.in_shape) == meta_output_shape(model, info.in_shape)


@pytest.mark.parametrize("module,in_shape", [
    (ConvNormAct(4, 6, 3, 1), (5, 12)),                        # wrong channels
    (ConvNormAct(4, 6, 5, 1, padding="valid"), (4, 3)),        # map smaller than the kernel
    (layers.max_pool(1, 2), (4, 1)),                           # nothing left to pool
    (nn.Sequential(nn.Flatten(), nn.Linear(10, 2)), (4, 3)),   # wrong features
    (layers.norm("group", 6, 2), (4, 5, 5)),                   # norm of another width
])
def test_misfits_are_refused_like_meta(module: nn.Module, in_shape, monkeypatch) -> None:
    with pytest.raises(DltricksError, match="does not fit this model"):
        meta_output_shape(module, in_shape)
    monkeypatch.setattr(shapes, "_run_on_meta", _refuse)
    with pytest.raises(DltricksError, match="does not fit this model"):
        output_shape(module, in_shape)


def test_unknown_modules_fall_back_to_meta() -> None:
    class Twice(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, x], dim=-1)

    class Doubled(nn.Sequential):  # a Sequential whose forward is not a chain: no rule
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([super().forward(x)] * 2, dim=1)

    assert output_shape(nn.Sequential(nn.Conv1d(2, 3, 3), Twice()), (2, 10)) == (3, 16)
    assert output_shape(Doubled(nn.Conv1d(2, 3, 1)), (2, 10)) == (6, 10)


def test_building_a_cnn_imports_no_dynamo() -> None:
    code = ("import sys; from dltricks.nn import build_model; from dltricks.nn.models.cnn import CNNSpec; "
            "build_model(CNNSpec(residual=True, se=True, head='spp'), (1, 40), 10); "
            "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
