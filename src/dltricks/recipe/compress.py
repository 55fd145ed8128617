"""``[compress]``: pruning and quantization of the trained model (off by default)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dltricks.recipe.section import Section


class CompressSpec(Section):
    """``[compress]``: prune and/or quantize the trained model before its test metrics (off by default).
    :mod:`dltricks.compress` implements it; ``dltricks compress RUN_ID`` writes these keys too."""

    prune: float = Field(0.0, ge=0.0, lt=1.0, description="share of weights (unstructured) or of channels "
                                                          "(structured) removed; 0 = no pruning")
    prune_mode: Literal["unstructured", "structured"] = Field(
        "unstructured", description="single weights, or whole channels (the model shrinks)")
    prune_scope: Literal["layer", "global"] = Field("layer", description="the same share in every layer, or "
                                                                         "ranked over the whole model")
    prune_steps: int = Field(1, ge=1, description="iterative pruning: this many steps, fine-tuning after each")
    rewind: bool = Field(False, description="lottery ticket: reset surviving weights to their init, retrain")
    quantize: Literal["none", "dynamic", "static", "qat", "weight_only"] = Field(
        "none", description="int8 quantization: dynamic, static (calibrated), qat (trained), weight_only")
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



# the section as it is when off: recipes without [compress] (and their digests) read as before it existed
COMPRESS_OFF = CompressSpec().model_dump(mode="json")
