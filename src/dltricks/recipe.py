"""A recipe is data: one experiment (data, model, training, evaluation) as validated TOML.

Everything a user can change is a recipe key, addressed by a dotted path (``train.lr``).
Datasets and models each own a section schema; they register it here with
:func:`register_section` so that this module stays free of torch and knows nothing else.

    recipe = Recipe.load("mnist1d-cnn")                  # bundled name or a path
    recipe = recipe.patch({"train.label_smoothing": 0.1})
    print(recipe.to_toml())
"""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pydantic
import tomli_w
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from dltricks.errors import DltricksError, did_you_mean, one_of

__all__ = [
    "Section", "AugmentSpec", "DataSpec", "ModelSpec", "TrainSpec", "EvalSpec", "AblateSpec", "TuneSpec", "NasSpec",
    "CompressSpec", "Recipe",
    "register_section", "bundled_recipes", "explain_errors", "parse_override", "set_dotted", "get_dotted",
    "PATH",
]

# Marks a key whose value is a file or folder: ``Field(..., json_schema_extra=PATH)``. In a recipe file
# such a key is taken relative to that file's folder, and the resolved recipe holds the absolute path.
PATH = {"dltricks_path": True}


class Section(BaseModel):
    """A recipe section: unknown keys are errors, assignments are validated."""

    # allow_inf_nan=False: no key wants an infinite or NaN value, and JSON/TOML could not store one
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(),
                              allow_inf_nan=False)


class AugmentSpec(Section):
    """Training-time augmentation, applied per batch to the image (and its mask). 0 turns an op off;
    a probability or magnitude turns it on. :mod:`dltricks.data.augment` implements the ops."""

    # geometric: move the image and, in segmentation, its mask
    flip: float = Field(0.0, ge=0.0, le=1.0, description="probability of flipping each spatial axis")
    rotate90: float = Field(0.0, ge=0.0, le=1.0,
                            description="probability of a random quarter turn (2D/3D; square planes only)")
    rotate: float = Field(0.0, ge=0.0, le=180.0, description="max rotation in degrees, about any axis in 3D")
    scale: float = Field(0.0, ge=0.0, lt=1.0, description="max relative zoom: 0.2 samples from [0.8, 1.2]")
    shift: float = Field(0.0, ge=0.0, lt=1.0, description="max translation as a fraction of each side")
    crop: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of each side cut away by the crop")
    crop_mode: Literal["random", "center"] = "random"
    crop_resize: bool = Field(True, description="resize the crop back to the input size")
    elastic: float = Field(0.0, ge=0.0, lt=0.5,
                           description="std of smooth elastic displacement, as a fraction of each side")
    # intensity: the image only
    noise: float = Field(0.0, ge=0.0, description="std of additive gaussian noise")
    gamma: float = Field(0.0, ge=0.0, le=2.0, description="max |log gamma| of a gamma curve on the image")
    contrast: float = Field(0.0, ge=0.0, lt=1.0, description="max relative contrast change about the mean")


