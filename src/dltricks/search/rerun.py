"""The honest last step of a search: its best configuration re-run on fresh seeds against the recipe it
started from, with a paired verdict.

The best of N noisy trials is biased upwards (the winner's curse): its search score is partly luck.
Re-running it and the start recipe on seeds the search never saw, paired seed by seed, measures what
the search really bought. The re-run is a two-variant ablation study (``start`` and ``best``), so it
runs on the same claims and storage: it resumes after kill -9, and `dltricks worker` can join it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search import claims, local
from dltricks.search import study as st
from dltricks.search.plan import Variant
from dltricks.search.study_job import StudyJob

if TYPE_CHECKING:
    from dltricks.ledger.variant_stats import VariantStats
    from dltricks.search.definition import SearchDefinition


@dataclass
class RerunResult:
    study: str
    metric: str
    seeds: list[int]
    start: VariantStats
    best: VariantStats
    scores: dict[str, dict[int, float]]

    @property
    def verdict(self) -> str:
        return self.best.verdict

    def summary(self) -> str:
        s, b = self.start, self.best
        return (f"re-run on {len(self.seeds)} fresh seeds: best {b.mean:.4f} vs start {s.mean:.4f}, "
                f"paired delta {b.delta:+.4f} [{b.ci_low:+.4f}, {b.ci_high:+.4f}], p {b.p:.3g}: {b.verdict}")


def fresh_seeds(d: SearchDefinition, n: int) -> list[int]:
    """Seeds the search never trained on."""
    first = max(d.seeds) + 1
    return [first + i for i in range(n)]


def rerun(ledger: Ledger, d: SearchDefinition, config: dict[str, Any], *, seeds: int, workers: int = 1,
          progress: bool = True) -> RerunResult:
    """Train ``start`` (the search's recipe) and ``best`` (it patched with ``config``) on ``seeds`` fresh
    seeds and compare them, paired by seed, with :func:`dltricks.ledger.stats.compare`."""
    from dltricks.ledger.stats import compare

    tag = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:6]
    definition = st.Definition(
        name=f"{d.name}-rerun-{tag}", recipe=d.recipe,
        variants=[Variant("start", (), {}), Variant("best", ("best",), dict(config))], reference="start",
        seeds=fresh_seeds(d, seeds), metric=d.metric, higher_is_better=d.higher_is_better, mode="rerun",
        tricks=[{"name": "best", "family": d.kind, "on": dict(config), "off": {}}])
    claims.ensure_table(ledger)
    st.create_or_load(ledger, definition)
    local.run_workers(ledger, definition.name, workers, progress, StudyJob)
    optuna_study, _ = st.load(ledger, definition.name)
    r = st.results(optuna_study, definition)
    rows = {s.variant: s for s in compare(r.scores, "start", higher_is_better=d.higher_is_better)}
    return RerunResult(definition.name, d.metric, definition.seeds, rows["start"], rows["best"], r.scores)


def same_as_start(d: SearchDefinition, config: dict[str, Any]) -> bool:
    base = Recipe.from_dict(d.recipe)
    return base.patch(config).digest() == base.digest()
