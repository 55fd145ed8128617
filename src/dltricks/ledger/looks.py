"""The looks of a sequential ablation (``--seeds auto``): how many seeds each round adds.

Kept apart from :mod:`dltricks.ledger.stats` (which needs scipy) so that defining a study stays light.
"""

from __future__ import annotations

import math

from dltricks.errors import DltricksError

MIN_SEEDS = 3  # fewest paired seeds for any verdict, and the first look


def auto_schedule(max_seeds: int, start: int = MIN_SEEDS) -> list[int]:
    """3 seeds, then about 1.5x more each round, ending at ``max_seeds``.

    Few looks keep alpha / looks large (10 seeds: looks at 3, 5, 8, 10, each at alpha / 4)."""
    if max_seeds < start:
        raise DltricksError(f"--max-seeds must be at least {start} (the first look), got {max_seeds}")
    looks, n = [], start
    while n < max_seeds:
        looks.append(n)
        n = max(n + 2, math.ceil(n * 1.5))
    return [*looks, max_seeds]
