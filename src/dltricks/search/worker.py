"""`dltricks worker`: join any study in the storage, on this machine or another, until no cell is left.

`dltricks worker --study NAME --storage URL` runs cells of an ablation study (variant x seed) or trials
of a search, whichever NAME is; the search's kind says which proposer draws its configurations. This
module is the only one in search/ that knows every kind of study, and nothing in search/ imports it.
"""

from __future__ import annotations

from collections.abc import Callable

from dltricks.ledger import Ledger
from dltricks.search import cells
from dltricks.search.command_job import CommandJob, is_command_study
from dltricks.search.command_tune import CommandSearchJob
from dltricks.search.definition import is_search, load
from dltricks.search.nas import ArchProposer
from dltricks.search.study_job import StudyJob
from dltricks.search.trials import Proposer, SearchJob
from dltricks.search.tune import ParamProposer

PROPOSERS: dict[str, Callable[[], Proposer]] = {"tune": ParamProposer, "nas": ArchProposer}


def open_job(ledger: Ledger, name: str) -> cells.Job:
    """The study ``name`` as a job: a search's trials with the proposer of its kind, else ablation cells."""
    if is_search(ledger, name):
        _, d = load(ledger, name)
        if d.command:
            return CommandSearchJob(ledger, name)
        return SearchJob(ledger, name, PROPOSERS[d.kind]())
    if is_command_study(ledger, name):
        return CommandJob(ledger, name)
    return StudyJob(ledger, name)


def work(ledger: Ledger, study_name: str, *, threads: int = 0, progress: bool = False,
         on_cell: Callable[[], None] | None = None) -> int:
    """Claim and run cells of a study until none is left to claim; return how many this worker ran."""
    return cells.work(open_job(ledger, study_name), threads=threads, progress=progress, on_cell=on_cell)