class DomainSpec(Section):
    """``[data.target]``: a target domain, a second configuration of the same dataset whose labels are
    hidden in training (only ``test_target_*`` metrics use them). Its keys are the dataset's own keys
    that may shift (MNIST-1D's generator keys) and corruptions of the inputs; empty = no target domain.
    :mod:`dltricks.data.domains` builds it."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, protected_namespaces=(),
                              allow_inf_nan=False)
    noise: float = Field(0.0, ge=0.0, description="std of additive gaussian noise on the target inputs")
    blur: float = Field(0.0, ge=0.0, le=10.0, description="gaussian blur sigma in samples/pixels")
    rotate: float = Field(0.0, ge=-180.0, le=180.0, description="fixed rotation in degrees (2D/3D)")
    invert: bool = Field(False, description="contrast inversion: each input's min and max swap")
    corruption_seed: int = Field(0, ge=0, description="fixes the noise draws across runs")

    @property
    def active(self) -> bool:
        return bool(self.model_extra) or bool(self.noise or self.blur or self.rotate or self.invert)


class DataSpec(Section):
    """Keys every dataset has; a dataset's own schema subclasses this."""

    # the dataset's keys a [data.target] may change (() = corruptions only; None = it cannot shift)
    shift_keys: ClassVar[tuple[str, ...] | None] = None

    name: str
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of train held out for validation")
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    # learning set-ups (dltricks.data.subsets): a subset of the classes, few labels per class
    classes: list[int] = Field(default_factory=list, description="keep only these classes, relabelled 0..k-1; "
                                                                 "[] = all")
    labels_per_class: int = Field(0, ge=0, description="keep N labelled training samples per class (by seed); "
                                                       "the rest become unlabelled data; 0 = all")
    novel_classes: list[int] = Field(default_factory=list, description="classes held out of training for "
                                                                       "few-shot episodes; [] = none")
    attributes: str = Field("", description="zero-shot class descriptions: a .json/.csv file mapping class "
                                            "name -> attribute vector; '' = the dataset's own, if it has any")
    target: DomainSpec = Field(default_factory=DomainSpec, description="a shifted target domain; {} = none")
    standardize: Literal["auto", True, False] = Field(
        "auto", description="scale each input feature (channel) to mean 0, std 1 with statistics of the training "
                            "split; auto = on for feature tables (csv, npz of shape (N, F)), off otherwise")

    @pydantic.model_validator(mode="after")
    def _target_keys(self) -> DataSpec:
        if not self.target.active:
            return self
        cls = type(self)
        if cls.shift_keys is None:
            shiftable = [n for n, v in _VARIANTS["data"].items() if v.shift_keys is not None]
            raise ValueError(f"dataset {self.name!r} cannot shift, so it takes no [data.target]; target "
                             f"domains work on {one_of(shiftable)}")
        extra = dict(self.target.model_extra or {})
        for k in extra:
            if k not in cls.shift_keys:
                ok = list(cls.shift_keys) + ["noise", "blur", "rotate", "invert", "corruption_seed"]
                raise ValueError(f"data.target.{k} is not a key a target domain of {self.name!r} can shift"
                                 f"{did_you_mean(k, ok)}; valid: {one_of(ok)}")
        if extra:
            try:
                cls.model_validate({**self.model_dump(exclude={"target"}), **extra})
            except ValidationError as e:
                raise ValueError(f"data.target: {explain_errors(e, cls)}") from None
        return self

    @pydantic.model_serializer(mode="wrap")
    def _drop_empty_target(self, handler):
        out = handler(self)
        if isinstance(out, dict) and not self.target.active:  # recipes without a target read as before
            out.pop("target", None)
        return out


class ModelSpec(Section):
    """Keys every model has; a model's own schema subclasses this."""

    name: str
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    init_from: str = Field("", description="start from a run's weights: a run id, a .safetensors file, or "
                                           "recipe:NAME (a run of that recipe, trained once); '' = random init")
    embedding_dim: int = Field(0, ge=0, description="the head outputs an embedding of this width instead of "
                                                    "class scores (metric learning); 0 = a classifier")


# Section variants, filled by data/ and nn/ when they import: {"data": {"mnist1d": Mnist1dSpec}, ...}.
_VARIANTS: dict[str, dict[str, type[Section]]] = {"data": {}, "model": {}}


def register_section(section: Literal["data", "model"], name: str, spec: type[Section]) -> None:
    """Make ``[section] name = NAME`` validate against ``spec`` (a DataSpec/ModelSpec subclass)."""
    _VARIANTS[section][name] = spec


def _plugins_loaded() -> None:
    # The registries fill when their packages import; importing them here keeps Recipe usable on its own.
    import importlib

    for pkg in ("dltricks.data", "dltricks.nn"):
        importlib.import_module(pkg)


