"""The one worker loop of every sweep (ablation, tuning, architecture search): claim a cell, run it,
record it, until none is left to claim.

What a cell is and how it is run and recorded belongs to a :class:`Job` (ablation cells in
:mod:`dltricks.search.study_job`, search trials in :mod:`dltricks.search.trials`); claims
(:mod:`dltricks.search.claims`) keep any two workers, here or on other machines, from running the same
cell, and hand a dead worker's cell to the next at attempt + 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from dltricks.ledger import Ledger
from dltricks.search import claims


class Job(Protocol):
    """A study as one worker process sees it (each process opens its own: storages are per process)."""

    ledger: Ledger
    name: str

    def cells(self) -> Iterable[tuple[str, Any]]:
        """(cell id, what the cell needs) in the order workers should take them; may wait and go on
        (a sequential study's next look)."""

    def done(self) -> set[str]:
        """Cell ids recorded as finished."""

    def run(self, cell: str, payload: Any, claim: claims.Claim, run_id: str, progress: bool) -> None:
        """Run the cell as run ``run_id`` and record its result (only while ``claim`` is still this worker's)."""

    def give_up(self, cell: str, payload: Any) -> None:
        """Record the cell failed: its workers died :data:`claims.MAX_ATTEMPTS` times."""

    def left(self) -> bool:
        """True while cells are still to run (claimed by someone or not)."""

    def status(self) -> tuple[int, int, str]:
        """(cells done, cells in all, a short line: running / failed / best so far), for the progress bar."""


def work(job: Job, *, threads: int = 0, progress: bool = False, on_cell: Callable[[], None] | None = None) -> int:
    """Claim and run cells of ``job`` until none is left to claim; return how many this worker ran (a cell
    given up after its workers died too often is recorded, not run).

    ``threads``: torch threads while it works (the caller's setting comes back after)."""
    if threads:  # a command study's workers never import torch: its cells are other processes
        import torch

        threads_before = torch.get_num_threads()
        torch.set_num_threads(threads)
    try:
        claims.ensure_table(job.ledger)
        ran = 0
        for (cell, payload), claim, run_id in claims.claim_each(
                job.ledger, job.name, ((cell, (cell, payload)) for cell, payload in job.cells()), job.done):
            with claims.settle(job.ledger, claim):
                if claim.gave_up:
                    job.give_up(cell, payload)  # recorded failed, not run: it does not count as run here
                else:
                    with claims.Heartbeat(job.ledger, claim):
                        job.run(cell, payload, claim, run_id, progress)
                    ran += 1
            if on_cell is not None:
                on_cell()
        return ran
    finally:
        if threads:
            torch.set_num_threads(threads_before)  # the caller's process keeps its own setting
