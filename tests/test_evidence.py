"""`dltricks evidence`: every claim runs (quick), resumes, tunes fairly, measures costs exactly, and writes the
table the docs include."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dltricks.ledger.evidence import EvidenceRow, agreement, markdown_table, read_rows, write_docs
from dltricks.search.evidence import CLAIMS, Options, claims, evidence
from dltricks.search.evidence.run import task_recipe

ROOT = Path(__file__).resolve().parents[1]


def dltricks(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "DLTRICKS_LEDGER": ""}
    return subprocess.run([sys.executable, "-m", "dltricks.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_every_claim_has_a_task_that_validates_a_tip_and_a_published_anchor():
    names = [c.name for c in CLAIMS]
    assert len(names) == len(set(names)) and len(names) >= 40
    for c in CLAIMS:
        assert c.tip_text() and c.anchor.source and c.anchor.result, c.name
        assert c.anchor.expects in ("helps", "hurts", "equivalent", "lower", "higher", "same"), c.name
        for s in c.settings or (None,):
            for quick in (False, True):
                task_recipe(c, s, quick)  # raises on a key the schema no longer has


def test_quick_evidence_runs_every_row_and_writes_the_table(tmp_path):
    """The whole catalogue on tiny data, as the README says: every claim gives its rows, none fails."""
    out = tmp_path / "table"
    docs = tmp_path / "docs"
    p = dltricks("evidence", "--quick", "--workers", "2", "--out", str(out), "--docs", str(docs), "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = read_rows(out / "evidence.json")
    assert {r.claim for r in rows} == {c.name for c in CLAIMS}
    for r in rows:
        assert r.verdict not in ("not run", "failed"), (r.claim, r.variant, r.metric, r.reason)
        assert r.anchor, r.claim
        if r.kind == "effect":  # a cost is exact at any size; an effect on tiny data means nothing
            assert r.quick and r.agreement == "— (quick run)"
            assert r.seeds >= 1 and not math.isnan(r.delta), (r.claim, r.metric)
    settings = {r.setting for r in rows if r.claim == "group_norm_small_batch"}
    assert settings == {"batch 2", "batch 4", "batch 16"}  # the curve, not one point
    html = (out / "evidence.html").read_text()
    assert html.index("<table") < html.index('src="forest-')  # the table first, then a forest plot per family
    assert (out / "forest-normalisation.png").stat().st_size > 1000
    assert "studies/" in (out / "evidence.md").read_text()  # each row links its study's report
    assert '<a href="studies/' in html
    table = (docs / "table.md").read_text()
    assert all(f"| {c.name}" in table for c in CLAIMS)
    assert (docs / "claims" / "label_smoothing.md").is_file()

    # The same command again resumes: nothing is trained twice, and each row keeps the time it took.
    runs_before = len(list((tmp_path / "dltricks-runs" / "runs").iterdir()))
    p = dltricks("evidence", "--quick", "--only", "label_smoothing", "--out", str(out), "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(list((tmp_path / "dltricks-runs" / "runs").iterdir())) == runs_before
    again = {(r.claim, r.metric, r.variant): r for r in read_rows(out / "evidence.json")}
    first = {(r.claim, r.metric, r.variant): r for r in rows}
    assert again.keys() == first.keys()
    key = ("label_smoothing", "test_accuracy", "+label_smoothing")
    assert again[key].wall_s == first[key].wall_s and again[key].study == first[key].study


def test_a_killed_evidence_run_keeps_its_finished_rows_and_the_rerun_finishes(tmp_path):
    out = tmp_path / "t"
    cmd = [sys.executable, "-m", "dltricks.cli", "evidence", "--quick", "--only", "same_padding", "--only",
           "strided_conv", "--only", "spp", "--workers", "1", "--out", str(out), "-q"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "DLTRICKS_LEDGER": ""})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "evidence.json").is_file():
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9, workers and all
    proc.wait()
    kept = read_rows(out / "evidence.json")
    assert kept and kept[0].claim == "same_padding"
    p = dltricks(*cmd[3:], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = read_rows(out / "evidence.json")
    assert [r.claim for r in rows] == ["same_padding", "strided_conv", "spp"]
    assert rows[0].study == kept[0].study


def test_tuned_protocol_gives_every_arm_the_same_tuning_budget_on_validation(tmp_path):
    rows = evidence(["label_smoothing"], options=Options(quick=True, tuned=2, workers=1, progress=False),
                    ledger=f"sqlite:///{tmp_path}/l.db", out=tmp_path / "t")
    assert {r.protocol for r in rows} == {"tuned 2 (train.lr on val_accuracy)"}
    from dltricks.ledger import Ledger
    from dltricks.search import study as st

    ledger = Ledger(url=f"sqlite:///{tmp_path}/l.db")
    _, d = st.load(ledger, rows[0].study)
    lrs = {v.name: v.patch["train.lr"] for v in d.variants}  # each arm runs at the rate its own tuning found
    assert set(lrs) == {"baseline", "+label_smoothing"} and all(1e-4 <= lr <= 0.1 for lr in lrs.values())
    import optuna

    tuned = [s for s in optuna.get_all_study_summaries(ledger.url) if s.study_name.startswith("mnist1d-cnn-tune")]
    assert len(tuned) == 2 and all(s.n_trials == 2 for s in tuned)  # one tuning study per arm, 2 trials each


def test_costs_are_counted_exactly_and_the_stack_of_3x3_keeps_the_receptive_field(tmp_path):
    rows = evidence(["stack_3x3_cost", "stack_3x3_cost_1d", "separable_cost"], options=Options(progress=False),
                    ledger=f"sqlite:///{tmp_path}/l.db", out=tmp_path / "t")
    by = {(r.claim, r.setting, r.metric): r for r in rows}
    assert by[("stack_3x3_cost", "widths 64-64-64", "receptive_field")].verdict == "same"
    # 1D: three 3-wide convs hold 9 weights per channel pair against 7: the tip holds in 2D and 3D only
    assert by[("stack_3x3_cost_1d", "", "params")].verdict == "higher"
    assert by[("stack_3x3_cost_1d", "", "params")].agreement == "agrees"
    deep = by[("stack_3x3_cost", "widths 64-64-64", "params")]
    assert deep.verdict == "lower" and deep.ratio < 0.8
    assert by[("separable_cost", "", "params")].ratio < 0.5
    assert all(r.protocol == "exact" and r.seeds == 0 for r in rows)


def test_agreement_reads_the_verdict_against_the_paper():
    row = EvidenceRow("c", "f", "tip", "t", "task", "test_accuracy", "effect", "a", "b", expects="helps")
    for verdict, said in [("helps", "agrees"), ("hurts", "disagrees"), ("equivalent", "disagrees"),
                          ("inconclusive", "undecided")]:
        row.verdict = verdict
        assert agreement(row) == said
    row.quick = True
    assert agreement(row) == "— (quick run)"
    assert "| c |" in markdown_table([row]) or "| c " in markdown_table([row])


def test_write_docs_gives_one_fragment_per_claim(tmp_path):
    rows = [EvidenceRow("a_claim", "fam", "Tip. More.", "t", "task", "params", "cost", "x", "y", baseline_mean=2.0,
                        variant_mean=1.0, verdict="lower", expects="lower", protocol="exact")]
    written = write_docs(tmp_path, rows)
    text = (tmp_path / "claims" / "a_claim.md").read_text()
    assert "×0.5" in text and "lower (exact)" in text and "agrees" in text and "Tip." in text and "More" not in text
    assert tmp_path / "table.md" in written


@pytest.mark.parametrize("args, says", [(["--only", "grup_norm"], "unknown claim 'grup_norm'"),
                                        (["--tuned", "-1"], "must be 0 or more"),
                                        (["--seeds", "two"], "is not a whole number")])
def test_bad_evidence_arguments_get_one_line_and_nothing_runs(tmp_path, args, says):
    p = dltricks("evidence", "--quick", *args, cwd=tmp_path, timeout=120)
    assert p.returncode == 2 and says in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "dltricks-runs").exists()


def test_claims_by_name():
    assert [c.name for c in claims(["spp", "batch_norm"])] == ["spp", "batch_norm"]


def test_two_machines_on_one_postgresql_ledger_share_the_cells_of_each_study(tmp_path, fresh_postgres_url):
    """The same command on two machines (here two processes with homes of their own): each cell trains once."""
    procs = []
    for i in range(2):
        home = tmp_path / f"machine{i}"
        home.mkdir()
        env = {**os.environ, "DLTRICKS_HOME": str(home), "DLTRICKS_LEDGER": fresh_postgres_url}
        procs.append(subprocess.Popen([sys.executable, "-m", "dltricks.cli", "evidence", "--quick", "--only",
                                       "lr_annealing", "--workers", "1", "-q"], cwd=home, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    from dltricks.ledger import Ledger

    runs = Ledger(url=fresh_postgres_url).runs()
    assert len(runs) == 4 * 2  # baseline and 3 schedules, 2 seeds each: no cell twice
    tables = [read_rows(tmp_path / f"machine{i}" / "evidence-quick" / "evidence.json")  # the ledger's home
              for i in range(2)]
    assert [(r.variant, r.delta) for r in tables[0]] == [(r.variant, r.delta) for r in tables[1]]


def test_the_docs_table_is_generated_for_every_claim_by_a_full_run():
    """docs/evidence is what `dltricks evidence --docs docs/evidence` wrote: a row for every claim, no quick run."""
    table = (ROOT / "docs" / "evidence" / "table.md").read_text()
    header = (ROOT / "docs" / "evidence" / "header.md").read_text()
    missing = [c.name for c in CLAIMS if f"| {c.name}" not in table]
    assert not missing, f"rerun `dltricks evidence --docs docs/evidence` for {missing}"
    assert "git commit" in header and "quick" not in header and "(quick run)" not in table
