"""A real ablation study shared through PostgreSQL: two `dltricks worker` processes join one study
(runs, claims and Optuna trials all in the same database) and every cell is run exactly once.

CI installs PostgreSQL; the ``fresh_postgres_url`` fixture starts a throwaway server on localhost
and fails (never skips) when PostgreSQL is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import optuna
from optuna.trial import TrialState
from sqlalchemy import select

from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.search import claims
from dltricks.search import study as st
from dltricks.search.ablate import define, report
from dltricks.tricks import parse_trick

SMALL = ["data.num_samples=1200", "train.epochs=3", "model.channels=[8, 16]", "train.schedule=constant"]


def test_two_workers_share_a_postgresql_study(fresh_postgres_url, ledger_home):
    url = fresh_postgres_url
    ledger = Ledger(url)
    recipe = Recipe.load("mnist1d-cnn", SMALL)
    tricks = [parse_trick("ls:train.label_smoothing=0.1"), parse_trick("slow:train.lr=1e-6")]
    definition = define(recipe, tricks, mode="add", seeds=4, study="shared")
    claims.ensure_table(ledger)
    st.create_or_load(ledger, definition)
    cells = [c for c, _, _ in definition.cells()]
    assert len(cells) == 12

    env = {**os.environ, "DLTRICKS_HOME": str(ledger_home), "OMP_NUM_THREADS": "1"}
    env.pop("DLTRICKS_LEDGER", None)
    cmd = [sys.executable, "-m", "dltricks.cli", "worker", "--study", "shared", "--storage", url,
           "--threads", "1", "--quiet"]
    procs = [subprocess.Popen(cmd, cwd=ledger_home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=400) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    ran = [int(out.split("ran ")[1].split()[0]) for out, _ in outputs]
    assert sum(ran) == 12

    # every cell exactly once in the Optuna storage
    trials = optuna.load_study(study_name="shared", storage=url).get_trials(deepcopy=False)
    assert Counter(t.user_attrs["cell"] for t in trials) == {c: 1 for c in cells}
    assert {t.state for t in trials} == {TrialState.COMPLETE}

    # one claim per cell, all done, and both workers ran cells
    rows = ledger.transaction(lambda c: c.execute(
        select(claims.claims).where(claims.claims.c.study == "shared")).all())
    assert sorted((r.cell, r.attempt, r.state) for r in rows) == sorted((c, 0, "done") for c in cells)
    worker_pids = {p.pid for p in procs}
    by_pid = Counter(r.pid for r in rows)
    assert set(by_pid) == worker_pids, f"cells per worker: {dict(by_pid)}"
    assert sorted(by_pid.values()) == sorted(ran)

    # the ledger runs live in the same PostgreSQL, one per trial, linked to the study
    runs = ledger.runs(study="shared")
    assert len(runs) == 12 and {r.status for r in runs} == {"completed"}
    assert {r.pid for r in runs} == worker_pids
    assert {r.id for r in runs} == {t.user_attrs["run_id"] for t in trials}
    assert all(r.variant in ("baseline", "+ls", "+slow") for r in runs)
    assert not (ledger_home / "ledger.db").exists()  # nothing went to a local SQLite file

    # any machine that reaches the database can write the report
    result = report("shared", ledger=Ledger(url), out=ledger_home / "report")
    assert [s.n for s in result.stats] == [4, 4, 4]
    assert result.report["html"].is_file() and (ledger_home / "report" / "report.csv").is_file()
