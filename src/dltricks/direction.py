"""Which way is better for a metric, read from the words of its name: the one definition every part uses
(the loop's early stopping, a study's verdicts, the tuner's objectives, the sheet's colours).

A bottom-layer module: it imports nothing of ours and nothing heavy, so any layer may use it.
"""

from __future__ import annotations

__all__ = ["HIGHER_IS_BETTER", "LOWER_IS_BETTER", "higher_is_better"]

# Losses, errors, distances and costs: a rise is worse.
LOWER_IS_BETTER = frozenset({
    "loss", "error", "err", "nll", "ece", "brier", "perplexity", "mae", "mse", "rmse", "hd95", "fpr",
    "time", "latency", "seconds", "params", "flops", "macs", "memory", "bytes", "size", "width",
})
# Words that make a name "how many times better", whatever cost it names (``size_ratio`` = source size /
# compressed size, ``speedup_b1``): they win over the words above.
HIGHER_IS_BETTER = frozenset({"speedup", "ratio"})


def higher_is_better(metric: str) -> bool:
    """Direction of a metric by the words in its name (split at ``_`` and ``-``): ``test_accuracy``,
    ``val_dice``, ``test_ood_auroc`` and ``size_ratio`` up; ``val_loss``, ``test_ece``, ``wall_time_s``,
    ``params``, ``flops``, ``latency_b1_ms`` and ``size_bytes`` down. Unknown words count as higher is better."""
    words = set(metric.lower().replace("-", "_").split("_"))
    if words & HIGHER_IS_BETTER:
        return True
    return not words & LOWER_IS_BETTER
