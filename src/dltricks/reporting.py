"""``dltricks.report_metrics``: how any Python training script hands its results to a command study.

    import dltricks
    dltricks.report_metrics({"val_accuracy": acc, "val_loss": [0.9, 0.6, 0.5]})

Numbers are metrics; a list of numbers is a per-epoch curve (plotted in the study's report). Under
`dltricks ablate --command` or `dltricks tune --command` the object is written to ``$DLTRICKS_METRICS``
(atomically, so the study never reads half a file); outside a study it is printed as one JSON line,
which a study also reads when it is the last line of standard output. Call it again after each epoch
with the curves so far: a tuning study with a pruner judges the trial on them while it runs.

This module imports nothing but the standard library (a script that never imports torch stays fast).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["report_metrics"]

ENV = "DLTRICKS_METRICS"


def _number(value: Any, key: str) -> float:
    try:
        return float(value)  # ints, numpy and 0-d torch scalars alike
    except (TypeError, ValueError):
        raise TypeError(f"report_metrics: {key} = {value!r} is not a number (or a list of numbers)") from None


def _clean(metrics: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, list | tuple) or (hasattr(value, "tolist") and getattr(value, "ndim", 0) == 1):
            out[str(key)] = [_number(v, str(key)) for v in (value.tolist() if hasattr(value, "tolist") else value)]
        else:
            out[str(key)] = _number(value, str(key))
    return out


def report_metrics(metrics: Mapping[str, Any], *, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Hand ``metrics`` ({name: number, or name: [number per epoch]}) to the study running this script;
    returns them as written. ``path`` defaults to ``$DLTRICKS_METRICS``; with neither, prints one JSON line.

    NaN and infinity are written as JSON's ``NaN``/``Infinity``: the study then fails the cell and says
    which metric was not finite, rather than this script hiding it."""
    clean = _clean(metrics)
    text = json.dumps(clean, allow_nan=True)
    target = path or os.environ.get(ENV)
    if not target:
        print(text, flush=True)
        return clean
    tmp = f"{target}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, target)  # atomic: a reader sees the old object or the new one, never half of one
    return clean

