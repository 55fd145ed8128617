"""A worker: claims cells of a study one at a time, trains each as a ledger run, records it as a trial.

`dltricks ablate --workers N` runs N of these on this machine; `dltricks worker --study NAME --storage URL`
adds one anywhere that reaches the storage. Claims (:mod:`dltricks.search.claims`) keep any two from
running the same cell.
"""

from __future__ import annotations

from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search import claims
from dltricks.search import study as st


def work(ledger: Ledger, study_name: str, *, threads: int = 0, progress: bool = False,
         on_cell=None) -> int:
    """Claim and run cells of a study until none is left to claim; return how many this worker ran."""
    from dltricks.search import trials

    if trials.is_search(ledger, study_name):  # a tuning or architecture search: trials, not variant x seed cells
        return trials.work(ledger, study_name, threads=threads, progress=progress, on_trial=on_cell)
    import torch

    from dltricks.errors import RunFailed
    from dltricks.loop.training import TrainingInterrupted
    from dltricks.runner.run import train

    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        claims.ensure_table(ledger)
        optuna_study, definition = st.load(ledger, study_name)
        base = Recipe.from_dict(definition.recipe, source=f"study {study_name}")
        ran = 0
        cells = ((cell, (cell, variant, seed)) for cell, variant, seed in st.cells_to_run(optuna_study, definition))

        def finished() -> set[str]:
            return st.results(optuna_study, definition).done

        for (cell, variant, seed), claim, run_id in claims.claim_each(ledger, study_name, cells, finished):
            with claims.settle(ledger, claim):
                if claim.gave_up:
                    st.record(optuna_study, definition, cell, variant.name, seed, run_id=None,
                              failure=f"its worker died {claims.MAX_ATTEMPTS} times")
                    continue
                failure, metrics, started = None, None, False
                with claims.Heartbeat(ledger, claim):
                    try:
                        recipe = base.patch({**variant.patch, "seed": seed})
                        started = True
                        result = train(recipe, ledger=ledger, progress=progress, study=study_name,
                                       variant=variant.name, run_id=run_id)
                        metrics = result.metrics
                    except TrainingInterrupted:
                        # Ctrl-C: the run is saved as interrupted; rerunning the study retrains the cell
                        raise KeyboardInterrupt from None
                    except (RunFailed, DltricksError) as e:  # NaN, a bad patch: a result, not a reason to stop
                        failure = str(e)
                        try:
                            ledger.get(run_id)
                        except DltricksError:  # refused before its first step: the ledger has no run
                            started = False
                if claims.still_mine(ledger, claim):
                    # A bad patch never reaches the ledger: the trial then names no run.
                    st.record(optuna_study, definition, cell, variant.name, seed,
                              run_id=run_id if started else None, metrics=metrics, failure=failure)
            ran += 1
            if on_cell is not None:
                on_cell()
        return ran
    finally:
        if threads:
            torch.set_num_threads(threads_before)  # the caller's process keeps its own setting
