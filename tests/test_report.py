"""The ablation report: sheet round-trip, plots, escaping, partial data."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from dltricks.ledger.report import write_report
from dltricks.ledger.stats import compare

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HEADER = {
    "git commit": "0123abcd4567",
    "study": "mnist1d-ablation",
    "mode": "ablate",
    "seeds": "0-5",
    "recipe": '[data]\nname = "mnist1d"\n\n[train]\nepochs = 4\n',
    "environment": "python 3.11\ntorch 2.13.0 (cpu)",
}


def _study(variants=("baseline", "label_smoothing", "<script>alert(1)</script>"), n_seeds=6):
    rng = np.random.default_rng(0)
    scores, curves = {}, {}
    for i, name in enumerate(variants):
        scores[name] = {s: 0.7 + 0.02 * i + float(rng.normal(0, 0.01)) for s in range(n_seeds)}
        curves[name] = {
            s: {"val_accuracy": list(np.linspace(0.3, scores[name][s], 5)), "train_loss": [2.0, 1.2, 0.8, 0.6, 0.5]}
            for s in range(n_seeds)
        }
    return scores, curves


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_report_round_trips_the_sheet_and_embeds_valid_plots(tmp_path):
    scores, curves = _study()
    scores["label_smoothing"][2] = float("nan")  # a diverged run
    stats = compare(scores, "baseline", higher_is_better=True)
    extras = {name: {"wall_time_s": 12.5 + i, "params": 123456.0} for i, name in enumerate(scores)}
    failures = [{"variant": "label_smoothing", "seed": 2, "reason": "loss became NaN at epoch 3 | lr too high"}]

    paths = write_report(tmp_path / "rep", title="Ablation <mnist1d>", stats=stats, scores=scores,
                         metric="accuracy", higher_is_better=True, header=HEADER, curves=curves,
                         extras=extras, failures=failures)

    assert set(paths) == {"csv", "md", "html", "forest", "seeds", "curves"}
    rows = _read_csv(paths["csv"])
    assert [r["variant"] for r in rows] == [s.variant for s in stats]
    for row, s in zip(rows, stats):
        for key in ("mean", "std", "delta", "ci_low", "ci_high", "p", "p_holm"):
            expected = getattr(s, key)
            if math.isnan(expected):
                assert math.isnan(float(row[key]))
            else:
                assert float(row[key]) == expected  # full precision
        assert int(row["n"]) == s.n and row["verdict"] == s.verdict
        assert row["seeds_needed"] == ("" if s.seeds_needed is None else str(s.seeds_needed))
        assert float(row["wall_time_s"]) == extras[s.variant]["wall_time_s"]
    assert rows[1]["n_paired"] == "5" and rows[1]["seeds"] == "0 1 3 4 5"

    html_text = paths["html"].read_text(encoding="utf-8")
    for key in ("forest", "seeds", "curves"):
        data = paths[key].read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000
        assert f'<img src="{paths[key].name}"' in html_text
    # The variant named like a script tag is shown, never executed.
    assert "<script>" not in html_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert "Ablation &lt;mnist1d&gt;" in html_text
    assert "loss became NaN at epoch 3" in html_text

    md = paths["md"].read_text(encoding="utf-8")
    assert "0123abcd4567" in md and "0123abcd4567" in html_text
    assert 'name = "mnist1d"' in md  # the recipe, verbatim in a code block
    assert "loss became NaN at epoch 3 \\| lr too high" in md  # table cell pipe escaped
    assert "![forest](forest.png)" in md
    # No stray temporary files from the atomic writes.
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == sorted(p.name for p in paths.values())


def test_report_with_single_variant_no_curves_and_nan(tmp_path):
    scores = {"baseline": {0: 0.5, 1: float("nan"), 2: 0.55}}
    stats = compare(scores, "baseline", higher_is_better=False)
    paths = write_report(tmp_path, title="one", stats=stats, scores=scores, metric="loss",
                         higher_is_better=False, header={"git commit": "abc"})
    assert "curves" not in paths
    assert paths["forest"].read_bytes()[:8] == PNG_MAGIC
    rows = _read_csv(paths["csv"])
    assert len(rows) == 1 and rows[0]["verdict"] == "baseline" and rows[0]["n"] == "2"
    assert "lower is better" in paths["md"].read_text(encoding="utf-8")


def test_report_on_a_study_still_running(tmp_path):
    # Partial data: a variant has scores but no stats yet, curves are ragged, a name has '$'.
    scores, curves = _study(variants=("baseline", "cost $5 trick"), n_seeds=3)
    stats = compare(scores, "baseline", higher_is_better=True)
    scores["still running"] = {0: 0.71}
    curves["still running"] = {0: {"val_accuracy": [0.2, 0.4]}, 1: {"val_accuracy": [0.25]}}
    paths = write_report(tmp_path, title="live", stats=stats, scores=scores, metric="accuracy",
                         higher_is_better=True, header={}, curves=curves)
    assert paths["curves"].read_bytes()[:8] == PNG_MAGIC
    assert "still running" in paths["md"].read_text(encoding="utf-8")  # in the per-seed table
    assert len(_read_csv(paths["csv"])) == 2  # the sheet lists only variants with stats
    # Calling again (the next refresh) replaces the files in place.
    again = write_report(tmp_path, title="live", stats=stats, scores=scores, metric="accuracy",
                         higher_is_better=True, header={}, curves=curves)
    assert again == paths


@pytest.mark.parametrize("name", ["a|b", "x*y_z", "`tick`"])
def test_markdown_cells_escape_table_syntax(tmp_path, name):
    scores = {"baseline": {0: 1.0, 1: 1.1}, name: {0: 1.2, 1: 1.3}}
    stats = compare(scores, "baseline", higher_is_better=True)
    md = write_report(tmp_path, title="t", stats=stats, scores=scores, metric="m", higher_is_better=True,
                      header={})["md"].read_text(encoding="utf-8")
    for part in ("## Results", "## The numbers behind each verdict", "## Scores by seed"):
        sheet = md.split(part)[1].split("\n## ")[0]
        table = [line for line in sheet.splitlines() if line.startswith("|")]
        # Every row has as many unescaped cell separators as the header row.
        count = [line.replace("\\|", "").count("|") for line in table]
        assert len(table) == 4 and len(set(count)) == 1, part


def test_html_leads_with_the_answer_and_folds_the_recipe_last(tmp_path):
    # The structure that puts the answer on the first screen; benchmarks/report_first_screen.py checks the
    # same in headless Chromium at 1280x800 (summary, table and forest plot end above y = 800).
    scores, _ = _study(variants=("baseline", "+good", "+same"), n_seeds=4)
    scores["+same"] = dict(scores["baseline"])
    stats = compare(scores, "baseline", higher_is_better=True, metric="accuracy")
    header = {"study": "s", "metric": "accuracy (higher is better)", "ROPE": "±0.005 accuracy", **HEADER}
    paths = write_report(tmp_path, title="t", stats=stats, scores=scores, metric="accuracy", higher_is_better=True,
                         header=header, changes={"+good": "train.lr: 0.01 -> 0.1", "+same": "no change"},
                         notes=["the recipe has one_cycle on; the baseline turns it off"])
    text = paths["html"].read_text(encoding="utf-8")
    order = [text.index(marker) for marker in (
        "<h1>", 'class="note"', 'id="summary"', '<table class="results">', 'class="forest"',
        "The numbers behind each verdict", "Scores by seed", '<dl class="header">', '<details id="recipe">')]
    assert order == sorted(order)
    results = text.split('<table class="results">')[1].split("</table>")[0]
    assert "train.lr: 0.01 -&gt; 0.1" in results and "P(worse / ROPE / better)" in results
    assert "equivalent" in results and "helps" in results
    assert text.count("<dt>metric</dt>") == 1 and text.count("<dt>") == len(set(header) - {"recipe", "environment"})
    recipe = text.split('<details id="recipe">')[1].split("</details>")[0]
    assert "name = &quot;mnist1d&quot;" in recipe and text.count("name = &quot;mnist1d&quot;") == 1
    rows = {r["variant"]: r for r in _read_csv(paths["csv"])}
    assert rows["+same"]["verdict"] == "equivalent" and rows["+same"]["changes"] == "no change"
    assert float(rows["+good"]["rope"]) == 0.005 and rows["+good"]["reason"]
    md = paths["md"].read_text(encoding="utf-8")
    assert md.index("## Results") < md.index("![forest]") < md.index("## Study") < md.index("## Full resolved recipe")
    assert md.count("**metric**") == 1


def _render(renderable, width: int) -> str:
    import io

    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=width, no_color=True, color_system=None, highlight=False).print(renderable)
    return buf.getvalue()


@pytest.mark.parametrize("width", [120, 80, 60])
def test_verdict_table_keeps_every_variant_name_and_verdict_whole(width):
    # The README's study at 80 columns used to print "+batch_n…" and "+label_s…": the answer cut off.
    from dltricks.ledger.verdict_table import VerdictTable

    rng = np.random.default_rng(1)
    names = ["baseline", "+batch_norm", "+label_smoothing", "+gradient_clipping+one_cycle"]
    shift = {"baseline": 0.0, "+batch_norm": 0.03, "+label_smoothing": 0.0, "+gradient_clipping+one_cycle": -0.02}
    scores = {v: {s: 0.8 + shift[v] + float(rng.normal(0, 0.004)) for s in range(8)} for v in names}
    stats = compare(scores, "baseline", higher_is_better=True, metric="test_accuracy")
    stats[3].fragile = True  # the longest verdict there is: "inconclusive (fragile)" or "hurts (fragile)"
    text = _render(VerdictTable(stats, "mnist1d-ablate-demo-add-1a2b3c4d: test_accuracy, ROPE ±0.005"), width)
    assert max(len(line) for line in text.splitlines()) <= width
    lines = text.splitlines()
    for s in stats:
        verdict = s.verdict + (" (fragile)" if s.fragile else "")
        # name and verdict on the same line, both whole
        assert any(s.variant in line and verdict in line for line in lines), (s.variant, verdict, text)
    assert "…" not in text
    if width == 120:  # room enough: one line per variant, every column in it
        assert any("+label_smoothing" in line and "/" in line and "[" in line for line in lines)