class TrainSpec(Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"] = "adamw"
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd and rmsprop")
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0.0, description="L2 penalty (decoupled for adamw)")
    decay_norm_and_bias: bool = Field(False, description="apply weight decay to norm and bias parameters too")
    schedule: Literal["constant", "step", "multistep", "exponential", "cosine", "one_cycle"] = "constant"
    step_size: int = Field(10, ge=1, description="epochs between decays (step)")
    milestones: list[int] = Field(default_factory=list, description="epochs at which to decay (multistep)")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="decay factor (step, multistep, exponential)")
    warmup_epochs: int = Field(0, ge=0, description="linear warmup before the schedule")
    min_lr: float = Field(0.0, ge=0.0, description="floor of the cosine schedule")
    grad_clip: float = Field(0.0, ge=0.0, description="0 = off")
    grad_clip_mode: Literal["norm", "value"] = "norm"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    loss: Literal["ce", "dice", "ce_dice"] = Field("ce", description="dice and ce_dice for segmentation")
    class_weights: list[float] = Field(default_factory=list, description="per-class loss weights; [] = equal")
    early_stopping: int = Field(0, ge=0, description="patience in epochs on `monitor`; 0 = off")
    monitor: Literal["val_loss", "val_accuracy", "val_ece", "val_dice"] = "val_loss"
    restore_best: bool = Field(True, description="with early stopping, end on the best epoch's weights")
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: str = "auto"
    threads: int | Literal["auto"] = Field("auto", description="torch CPU threads: 'auto' (the count that trains "
                                                                 "this model fastest here, at most the free cores) "
                                                                 "or a number")
    # ---- learning set-ups (dltricks.methods) ----
    freeze: list[str] = Field(default_factory=list, description="module-name prefixes to freeze, or "
                                                                "'backbone' (all but the head)")
    layer_lr_decay: float = Field(1.0, gt=0.0, le=1.0, description="lr factor per layer group from the head "
                                                                    "down (discriminative lr); 1 = off")
    unfreeze_every: int = Field(0, ge=0, description="gradual unfreezing: one more layer group every N "
                                                     "epochs, top down; 0 = off")
    teacher: str = Field("", description="distil from this run: a run id or recipe:NAME (trained once); "
                                         "'' = off")
    distill_temperature: float = Field(4.0, gt=0.0)
    distill_alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of the distillation term "
                                                                  "(1 - alpha on the labels)")
    hint_weight: float = Field(0.0, ge=0.0, description="FitNets hint loss weight; 0 = off")
    hint_layers: list[str] = Field(default_factory=lambda: ["backbone"],
                                   description="'STUDENT_MODULE=TEACHER_MODULE' (or one name for both, or "
                                               "'backbone': the input of each head)")
    regression_loss: Literal["mse", "mae", "huber"] = "mse"
    normalize_targets: bool = Field(False, description="z-score regression targets by training statistics")
    task_weights: list[float] = Field(default_factory=list, description="fixed loss weight per task; [] = 1")
    task_weighting: Literal["fixed", "uncertainty"] = Field("fixed", description="uncertainty = Kendall et "
                                                                                 "al. 2018 learnt weights")
    pcgrad: bool = Field(False, description="project conflicting task gradients (Yu et al. 2020)")
    metric_loss: Literal["none", "contrastive", "triplet", "protonet"] = Field(
        "none", description="train an embedding (model.embedding_dim) with a metric loss; none = the task's")
    metric_margin: float = Field(0.0, ge=0.0, description="margin of the contrastive/triplet loss; 0 = the "
                                                          "loss's default (contrastive 1.0, triplet 0.2)")
    pk_samples: int = Field(0, ge=0, description="P x K class-balanced batches: K samples of each of "
                                                 "batch_size / K classes; 0 = plain shuffled batches")
    zero_shot: Literal["eszsl", "dap"] = Field(
        "eszsl", description="with class attributes: eszsl = a closed-form compatibility on the classifier's "
                             "features; dap = the model predicts the attributes")
    eszsl_gamma: float = Field(1.0, gt=0.0, description="ESZSL ridge on the feature side")
    eszsl_lambda: float = Field(1.0, gt=0.0, description="ESZSL ridge on the attribute side")
    meta: Literal["none", "maml", "fomaml", "reptile"] = Field(
        "none", description="meta-learning outer loop over tasks (data.name = 'sinusoid', or few-shot episodes "
                             "of the base classes with data.novel_classes); none = plain training")
    inner_lr: float = Field(0.01, gt=0.0, description="step size of the inner (task) gradient steps")
    inner_steps: int = Field(1, ge=1, description="inner gradient steps per task while meta-training")
    meta_batch: int = Field(25, ge=1, description="tasks per meta-update")
    meta_steps: int = Field(100, ge=1, description="meta-updates per epoch")
    # semi-supervised learning and domain adaptation (dltricks.methods.ssl, dltricks.methods.domain)
    semi_supervised: Literal["none", "pseudo_label", "pi_model", "mean_teacher", "fixmatch"] = Field(
        "none", description="learn from data.labels_per_class's unlabelled remainder too")
    domain_adaptation: Literal["none", "dann", "self_training", "coral"] = Field(
        "none", description="adapt to the [data.target] domain's unlabelled inputs")
    unlabelled_weight: float = Field(1.0, ge=0.0, description="weight of the unlabelled (consistency or "
                                                              "pseudo-label) loss, after ramp-up")
    domain_weight: float = Field(1.0, ge=0.0, description="weight of the DANN or CORAL loss")
    confidence_threshold: float = Field(0.95, ge=0.0, lt=1.0, description="pseudo-labels only where the "
                                                                         "max class probability exceeds it")
    rampup: float = Field(0.3, ge=0.0, le=1.0, description="fraction of training over which the unlabelled "
                                                           "weight ramps up (exp(-5(1-t)^2)); 0 = none")
    ema_decay: float = Field(0.99, ge=0.0, lt=1.0, description="mean teacher's EMA decay per step")
    mu: int = Field(3, ge=1, le=64, description="unlabelled (or target) to labelled batch-size ratio")

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError("must be 'auto' or a whole number >= 1")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        ok = v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return v


