"""Which way a metric improves, read from its name: the one definition the loop, the sheet and the sweeps use."""

from __future__ import annotations

_LOWER_IS_BETTER = {"loss", "error", "err", "ece", "hd95", "time", "latency", "params", "flops", "memory", "mae",
                    "mse", "rmse", "nll", "perplexity", "bytes", "brier", "width"}


def higher_is_better(metric: str) -> bool:
    """Direction of a metric by the words in its name: ``test_accuracy`` up; ``val_loss``, ``test_ece``,
    ``wall_time_s`` and ``params`` (costs) down."""
    words = metric.lower().replace("-", "_").split("_")
    return not any(w in _LOWER_IS_BETTER for w in words)
