"""The advisor's rules about the layers themselves: normalisation and batch size, kernel sizes in 3D,
padding, depth without normalisation or shortcuts, dropout."""

from __future__ import annotations

from typing import Any

from torch import nn

from dltricks.analysis.advice import MIN_BATCH_FOR_BATCHNORM, Advice, Context, rule
from dltricks.analysis.inspect import weighted_depth

__all__ = ["DEEP_PLAIN", "DEEP_WITHOUT_NORM", "MAX_DROPOUT"]

# He et al. 2016: plain nets degrade with depth; normalisation carries them to ~20 layers (VGG), residual
# connections beyond. Without either, ~10 layers is already deep.
DEEP_WITHOUT_NORM = 10
DEEP_PLAIN = 20
MAX_DROPOUT = 0.5  # Srivastava et al. 2014: 0.5 for hidden units is the upper end; more underfits


def _norm_fix(ctx: Context) -> dict[str, Any]:
    """The patch that swaps BatchNorm for GroupNorm (+ weight standardisation) in this model's keys."""
    patch: dict[str, Any] = {}
    if ctx.recipe.model.name == "mlp" and ctx.has("norm"):
        return {"model.norm": "layer"}
    if ctx.has("norm"):
        patch["model.norm"] = "group"
    if ctx.has("weight_standardization"):
        patch["model.weight_standardization"] = True
    return patch


# ---- the rules ------------------------------------------------------------------------------------

@rule("small_batch_batchnorm")
def _small_batch_batchnorm(ctx: Context) -> Advice | None:
    bs = ctx.recipe.train.batch_size
    bns = ctx.modules(nn.modules.batchnorm._BatchNorm)
    if not bns or bs >= MIN_BATCH_FOR_BATCHNORM:
        return None
    return Advice(
        "small_batch_batchnorm", "BatchNorm with a small batch: use GroupNorm (+ weight standardisation)",
        "BatchNorm estimates its statistics from the batch; below ~16 samples they are noisy and differ "
        "between training and inference. GroupNorm normalises within each sample, so it does not depend on "
        "the batch size; weight standardisation recovers most of what BatchNorm's smoothing gave.",
        f"train.batch_size = {bs} and the model has {len(bns)} BatchNorm layers",
        _norm_fix(ctx),
        "Wu & He 2018, Group Normalization (arXiv:1803.08494); Qiao et al. 2019, Weight Standardization "
        "(arXiv:1903.10520)")


@rule("large_kernel_3d")
def _large_kernel_3d(ctx: Context) -> Advice | None:
    if ctx.dims != 3:
        return None
    big = [m for m in ctx.modules(nn.Conv3d) if max(m.kernel_size) > 3 and m.groups == 1]
    if not big or (ctx.has("stack_3x3") and ctx.spec["stack_3x3"]):
        return None
    k = max(max(m.kernel_size) for m in big)
    n = (k - 1) // 2
    patch = {"model.stack_3x3": True} if ctx.has("stack_3x3") and k % 2 == 1 else {}
    return Advice(
        "large_kernel_3d", f"{k}x{k}x{k} convolutions in 3D: stack 3x3x3 convolutions instead",
        "In 3D a kernel's weights grow with its cube: n stacked 3x3x3 convs see as far as one (2n+1)^3 conv "
        "with far fewer weights and FLOPs, and add a non-linearity after each.",
        f"{len(big)} Conv3d layers with kernel {k}: {k ** 3} weights per channel pair vs {n * 27} for {n} "
        f"stacked 3x3x3 convs with the same receptive field",
        patch, "Simonyan & Zisserman 2015, VGG (arXiv:1409.1556); Kamnitsas et al. 2017, DeepMedic "
               "(arXiv:1603.05959)")


@rule("no_padding")
def _no_padding(ctx: Context) -> Advice | None:
    convs = [m for m in ctx.modules(nn.modules.conv._ConvNd)
             if not m.transposed and max(m.kernel_size) > 1 and all(p == 0 for p in _pads(m))
             and all(s == 1 for s in m.stride)]
    if not convs:
        return None
    lost = sum((max(m.kernel_size) - 1) * max(m.dilation) for m in convs)
    patch = {"model.padding": "same"} if ctx.has("padding") else {}
    return Advice(
        "no_padding", "Convolutions without padding shrink every map: pad to 'same'",
        "An unpadded k-wide conv cuts k-1 positions off each map, so deep stacks eat the input and border "
        "positions reach fewer outputs; 'same' padding keeps sizes and makes skips and residuals line up.",
        f"{len(convs)} convs pad nothing: maps lose about {lost} positions per axis before downsampling is "
        f"counted",
        patch, "Dumoulin & Visin 2016, A guide to convolution arithmetic (arXiv:1603.07285)")


def _pads(m: nn.modules.conv._ConvNd) -> tuple[int, ...]:
    if isinstance(m.padding, str):
        return (0,) if m.padding == "valid" else (1,)
    return tuple(m.padding)


@rule("deep_plain_net")
def _deep_plain(ctx: Context) -> Advice | None:
    if ctx.trace is None or ctx.modules(nn.RNNBase, nn.MultiheadAttention):
        return None
    depth = weighted_depth(ctx.trace)
    residual = ctx.trace.merges > 0  # additions or concatenations of maps: residual, dense or U-Net skips
    norms = ctx.modules(nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
                        nn.modules.instancenorm._InstanceNorm)
    no_norm = not norms and depth >= DEEP_WITHOUT_NORM
    no_residual = not residual and depth >= (DEEP_WITHOUT_NORM if not norms else DEEP_PLAIN)
    if not (no_norm or no_residual):
        return None
    missing, patch = [], {}
    if no_residual:
        missing.append("no residual connections")
        if ctx.has("residual"):
            patch["model.residual"] = True
    if no_norm:
        missing.append("no normalisation")
        if ctx.has("norm"):
            patch["model.norm"] = "group" if ctx.recipe.train.batch_size < MIN_BATCH_FOR_BATCHNORM else "batch"
    return Advice(
        "deep_plain_net", "A deep plain net: add " + " and ".join(
            m.removeprefix("no ") for m in missing),
        "Plain nets train worse as they get deeper: gradients fade or explode through the stack. Normalisation "
        "keeps each layer's inputs in range and carries plain nets to ~20 layers; residual connections give "
        "deeper ones an identity path.",
        f"{depth} weighted layers with {' and '.join(missing)}", patch,
        "He et al. 2016, Deep Residual Learning (arXiv:1512.03385); Ioffe & Szegedy 2015, Batch Normalization "
        "(arXiv:1502.03167)")


@rule("high_dropout")
def _high_dropout(ctx: Context) -> Advice | None:
    spec = ctx.spec
    keys = {k: v for k, v in spec.items() if "dropout" in k and isinstance(v, float) and v > MAX_DROPOUT}
    if not keys:
        return None
    shown = ", ".join(f"model.{k} = {v}" for k, v in keys.items())
    return Advice(
        "high_dropout", "Dropout above 0.5: lower it",
        "Dropout regularises by dropping units at random; above about half it removes more signal than the "
        "net can make up for and it underfits. 0.1-0.3 in conv nets and up to 0.5 before a dense head are "
        "the usual values.",
        shown, {f"model.{k}": 0.3 for k in keys}, "Srivastava et al. 2014, Dropout (JMLR 15)")
