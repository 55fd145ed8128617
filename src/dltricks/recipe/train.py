"""``[train]``: the optimiser, schedule, loss, precision and the learning set-ups' training keys."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, field_validator

from dltricks.recipe.section import Section


class TrainSpec(Section):
    epochs: int = Field(10, ge=1, description="passes over the training split")
    batch_size: int = Field(64, ge=1, description="samples per step")
    lr: Annotated[float, Field(gt=0.0)] | Literal["find"] = Field(
        1e-3, description="learning rate (the peak, with a schedule); 'find' = an LR range test picks it before "
                          "training (dltricks lr-find's suggestion), recorded as the run's lr_found")
    optimizer: Literal["sgd", "adam", "adamw", "rmsprop"] = Field("adamw", description="torch.optim's "
                                                                     "optimiser of that name")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd and rmsprop")
    nesterov: bool = Field(False, description="Nesterov momentum (sgd)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam's moment decay rates (adam, adamw)")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 penalty (decoupled for adamw)")
    decay_norm_and_bias: bool = Field(False, description="apply weight decay to norm and bias parameters too")
    schedule: Literal["constant", "step", "multistep", "exponential", "cosine", "one_cycle"] = Field(
        "constant", description="learning-rate schedule over the epochs (torch.optim.lr_scheduler)")
    step_size: int = Field(10, ge=1, description="epochs between decays (step)")
    milestones: list[int] = Field(default_factory=list, description="epochs at which to decay (multistep)")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="decay factor (step, multistep, exponential)")
    warmup_epochs: int = Field(0, ge=0, description="linear warmup before the schedule")
    min_lr: float = Field(0.0, ge=0.0, description="floor of the cosine schedule")
    grad_clip: float = Field(0.0, ge=0.0, description="0 = off")
    grad_clip_mode: Literal["norm", "value"] = Field("norm", description="clip the gradients' global norm "
                                                                        "or each value to grad_clip")
    flood_level: float = Field(0.0, ge=0.0, description="flooding: the training loss b that the step keeps "
                               "floating around (|loss - b| + b: below b it climbs the gradient); 0 = off")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="share of the target spread over all "
                                                                    "classes; 0 = off")
    loss: Literal["ce", "dice", "ce_dice"] = Field("ce", description="dice and ce_dice for segmentation")
    class_weights: list[float] = Field(default_factory=list, description="per-class loss weights; [] = equal")
    early_stopping: int = Field(0, ge=0, description="patience in epochs on `monitor`; 0 = off")
    monitor: Literal["val_loss", "val_accuracy", "val_ece", "val_dice"] = Field(
        "val_loss", description="the validation metric early stopping and restore_best watch")
    # ---- weight averaging and compilation (dltricks.loop.averaging, dltricks.loop.compiling) ----
    ema: float = Field(0.0, ge=0.0, lt=1.0, description="exponential moving average of the weights, decay per "
                                                        "step (e.g. 0.999); the average is evaluated and saved; "
                                                        "0 = off")
    swa_start: float = Field(0, ge=0, description="stochastic weight averaging from this epoch on (0-based), or "
                                                  "from this share of train.epochs if below 1 (0.75 = the last "
                                                  "quarter); the average of the epochs' ends is evaluated and "
                                                  "saved; 0 = off")
    swa_lr: float = Field(0.0, ge=0.0, description="SWA's learning rate, reached by a cosine anneal over one "
                                                   "epoch from swa_start (torch's SWALR); 0 = half of train.lr")
    compile: Literal["off", "inductor", "aot_eager", "eager"] = Field(
        "off", description="torch.compile the model with this backend (true = inductor); a backend that cannot "
                           "compile the model refuses the run")
    restore_best: bool = Field(True, description="with early stopping, end on the best epoch's weights")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast precision (bf16/fp16 "
                                                                       "where the device supports it)")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda, cuda:N or mps")
    grad_accum_steps: int = Field(1, ge=1, description="split each batch into this many micro-batches whose "
                                                       "gradients add up to the batch's (less memory, the same "
                                                       "step); batch_size stays the batch of one optimiser step")
    sync_batchnorm: bool = Field(False, description="on several processes (dltricks train --nproc N): batch "
                                                    "norm statistics over the whole batch of all ranks "
                                                    "(SyncBatchNorm), not each rank's share")
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
    distill_temperature: float = Field(4.0, gt=0.0, description="softmax temperature of teacher and "
                                                                "student in the distillation term")
    distill_alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of the distillation term "
                                                                  "(1 - alpha on the labels)")
    hint_weight: float = Field(0.0, ge=0.0, description="FitNets hint loss weight; 0 = off")
    hint_layers: list[str] = Field(default_factory=lambda: ["backbone"],
                                   description="'STUDENT_MODULE=TEACHER_MODULE' (or one name for both, or "
                                               "'backbone': the input of each head)")
    regression_loss: Literal["mse", "mae", "huber"] = Field("mse", description="loss of regression tasks")
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
    tensorboard: bool = Field(False, description="write TensorBoard event files while training (scalars per "
                                                 "epoch, the recipe as text) into the run's folder tensorboard/")

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError("must be 'auto' or a whole number >= 1")

    @field_validator("lr", mode="before")
    @classmethod
    def _lr(cls, v: Any) -> Any:
        bad_number = isinstance(v, int | float) and not isinstance(v, bool) and not v > 0
        if (isinstance(v, str) and v != "find") or bad_number:  # one message, not one per member of the union
            raise ValueError("must be a number > 0 or 'find' (an LR range test picks it)")
        return v

    @field_validator("compile", mode="before")
    @classmethod
    def _compile(cls, v: Any) -> Any:
        return {True: "inductor", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @pydantic.model_validator(mode="after")
    def _averaging(self) -> TrainSpec:
        if self.ema and self.swa_start:
            raise ValueError("train.ema and train.swa_start are two ways to average the weights: set one of them")
        own = [k for k, on in (("train.lr = 'find'", self.lr == "find"), ("train.ema", self.ema),
                               ("train.swa_start", self.swa_start), ("train.compile", self.compile != "off")) if on]
        if self.meta != "none" and own:  # its outer loop has its own steps: these would silently do nothing
            verb = "acts" if len(own) == 1 else "act"
            raise ValueError(f"{', '.join(own)} {verb} on the training loop's steps; train.meta = {self.meta!r} "
                             "runs its own outer loop over tasks, which has none of them: set them off (a number "
                             "for lr)")
        if self.swa_start >= 1 and (self.swa_start != int(self.swa_start) or self.swa_start >= self.epochs):
            raise ValueError(f"train.swa_start = {self.swa_start:g} must be a whole epoch below train.epochs = "
                             f"{self.epochs}, or a share of the epochs below 1 (SWA averages from there on)")
        return self

    @property
    def swa_epoch(self) -> int | None:
        """The first epoch (0-based) SWA averages; None without SWA."""
        if not self.swa_start:
            return None
        return int(self.swa_start) if self.swa_start >= 1 else int(self.swa_start * self.epochs)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        ok = v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return v

