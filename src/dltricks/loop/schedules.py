"""Learning-rate schedules from ``torch.optim.lr_scheduler``, stepped once per optimiser step.

Stepping per step rather than per epoch keeps warmup and one-cycle smooth on short runs; epoch-based
keys (``step_size``, ``milestones``, ``warmup_epochs``) are converted to steps here.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched

from dltricks.recipe import TrainSpec


def build_scheduler(opt: Optimizer, cfg: TrainSpec, steps_per_epoch: int) -> sched.LRScheduler | None:
    """The schedule the recipe asks for, or None for a constant rate without warmup."""
    total = cfg.epochs * steps_per_epoch
    warm = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
    if cfg.schedule == "one_cycle":
        # one-cycle has its own warmup: warmup_epochs sets its length, else the usual 30%
        pct = warm / total if warm > 0 else 0.3
        # each group peaks at its own rate (layer-wise rates of fine-tuning); all at cfg.lr otherwise
        return sched.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total,
                                pct_start=max(pct, 1e-3))
    rest = total - warm
    main: sched.LRScheduler | None
    if cfg.schedule == "constant":
        main = None
    elif cfg.schedule == "step":
        main = sched.StepLR(opt, step_size=cfg.step_size * steps_per_epoch, gamma=cfg.gamma)
    elif cfg.schedule == "multistep":
        main = sched.MultiStepLR(opt, milestones=[m * steps_per_epoch - warm for m in cfg.milestones],
                                 gamma=cfg.gamma)
    elif cfg.schedule == "exponential":  # gamma per epoch
        main = sched.ExponentialLR(opt, gamma=cfg.gamma ** (1.0 / steps_per_epoch))
    elif cfg.schedule == "cosine":
        main = sched.CosineAnnealingLR(opt, T_max=max(rest, 1), eta_min=cfg.min_lr)
    else:
        raise ValueError(cfg.schedule)  # unreachable: validated by the schema
    if warm == 0:
        return main
    ramp = sched.LinearLR(opt, start_factor=0.01, end_factor=1.0, total_iters=warm)
    if main is None:
        return ramp
    return sched.SequentialLR(opt, [ramp, main], milestones=[warm])
