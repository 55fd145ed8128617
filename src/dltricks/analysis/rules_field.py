"""The advisor's rules about context: whether the receptive field covers enough of the input for the task,
and whether a segmentation net that downsamples hands its decoder the full-resolution features."""

from __future__ import annotations

from typing import Any

from dltricks.analysis.advice import Advice, Context, rule
from dltricks.analysis.inspect import DataInfo
from dltricks.analysis.receptive_field import RF, fmt_dims, rf_from_trace
from dltricks.analysis.trace import trace
from dltricks.errors import DltricksError

__all__ = ["MIN_RF_RATIO_CLASSIFICATION", "MIN_RF_RATIO_SEGMENTATION"]

# The effective field is much smaller than the theoretical one (Luo et al. 2016), so a theoretical field
# under a third of the input sees only parts of the object a classifier must recognise whole.
MIN_RF_RATIO_CLASSIFICATION = 1 / 3
MIN_RF_RATIO_SEGMENTATION = 1 / 4  # each output voxel should see a good part of its patch for context


def _rf_of(recipe, info: DataInfo) -> RF | None:
    from dltricks.nn import build_model

    try:
        return rf_from_trace(trace(build_model(recipe.model, info.in_shape, info.num_classes), info.in_shape))
    except DltricksError:
        return None


def _rf_candidates(ctx: Context) -> list[dict[str, Any]]:
    """Patches that enlarge the receptive field, smallest change first, for the models that have the keys:
    downsampling where there is none, dilation, then one, two, ... more stages or levels."""
    spec, name = ctx.spec, ctx.recipe.model.name
    out: list[dict[str, Any]] = []
    if name == "cnn":
        if spec["downsample"] == "none":
            out.append({"model.downsample": "max"})
        dilate = spec["dilation"] == 1
        if dilate:
            out.append({"model.dilation": 2})
        ch = spec["channels"]
        for extra in range(1, 5):
            out.append({"model.channels": ch + [ch[-1]] * extra})
            if dilate:
                out.append({"model.channels": ch + [ch[-1]] * extra, "model.dilation": 2})
    elif name == "resnet":
        if not spec["stem_pool"]:
            out.append({"model.stem_pool": True})
        for extra in range(1, 4):
            wider = [spec["channels"][-1] * 2 ** (i + 1) for i in range(extra)]
            out.append({"model.layers": spec["layers"] + [2] * extra, "model.channels": spec["channels"] + wider})
    elif name == "unet":
        dilate = not spec["dilated_bottleneck"]
        if dilate:
            out.append({"model.dilated_bottleneck": True})
        ch = spec["channels"]
        for extra in range(1, 4):
            more = ch + [ch[-1] * 2 ** (i + 1) for i in range(extra)]
            out.append({"model.channels": more})
            if dilate:
                out.append({"model.channels": more, "model.dilated_bottleneck": True})
    return out


def _best_rf_patch(ctx: Context, target: float) -> tuple[dict[str, Any], RF | None]:
    """The first candidate patch whose field reaches ``target`` of the input, else the one that gets closest."""
    best: tuple[dict[str, Any], RF | None] = ({}, None)
    for patch in _rf_candidates(ctx):
        try:
            recipe = ctx.recipe.patch(patch)
        except DltricksError:
            continue
        rf = _rf_of(recipe, ctx.info)
        if rf is None:
            continue
        if rf.min_ratio >= target:
            return patch, rf
        if best[1] is None or rf.min_ratio > best[1].min_ratio:
            best = (patch, rf)
    return best


@rule("receptive_field")
def _receptive_field(ctx: Context) -> Advice | None:
    rf = ctx.rf
    if rf is None or rf.sees_everything or max(rf.size) <= 1:
        return None  # no convolutional field (MLP, RNN, transformer) or one that already sees everything
    seg = ctx.info.task == "segmentation"
    target = MIN_RF_RATIO_SEGMENTATION if seg else MIN_RF_RATIO_CLASSIFICATION
    if rf.min_ratio >= target:
        return None
    patch, new = _best_rf_patch(ctx, target)
    after = f"; with the patch: {fmt_dims(new.size)} ({new.min_ratio:.2f})" if new is not None else ""
    evidence = (f"receptive field {fmt_dims(rf.size)} on input {fmt_dims(rf.input_size)}: ratio "
                f"{rf.min_ratio:.2f} < {target:.2f}{after}")
    if seg:
        return Advice(
            "receptive_field", "Too little context for segmentation: grow the receptive field",
            "A segmentation net labels each voxel from what its receptive field covers; lesions and organs are "
            "told apart by their surroundings. Add a level (downsampling), dilate the bottleneck or add a "
            "downsampled pathway to see more context without losing resolution.",
            evidence, patch, "Kamnitsas et al. 2017, DeepMedic (arXiv:1603.05959); Yu & Koltun 2016, Dilated "
                             "Convolutions (arXiv:1511.07122); Araujo et al. 2019, Distill")
    return Advice(
        "receptive_field", "Receptive field too small for classification: add depth, dilation or downsampling",
        "A classifier's features can only recognise patterns as large as their receptive field, and the "
        "effective field is smaller still. Accuracy grows roughly with the log of the field size: more depth, "
        "downsampling or dilation make each feature see more of the input.",
        evidence, patch, "Araujo et al. 2019, Computing Receptive Fields of CNNs (Distill); Luo et al. 2016, "
                         "Effective Receptive Field (arXiv:1701.04128)")


@rule("segmentation_without_skips")
def _seg_without_skips(ctx: Context) -> Advice | None:
    if ctx.info.task != "segmentation" or ctx.rf is None:
        return None
    if not ctx.has("skip_connections") or ctx.spec["skip_connections"]:
        return None
    strided = [r for r in ctx.rf.layers if r.rf_stride and max(r.rf_stride) > 1]
    if not strided:
        return None
    stride = max(max(r.rf_stride) for r in strided)
    return Advice(
        "segmentation_without_skips", "Downsampling in segmentation without skip connections: turn them on",
        "Pooling and striding throw away where things are; a decoder that only upsamples the coarse map "
        "cannot put boundaries back. Skip connections hand each decoder level the encoder's full-resolution "
        "features.",
        f"model.skip_connections = false while the encoder downsamples by {fmt_dims((stride,))}",
        {"model.skip_connections": True}, "Ronneberger et al. 2015, U-Net (arXiv:1505.04597); Long et al. 2015, "
                                          "FCN (arXiv:1411.4038)")