class EvalSpec(Section):
    metric: str = Field("test_accuracy", description="the headline metric that sweeps compare")
    ece_bins: int = Field(15, ge=2)
    # ---- uncertainty and calibration (dltricks.methods.uncertainty) ----
    mc_samples: int = Field(0, ge=0, description="MC dropout: average N stochastic forward passes with "
                                                  "dropout on at test time; 0 = off (needs model.dropout > 0)")
    ensemble: int = Field(1, ge=1, le=50, description="deep ensemble: train N members (the recipe's seed "
                                                      "and N-1 more) and average their predictions; 1 = off")
    ensemble_runs: list[str] = Field(default_factory=list, description="the member runs of an ensemble run "
                                                                       "(written by `dltricks ensemble`)")
    temperature_scaling: bool = Field(False, description="divide logits by one temperature fitted on the "
                                                         "validation split (Guo et al. 2017)")
    laplace: Literal["off", "diag", "kron"] = Field("off", description="last-layer Laplace approximation "
                                                                       "with a probit predictive")
    laplace_prior_precision: float = Field(0.0, ge=0.0, description="0 = chosen by validation NLL")
    gp_head: bool = Field(False, description="replace the head by a Gaussian process on the learnt features "
                                             "(deep kernel learning, GPyTorch)")
    gp_epochs: int = Field(30, ge=1, description="epochs of joint GP + feature training")
    gp_inducing: int = Field(64, ge=4, description="inducing points of the variational GP (classification)")
    gp_max_points: int = Field(3000, ge=10, description="exact GP (regression): at most this many training "
                                                        "points, drawn by seed")
    ood: Literal["", "noise", "shuffle", "target"] = Field(
        "", description="OOD inputs for test_ood_auroc: 'noise' (Gaussian, the training inputs' mean/std), "
                        "'shuffle' (test inputs with positions permuted) or 'target' (the [data.target] "
                        "domain's test inputs: a shift of the data)")
    plots: bool = Field(False, description="write the reliability diagram (and, for 1D inputs, the "
                                           "predictive intervals) as PNGs beside the run")
    # few-shot episodes on data.novel_classes (dltricks.loop.episodes)
    n_way: int = Field(5, ge=2, description="classes per few-shot episode")
    shots: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 5], min_length=1,
                                                     description="K of the N-way K-shot episodes")
    queries: int = Field(15, ge=1, description="query samples per class and episode")
    episodes: int = Field(600, ge=1, description="episodes per N-way K-shot accuracy (fixed by seed)")
    episode_head: Literal["centroid", "linear"] = Field("centroid", description="classify an episode's "
                                                        "queries by nearest centroid or a head fitted to its support")
    adapt_steps: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 10], min_length=1,
                                   description="gradient steps (at "
                                   "train.inner_lr) on each test task's support before its post-update score "
                                   "(a meta-learner's episode accuracy: after train.inner_steps)")


