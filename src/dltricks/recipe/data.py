"""``[data]``: keys every dataset has, its augmentation and its target domain."""

from __future__ import annotations

from typing import ClassVar, Literal

import pydantic
from pydantic import ConfigDict, Field, ValidationError

from dltricks.errors import did_you_mean, one_of
from dltricks.recipe.explain import explain_errors
from dltricks.recipe.section import _VARIANTS, Section


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
    crop_mode: Literal["random", "center"] = Field("random", description="where the crop is taken: a random "
                                                                         "place or the centre")
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

    name: str = Field(description="the dataset (see `dltricks recipes`); its own keys follow")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of train held out for validation")
    augment: AugmentSpec = Field(default_factory=AugmentSpec, description="training-time augmentation "
                                                                        "([data.augment]); {} = none")
    # mixing samples (dltricks.loop.mixing): classification in 1D/2D/3D, CutMix also for segmentation
    mixup_alpha: float = Field(0.0, ge=0.0, description="mixup: blend pairs of samples and their labels with a "
                                                        "Beta(alpha, alpha) weight (e.g. 0.2); 0 = off")
    cutmix_alpha: float = Field(0.0, ge=0.0, description="CutMix: paste a box of another sample (labels mixed by "
                                                         "the box's share of the input), Beta(alpha, alpha) area "
                                                         "(e.g. 1.0); 0 = off; with mixup, each batch picks one")
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


