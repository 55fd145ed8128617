"""``dltricks advise``: rules grounded in the tips, checked against a recipe and the model it builds.

Each rule looks at the recipe (batch size, schedule, clipping, dropout), the model it builds (its layers,
the receptive field and residual connections found by :func:`dltricks.analysis.trace.trace`) and the data
(task, input shape, targets), and returns an :class:`Advice`: the tip, the evidence from this recipe, and
a patch of recipe keys that applies the fix (empty when no recipe key can express it). A sound recipe gets
no advice; :func:`apply_advice` writes the patched recipe, which validates like any other.

    advice = advise(Recipe.load("my.toml"))
    fixed = apply_advice(recipe, advice)          # -> Recipe
    print(advice_to_json(advice))
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from rich.console import Group
from rich.panel import Panel
from rich.text import Text
from torch import nn

from dltricks.analysis.inspect import DataInfo, data_info, weighted_depth
from dltricks.analysis.receptive_field import RF, fmt_dims, rf_from_trace
from dltricks.analysis.trace import Trace, trace
from dltricks.errors import DltricksError

__all__ = [
    "DEEP_PLAIN",
    "DEEP_WITHOUT_NORM",
    "MAX_DROPOUT",
    "MAX_TARGET_SCALE_RATIO",
    "MIN_BATCH_FOR_BATCHNORM",
    "MIN_RF_RATIO_CLASSIFICATION",
    "MIN_RF_RATIO_SEGMENTATION",
    "RULES",
    "Advice",
    "advice_to_json",
    "advise",
    "apply_advice",
    "render_advice",
]

# Thresholds, each with where it comes from.
MIN_BATCH_FOR_BATCHNORM = 16  # Wu & He 2018: BatchNorm's error grows quickly below ~16 samples per batch
# The effective field is much smaller than the theoretical one (Luo et al. 2016), so a theoretical field
# under a third of the input sees only parts of the object a classifier must recognise whole.
MIN_RF_RATIO_CLASSIFICATION = 1 / 3
MIN_RF_RATIO_SEGMENTATION = 1 / 4  # each output voxel should see a good part of its patch for context
# He et al. 2016: plain nets degrade with depth; normalisation carries them to ~20 layers (VGG), residual
# connections beyond. Without either, ~10 layers is already deep.
DEEP_WITHOUT_NORM = 10
DEEP_PLAIN = 20
MAX_DROPOUT = 0.5  # Srivastava et al. 2014: 0.5 for hidden units is the upper end; more underfits
MAX_TARGET_SCALE_RATIO = 10.0  # targets whose spreads differ by 10x make one loss term dominate
MIN_EPOCHS_FOR_SCHEDULE = 5


@dataclass
class Advice:
    """One finding: the ``rule`` that fired, a one-line ``title``, the ``tip`` it rests on, the
    ``evidence`` from this recipe, and the ``patch`` (dotted recipe keys -> values) that fixes it."""

    rule: str
    title: str
    tip: str
    evidence: str
    patch: dict[str, Any] = field(default_factory=dict)
    reference: str = ""
    severity: str = "warning"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Context:
    """What the rules look at. ``model``, ``trace`` and ``rf`` are None where the model could not be built."""

    recipe: Any
    info: DataInfo
    model: nn.Module | None
    trace: Trace | None
    rf: RF | None

    @property
    def spec(self) -> dict[str, Any]:
        return self.recipe.model.model_dump()

    @property
    def dims(self) -> int:
        return len(self.info.in_shape) - 1

    def has(self, key: str) -> bool:
        return key in type(self.recipe.model).model_fields

    def modules(self, *types: type) -> list[nn.Module]:
        return [m for m in self.model.modules() if isinstance(m, types)] if self.model is not None else []


Rule = Callable[[Context], "Advice | None"]
RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        RULES[name] = fn
        return fn

    return deco


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


@rule("no_lr_schedule")
def _no_schedule(ctx: Context) -> Advice | None:
    t = ctx.recipe.train
    if t.schedule != "constant" or t.epochs < MIN_EPOCHS_FOR_SCHEDULE:
        return None
    return Advice(
        "no_lr_schedule", "Constant learning rate: anneal it",
        "A rate large enough to make progress early is too large to settle in a minimum late; decaying it "
        "(cosine, step, one-cycle) nearly always ends lower for the same epochs.",
        f"train.schedule = constant over {t.epochs} epochs", {"train.schedule": "cosine"},
        "Loshchilov & Hutter 2017, SGDR (arXiv:1608.03983); Smith & Topin 2019, Super-convergence "
        "(arXiv:1708.07120)")


@rule("rnn_without_clipping")
def _rnn_clip(ctx: Context) -> Advice | None:
    rnns = ctx.modules(nn.RNNBase)
    if not rnns or ctx.recipe.train.grad_clip > 0:
        return None
    return Advice(
        "rnn_without_clipping", "Recurrent net without gradient clipping: clip the gradient norm",
        "Back-propagation through time multiplies by the same recurrent weights at every step, so gradients "
        "can explode in one batch and throw the weights away; clipping their norm (here to 1) prevents it.",
        f"{type(rnns[0]).__name__} layers and train.grad_clip = 0",
        {"train.grad_clip": 1.0, "train.grad_clip_mode": "norm"},
        "Pascanu et al. 2013, On the difficulty of training RNNs (arXiv:1211.5063)")


def target_scales(y: Any) -> dict[str, float]:
    """Spread (std) of each regression target: ``y`` a dict or tuple of tensors, or an (N, T) float tensor.
    Integer targets (class labels, label maps) have no scale and are left out."""
    if isinstance(y, dict):
        items = list(y.items())
    elif isinstance(y, (list, tuple)):
        items = [(str(i), t) for i, t in enumerate(y)]
    elif isinstance(y, torch.Tensor) and y.is_floating_point() and y.dim() == 2 and y.shape[1] > 1:
        items = [(str(i), y[:, i]) for i in range(y.shape[1])]
    else:
        return {}
    out = {}
    for k, t in items:
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() > 1:
            out[str(k)] = float(t.float().std())
    return out


_TARGET_NORM_KEYS = ("train.normalize_targets", "data.normalize_targets", "method.normalize_targets",
                     "train.target_norm", "data.standardize_targets")


@rule("target_scales")
def _target_scales(ctx: Context) -> Advice | None:
    bundle = ctx.info.bundle
    y = bundle.train[1] if bundle is not None and getattr(bundle, "train", None) is not None else None
    scales = {k: v for k, v in target_scales(y).items() if v > 0}
    named = getattr(bundle, "targets", None)
    if named and isinstance(y, torch.Tensor) and len(named) == len(scales):  # class ids have no scale
        scales = {t.name: v for t, v in zip(named, scales.values()) if t.kind == "regression"}
    if len(scales) < 2:
        return None
    lo, hi = min(scales.values()), max(scales.values())
    if hi / lo < MAX_TARGET_SCALE_RATIO:
        return None
    flat = ctx.recipe.flat()
    key = next((k for k in _TARGET_NORM_KEYS if k in flat), None)
    if key and flat[key] is True:  # already normalised
        return None
    shown = ", ".join(f"{k}: {v:.3g}" for k, v in scales.items())
    return Advice(
        "target_scales", "Targets on very different scales: normalise them",
        "With several targets, each loss term scales with its target's spread; one on a scale 10x larger "
        "dominates the gradient and the others are barely learnt. Standardise each target (zero mean, unit "
        "variance) or weight the losses by their uncertainty.",
        f"target spreads differ {hi / lo:.0f}x ({shown})" + ("" if key else "; no recipe key normalises "
                                                                         "targets, so fix it in the data"),
        {key: True} if key else {},
        "Kendall et al. 2018, Multi-task learning using uncertainty to weigh losses (arXiv:1705.07115)")


# ---- running the rules -------------------------------------------------------------------------------

def context(recipe, info: DataInfo | None = None) -> Context:
    """Build the model and trace it once; everything the rules need."""
    from dltricks.nn import build_model

    info = info or data_info(recipe)
    model = build_model(recipe.model, info.in_shape, info.num_classes)
    t = trace(model, info.in_shape)
    return Context(recipe, info, model, t, rf_from_trace(t))


def advise(recipe, info: DataInfo | None = None, rules: list[str] | None = None) -> list[Advice]:
    """Every rule that fires on ``recipe`` (all rules, or those named in ``rules``), in catalogue order.

    ``info`` gives the task, input shape and classes without loading the data (tests, custom setups)."""
    ctx = context(recipe, info)
    names = rules if rules is not None else list(RULES)
    unknown = [n for n in names if n not in RULES]
    if unknown:
        from dltricks.errors import unknown as unknown_error

        raise unknown_error("advisor rule", unknown[0], RULES)
    out = []
    for name in names:
        a = RULES[name](ctx)
        if a is not None:
            out.append(a)
    return out


def apply_advice(recipe, advice: list[Advice]):
    """The recipe with every advice's patch applied, in order (later patches win on the same key); the
    result is validated like any recipe, so a bad patch raises :class:`DltricksError`."""
    patch: dict[str, Any] = {}
    for a in advice:
        patch.update(a.patch)
    return recipe.patch(patch) if patch else recipe


def advice_to_json(advice: list[Advice], recipe=None) -> str:
    """``{"recipe": name, "advice": [...]}`` as indented JSON."""
    return json.dumps({"recipe": getattr(recipe, "name", None), "count": len(advice),
                       "advice": [a.to_dict() for a in advice]}, indent=2, default=str)


def render_advice(advice: list[Advice], recipe=None):
    """A rich renderable: one panel per advice, or a line saying the recipe looks sound."""
    name = getattr(recipe, "name", "recipe")
    if not advice:
        return Text(f"{name}: no advice, the recipe follows the tips the advisor checks ({len(RULES)} rules)")
    panels = []
    for a in advice:
        body = Text()
        body.append("tip: ", style="bold")
        body.append(a.tip + "\n")
        body.append("evidence: ", style="bold")
        body.append(a.evidence + "\n")
        body.append("fix: ", style="bold")
        body.append(", ".join(f"{k} = {json.dumps(v)}" for k, v in a.patch.items()) or "no recipe key; see tip")
        if a.reference:
            body.append("\nreference: ", style="bold")
            body.append(a.reference)
        panels.append(Panel(body, title=f"[bold]{a.rule}[/]: {a.title}", title_align="left", expand=True))
    return Group(Text(f"{name}: {len(advice)} piece{'s' if len(advice) != 1 else ''} of advice"), *panels)

