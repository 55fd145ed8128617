"""One CSV and Markdown writer for every table of results: the sheet of runs and the compression report."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from types import SimpleNamespace

from dltricks.compress.report import COLUMNS, write_report
from dltricks.ledger.writers import csv_table, markdown_table
from dltricks.recipe import Recipe


def test_csv_and_markdown_cells():
    text = csv_table(["a", "b", "c"], [[None, [1, 2], 'say "hi", then go'], [1.5, {"k": 1}, "x"]])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["a", "b", "c"], ["", "[1, 2]", 'say "hi", then go'], ["1.5", '{"k": 1}', "x"]]
    md = markdown_table(["name", "acc"], [["a|b", 0.5], ["two\nlines", None]], right=["acc"]).splitlines()
    assert md == ["| name | acc |", "| --- | ---: |", "| a\\|b | 0.5 |", "| two lines |  |"]


def test_the_compression_report_writes_through_the_ledgers_writers(tmp_path: Path):
    rows = [{"variant": "source", "run": "aaaaaaaaaaaa", "size_bytes": 40000, "size_ratio": 1.0, "latency_b1_ms": 0.2,
             "speedup_b1": 1.0, "latency_b64_ms": 2.0, "speedup_b64": 1.0, "test_accuracy": 0.9, "sparsity": 0.0},
            {"variant": "dyn|amic", "run": "bbbbbbbbbbbb", "size_bytes": 10000, "size_ratio": 4.0,
             "latency_b1_ms": 0.1, "speedup_b1": 2.0, "latency_b64_ms": 1.0, "speedup_b64": 2.0,
             "test_accuracy": 0.89, "test_accuracy_delta": -0.01, "delta_ci_low": -0.03, "delta_ci_high": 0.01,
             "sparsity": 0.0}]
    result = SimpleNamespace(rows=rows, source="aaaaaaaaaaaa", failures=[])
    paths = write_report(tmp_path, result, recipe=Recipe.load("mnist1d-mlp"))
    got = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert list(got[0]) == COLUMNS and [r["variant"] for r in got] == ["source", "dyn|amic"]
    assert got[0]["test_accuracy_delta"] == "" and float(got[1]["size_ratio"]) == 4.0
    md = paths["md"].read_text().splitlines()
    table = [line for line in md if line.startswith("|")]
    assert table[0].startswith("| variant | run | size |") and table[1].startswith("| --- | --- | ---: |")
    assert table[3].startswith("| dyn\\|amic | bbbbbb | ") and "-1.0 [-3.0,+1.0]" in table[3]
