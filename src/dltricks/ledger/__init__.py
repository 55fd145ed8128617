"""The run ledger: every run with its git version and results, and the sheet that lists them.

Seed advice: "use git; keep a sheet of the versions and their results". A run records the
commit it ran from (and its uncommitted diff), its resolved recipe, seed and versions; the
sheet shows runs side by side and diffs two of them.
"""

from dltricks.ledger.gitinfo import GitState, git_state
from dltricks.ledger.record import STATUSES, RunRecord
from dltricks.ledger.sheet import (
    MISSING,
    MetricDelta,
    RunDiff,
    diff_runs,
    render_diff,
    runs_table,
    to_csv,
    to_json,
    to_markdown,
)
from dltricks.ledger.store import Ledger, RunExistsError

__all__ = [
    "MISSING",
    "STATUSES",
    "GitState",
    "Ledger",
    "MetricDelta",
    "RunDiff",
    "RunExistsError",
    "RunRecord",
    "diff_runs",
    "git_state",
    "render_diff",
    "runs_table",
    "to_csv",
    "to_json",
    "to_markdown",
]
