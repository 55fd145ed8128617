"""The one progress display of every sweep: cells done of all, the job's own line (running and failed
cells, or the best so far), and the time left, read from the shared storage."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dltricks.search.cells import Job


class Progress:
    """``with Progress(enabled, job) as bar: ... bar.refresh()``; silent when disabled or under
    ``DLTRICKS_NO_PROGRESS=1`` (the local workers' children)."""

    def __init__(self, enabled: bool, job: Job):
        self.enabled = enabled and os.environ.get("DLTRICKS_NO_PROGRESS", "") in ("", "0")
        self.job = job

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.p = Bar(TextColumn(f"[bold]{self.job.name}[/]"), BarColumn(), MofNCompleteColumn(),
                         TextColumn("{task.fields[line]}"), TimeRemainingColumn())
            self.p.__enter__()
            self.task = self.p.add_task("cells", total=None, line="")
            self.refresh()
        return self

    def refresh(self) -> None:
        if not self.enabled:
            return
        done, total, line = self.job.status()
        self.p.update(self.task, completed=done, total=total, line=line)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.p.__exit__(*exc)