class CompressSpec(Section):
    """``[compress]``: prune and/or quantize the trained model before its test metrics (off by default).
    :mod:`dltricks.compress` implements it; ``dltricks compress RUN_ID`` writes these keys too."""

    prune: float = Field(0.0, ge=0.0, lt=1.0, description="share of weights (unstructured) or of channels "
                                                          "(structured) removed; 0 = no pruning")
    prune_mode: Literal["unstructured", "structured"] = "unstructured"
    prune_scope: Literal["layer", "global"] = Field("layer", description="the same share in every layer, or "
                                                                         "ranked over the whole model")
    prune_steps: int = Field(1, ge=1, description="iterative pruning: this many steps, fine-tuning after each")
    rewind: bool = Field(False, description="lottery ticket: reset surviving weights to their init, retrain")
    quantize: Literal["none", "dynamic", "static", "qat", "weight_only"] = "none"
    calibration_batches: int = Field(8, ge=1, description="training batches that calibrate static int8")
    finetune_epochs: int = Field(0, ge=0, description="epochs of fine-tuning after each pruning step (or QAT)")
    finetune_lr_factor: float = Field(1.0, gt=0.0, le=1.0, description="fine-tuning lr = train.lr x this (the "
                                                                       "recipe's schedule replayed: lr rewinding)")
    sparse_storage: bool = Field(True, description="store Linear layers of <= 25% density as CSR")
    source: str = Field("", description="run whose weights were compressed; '' = this recipe's own training")

    @property
    def active(self) -> bool:
        return self.prune > 0 or self.quantize != "none"

    @model_validator(mode="after")
    def _consistent(self) -> CompressSpec:
        if self.rewind and (self.prune == 0 or self.prune_mode != "unstructured"):
            raise ValueError("compress.rewind (lottery ticket) needs unstructured pruning: set compress.prune > 0 "
                             "and compress.prune_mode = 'unstructured'")
        if self.rewind and self.finetune_epochs == 0:
            raise ValueError("compress.rewind resets weights to their init: set compress.finetune_epochs >= 1")
        if self.quantize == "qat" and self.finetune_epochs == 0:
            raise ValueError("compress.quantize = 'qat' trains with fake quantization: set "
                             "compress.finetune_epochs >= 1")
        return self


class AblateSpec(Section):
    tricks: list[str] = Field(default_factory=list)
    mode: Literal["add", "remove", "factorial", "cumulative"] = "add"
    seeds: int | Literal["auto"] = Field(5, description='seeds per variant, or "auto": 3, then more in rounds '
                                                          'only for inconclusive variants, up to max_seeds')
    workers: int = Field(1, ge=1)
    metric: str = Field("", description="defaults to eval.metric")
    study: str = Field("", description="defaults to the recipe name and a hash of the sweep")
    rope: float | Literal["auto"] = Field("auto", description="half-width of the region of practical equivalence "
                                          'in metric units; "auto": 0.005 for [0, 1] metrics, else 1% of the baseline')
    max_seeds: int = Field(10, ge=3, le=1000, description='the most seeds per variant with seeds = "auto"')

    @field_validator("seeds")
    @classmethod
    def _seeds_positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError('seeds must be at least 1, or "auto"')
        return v

    @field_validator("rope")
    @classmethod
    def _rope_non_negative(cls, v: float | str) -> float | str:
        if not isinstance(v, str) and v < 0:
            raise ValueError('the ROPE half-width must be >= 0 (metric units), or "auto"')
        return v


class _SearchSpec(Section):
    """Settings of a search, plus its space: every dotted key (``"train.lr"``) is a dimension, a range
    ``{ low = 1e-4, high = 0.1, log = true }`` or a list of choices. :mod:`dltricks.search.space`
    checks each dimension against the recipe; here only its shape is checked."""

    model_config = ConfigDict(extra="allow")
    trials: int = Field(20, ge=1, description="trials in the study (a rerun with more extends it)")
    seeds_per_trial: int = Field(1, ge=1, description="each trial's score is its mean over these paired seeds")
    metric: str = Field("", description="defaults to eval.metric")
    search_seed: int = Field(0, ge=0, description="seed of the sampler or strategy")
    rerun_seeds: int = Field(6, ge=0, description="fresh seeds for the best against the start recipe; 0 = skip")
    workers: int = Field(1, ge=1)
    study: str = Field("", description="defaults to the recipe name and a hash of the search")

    @model_validator(mode="after")
    def _space_entries(self):
        for key, value in (self.model_extra or {}).items():
            if "." not in key:
                fields = ", ".join(type(self).model_fields)
                hint = did_you_mean(key, type(self).model_fields)
                raise ValueError(f"unknown key {key!r}{hint}; valid: {fields}, or a dotted recipe key "
                                 "(\"train.lr\") with a range {low, high, log} or a list of choices")
            if not isinstance(value, dict | list):
                raise ValueError(f"{key} = {value!r}: a search dimension is a range {{low, high, log}} "
                                 "or a list of choices")
        return self

    def space(self) -> dict[str, Any]:
        """The dotted keys: ``{"train.lr": {"low": 1e-4, "high": 0.1, "log": True}, ...}``."""
        return dict(self.model_extra or {})


