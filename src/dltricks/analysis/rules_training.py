"""The advisor's rules about training: a learning-rate schedule, gradient clipping for recurrent nets."""

from __future__ import annotations

from torch import nn

from dltricks.analysis.advice import Advice, Context, rule

__all__ = ["MIN_EPOCHS_FOR_SCHEDULE"]

MIN_EPOCHS_FOR_SCHEDULE = 5


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
