"""An ablation study's cells (variant x seed) as a :class:`dltricks.search.cells.Job`: each trained as a
ledger run and recorded as an Optuna trial (:mod:`dltricks.search.study`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search import claims
from dltricks.search import study as st
from dltricks.search.vary import cell_patch


class StudyJob:
    """The cells of ablation study ``name`` in ``ledger``, for :func:`dltricks.search.cells.work`."""

    def __init__(self, ledger: Ledger, name: str):
        self.ledger, self.name = ledger, name
        self.study, self.definition = st.load(ledger, name)
        self.base = Recipe.from_dict(self.definition.recipe, source=f"study {name}")

    def cells(self) -> Iterator[tuple[str, Any]]:
        for cell, variant, seed in st.cells_to_run(self.study, self.definition):
            yield cell, (variant, seed)

    def done(self) -> set[str]:
        return st.results(self.study, self.definition).done

    def left(self) -> bool:
        return bool(st.todo(self.study, self.definition))

    def status(self) -> tuple[int, int, str]:
        d = self.definition
        r = st.results(self.study, d)
        # seeds = "auto": the cells the sequential rule asks for so far
        total = len(r.done) + len(st.todo(self.study, d, r)) if d.schedule else len(d.cells())
        return len(r.done), total, f"running {len(claims.running(self.ledger, self.name))}  failed {r.n_failed}"

    def give_up(self, cell: str, payload: Any) -> None:
        variant, seed = payload
        st.record(self.study, self.definition, cell, variant.name, seed, run_id=None,
                  failure=f"its worker died {claims.MAX_ATTEMPTS} times")

    def run(self, cell: str, payload: Any, claim: claims.Claim, run_id: str, progress: bool) -> None:
        from dltricks.errors import RunFailed
        from dltricks.loop.training import TrainingInterrupted
        from dltricks.runner.run import train

        variant, seed = payload
        failure, metrics, started = None, None, False
        try:
            recipe = self.base.patch({**variant.patch, **cell_patch(self.base, seed, self.definition.vary)})
            started = True
            result = train(recipe, ledger=self.ledger, progress=progress, study=self.name, variant=variant.name,
                           run_id=run_id)
            metrics = result.metrics
        except TrainingInterrupted:
            # Ctrl-C: the run is saved as interrupted; rerunning the study retrains the cell
            raise KeyboardInterrupt from None
        except (RunFailed, DltricksError) as e:  # NaN, a bad patch: a result, not a reason to stop
            failure = str(e)
            try:
                self.ledger.get(run_id)
            except DltricksError:  # refused before its first step: the ledger has no run
                started = False
        if claims.still_mine(self.ledger, claim):
            # A bad patch never reaches the ledger: the trial then names no run.
            st.record(self.study, self.definition, cell, variant.name, seed, run_id=run_id if started else None,
                      metrics=metrics, failure=failure)