class TuneSpec(_SearchSpec):
    """``dltricks tune``: hyperparameter search with Optuna's samplers over the ``[tune]`` space."""

    sampler: Literal["random", "tpe", "gp", "cmaes", "nsga2"] = "tpe"
    objective: list[str] = Field(default_factory=list,
                                 description="several metrics (e.g. test_accuracy, params): a Pareto front")
    pruner: Literal["median", "hyperband", "none"] = "none"


class NasSpec(_SearchSpec):
    """``dltricks nas``: architecture search over the model's keys (the ``[nas]`` space, or a default one)."""

    strategy: Literal["evolution", "reinforce", "random"] = "evolution"
    max_params: int = Field(0, ge=0, description="candidates with more parameters are never trained; 0 = no limit")
    max_flops: int = Field(0, ge=0, description="FLOPs of one forward pass per sample; 0 = no limit")
    population: int = Field(8, ge=2, description="evolution: the population that ages")
    sample_size: int = Field(3, ge=1, description="evolution: tournament size")


class Recipe(Section):
    """One experiment. Build with :meth:`load`, :meth:`from_dict` or :meth:`patch`."""

    name: str = "recipe"
    seed: int = Field(0, ge=0)
    data: SerializeAsAny[DataSpec]
    model: SerializeAsAny[ModelSpec]
    train: TrainSpec = Field(default_factory=TrainSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    ablate: AblateSpec = Field(default_factory=AblateSpec)
    tune: TuneSpec = Field(default_factory=TuneSpec)
    nas: NasSpec = Field(default_factory=NasSpec)
    compress: CompressSpec = Field(default_factory=CompressSpec)

    _sections: ClassVar[tuple[str, ...]] = ("data", "model", "train", "eval", "ablate", "tune", "nas", "compress")

    @field_validator("data", "model", mode="before")
    @classmethod
    def _variant(cls, v: Any, info) -> Any:
        if isinstance(v, Section):
            return v
        if not isinstance(v, dict):
            raise ValueError("must be a table")
        variants = _VARIANTS[info.field_name]
        name = v.get("name")
        if name is None:
            raise ValueError(f"needs a name; valid: {one_of(variants)}")
        if name not in variants:
            kind = "dataset" if info.field_name == "data" else "model"
            raise ValueError(f"no {kind} of that name{did_you_mean(name, variants)}; valid: {one_of(variants)}")
        return variants[name].model_validate(v)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "recipe") -> Recipe:
        """Validate a plain dict (``base`` already resolved); errors name the key and what is valid."""
        _plugins_loaded()
        d = dict(d)
        d.pop("base", None)
        try:
            return cls.model_validate(d)
        except ValidationError as e:
            raise DltricksError(f"{source}: {explain_errors(e, cls, d)}") from None

    @classmethod
    def load(cls, path_or_name: str | Path, overrides: list[str] | None = None) -> Recipe:
        """Load a bundled recipe by name or a TOML file, resolve ``base``, apply ``key=value`` overrides."""
        d, source = _load_tree(str(path_or_name), seen=())
        parsed = [parse_override(item) for item in overrides or []]
        # a switch of dataset or model comes first, so that `-o model.hidden=[16] -o model.name=mlp`
        # means what `-o model.name=mlp -o model.hidden=[16]` does
        parsed.sort(key=lambda kv: kv[0] not in _SWITCHES)
        notes = []
        for key, value in parsed:
            note = _set_key(d, key, value)
            notes += [note] if note else []
        _absolute_paths(d, Path.cwd())  # what is still relative came from -o, typed here
        try:
            return cls.from_dict(d, source)
        except DltricksError as e:
            if not notes:
                raise
            raise DltricksError(f"{e} ({'; '.join(notes)})") from None

    def patch(self, patch: dict[str, Any]) -> Recipe:
        """A new recipe with dotted keys set, e.g. ``{"train.lr": 0.1}``; validated like a file."""
        d = self.to_dict()
        for key, value in patch.items():
            _set_key(d, key, value)
        return Recipe.from_dict(d, source="patch " + ", ".join(f"{k}={v!r}" for k, v in patch.items()))

    # ---- output -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        if d.get("compress") == _COMPRESS_OFF:  # off: recipes (and their digests) read as before [compress]
            del d["compress"]
        return d

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def get(self, key: str) -> Any:
        return get_dotted(self.to_dict(), key)

    def digest(self) -> str:
        """A short hash of the resolved recipe: equal recipes, equal digests."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def flat(self) -> dict[str, Any]:
        """``{"train.lr": 0.001, ...}``: every key by its dotted path."""
        out: dict[str, Any] = {}

        def walk(prefix: str, v: Any) -> None:
            if isinstance(v, dict):
                for k, sub in v.items():
                    walk(f"{prefix}.{k}" if prefix else k, sub)
            else:
                out[prefix] = v

        walk("", self.to_dict())
        return out


_COMPRESS_OFF = CompressSpec().model_dump(mode="json")


# ---- TOML files, base recipes and overrides ----------------------------------------------------

def bundled_recipes() -> dict[str, str]:
    """Bundled recipe names and their one-line description (the TOML's first comment)."""
    out = {}
    for f in sorted(resources.files("dltricks.recipes").iterdir(), key=lambda p: p.name):
        if f.name.endswith(".toml"):
            first = f.read_text().splitlines()[0] if f.read_text() else ""
            out[f.name[:-5]] = first.lstrip("# ").strip() if first.startswith("#") else ""
    return out


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DltricksError(f"{source}: invalid TOML: {e}") from None


def _load_tree(ref: str, seen: tuple[tuple[str, str], ...], relative_to: Path | None = None
               ) -> tuple[dict, str]:
    """The recipe dict for a name or path with its ``base`` chain merged in (file wins over base).
    ``seen`` holds (resolved path or bundled name, display name) of the recipes that led here."""
    path = Path(ref).expanduser()
    path = path if relative_to is None or path.is_absolute() else relative_to / path
    if ref.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise DltricksError(f"recipe file not found: {path}")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise DltricksError(f"cannot read recipe {path}: {e}") from None
        source, here, key = str(path), path.parent, str(path.resolve())
    else:
        names = bundled_recipes()
        if ref not in names:
            raise DltricksError(f"no recipe file or bundled recipe named {ref!r}{did_you_mean(ref, names)}; "
                                f"bundled: {one_of(names)}")
        text = (resources.files("dltricks.recipes") / f"{ref}.toml").read_text()
        source, here, key = f"{ref} (bundled)", None, f"{ref} (bundled)"
    if key in (k for k, _ in seen):
        chain = " -> ".join([s for _, s in seen] + [source])
        raise DltricksError(f"{source}: base recipes form a cycle: {chain}")
    d = _read_toml(text, source)
    if here is not None and "name" not in d:
        d["name"] = path.stem  # a file's runs carry its own name, never its base's
    base = d.pop("base", None)
    if base is None:
        if here is not None:
            _absolute_paths(d, here)
        return d, source
    if not isinstance(base, str):
        raise DltricksError(f"{source}: base must be a recipe name or path, got {base!r}")
    parent, _ = _load_tree(base, seen + ((key, source),), here)
    if here is not None:
        _absolute_paths(d, here, inherited=parent)
    return _merge(parent, d), source


def _absolute_paths(d: dict, folder: Path, inherited: dict | None = None) -> None:
    """Make the relative file and folder keys (those marked :data:`PATH`) of ``d``'s data and model
    sections absolute, relative to ``folder``: a recipe with its data beside it runs from anywhere."""
    _plugins_loaded()
    for section in ("data", "model"):
        table = d.get(section)
        if not isinstance(table, dict):
            continue
        name = table.get("name", (inherited or {}).get(section, {}).get("name"))
        spec = _VARIANTS[section].get(name) if isinstance(name, str) else None
        for key, f in (spec.model_fields.items() if spec else ()):
            value = table.get(key)
            if (f.json_schema_extra or {}).get("dltricks_path") and isinstance(value, str) and value:
                p = Path(value).expanduser()
                table[key] = str(p if p.is_absolute() else (folder / p).resolve())


_SWITCHES = ("data.name", "model.name")


def _switched(section: str, old: dict) -> dict:
    """What a data or model section keeps when its ``name`` changes, in a file or by ``-o``: the keys
    every dataset (``val_fraction``, ``augment``) or every model (``dropout``) has; the rest starts
    from the new one's defaults. (An MLP's ``hidden = [100, 100]`` means nothing to an RNN.)"""
    common = (DataSpec if section == "data" else ModelSpec).model_fields
    return {k: copy.deepcopy(v) for k, v in old.items() if k in common and k != "name"}


def _merge(base: dict, top: dict) -> dict:
    """Deep-merge ``top`` over ``base``. A data or model section whose ``name`` changes starts afresh
    (see :func:`_switched`): a resnet does not inherit a cnn's keys."""
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            if "name" in v and v["name"] != out[k].get("name"):
                out[k] = _merge(_switched(k, out[k]), v) if k in ("data", "model") else copy.deepcopy(v)
            else:
                out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.lr=0.1"`` -> ``("train.lr", 0.1)``. Values are TOML (``true``, ``[1, 2]``, ``"x"``);
    anything that is not valid TOML is taken as a bare string (``data.name=digits``)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise DltricksError(f"override {item!r} must look like key=value, e.g. train.lr=0.01")
    try:
        parsed = tomllib.loads(f"v = {raw.strip()}")
    except tomllib.TOMLDecodeError:
        return key, raw.strip()
    if list(parsed) != ["v"]:  # "1\nb = 2" is valid TOML but not one value: keep the text
        return key, raw.strip()
    return key, parsed["v"]


def _set_key(d: dict, key: str, value: Any) -> str:
    """``set_dotted``, except that a new ``data.name`` or ``model.name`` starts that section afresh, as in
    a file (:func:`_switched`). Returns a note on such a switch (for an error that follows), else ""."""
    note = ""
    if key in _SWITCHES:
        section = key.split(".")[0]
        old = d.get(section)
        if isinstance(old, dict) and value != old.get("name"):
            d[section] = _switched(section, old)
            kept = ", ".join(f"{section}.{k}" for k in d[section]) or "none"
            note = (f"{key} changed from {old.get('name')!r} to {value!r}: the {section} section starts from "
                    f"{value!r}'s defaults, keeping only {kept}")
    set_dotted(d, key, value)
    return note


def set_dotted(d: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = d
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise DltricksError(f"cannot set {key}: {p} is a value, not a section")
        node = child
    node[leaf] = value


def get_dotted(d: dict, key: str) -> Any:
    node: Any = d
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            raise DltricksError(f"no recipe key {key}")
        node = node[p]
    return node


def _schema_keys(cls: type[BaseModel], d: dict, loc: tuple) -> list[str]:
    """Valid keys at ``loc`` (for did-you-mean), following the chosen data/model variant."""
    model: type[BaseModel] | None = cls
    node: Any = d
    for part in loc:
        if model is None:
            return []
        if part in ("data", "model") and model is Recipe:
            name = node.get(part, {}).get("name") if isinstance(node, dict) else None
            model = _VARIANTS[part].get(name, DataSpec if part == "data" else ModelSpec)
        else:
            field = model.model_fields.get(part)
            ann = getattr(field, "annotation", None)
            model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return list(model.model_fields) if model else []


def explain_errors(e: ValidationError, schema: type[BaseModel], d: dict | None = None) -> str:
    """One line per pydantic error, joined: the key, the bad value and what is valid."""
    parts = []
    for err in e.errors():
        loc = tuple(str(p) for p in err["loc"] if not isinstance(p, int))
        # the variant validator reports at the section; drop pydantic's class-name hops
        loc = tuple(p for p in loc if not p[:1].isupper() and "[" not in p)
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            valid = _schema_keys(schema, d or {}, loc[:-1])
            hint = did_you_mean(loc[-1], valid).replace("mean ", "mean " + ".".join(loc[:-1] + ("",)))
            section = ".".join(loc[:-1]) or "the top level"
            parts.append(f"unknown key {key}{hint}; valid in {section}: {one_of(valid)}")
        elif err["type"] == "missing":
            parts.append(f"missing key {key}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            msg = msg[0].lower() + msg[1:] if msg else msg
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" = {value!r}"
            if isinstance(value, dict) and "name" in value:  # a data/model variant that is not registered
                key, shown = f"{key}.name", f" = {value['name']!r}"
            parts.append(f"{key}{shown}: {msg}")
    return "; ".join(parts)
