"""An ablation study's report, assembled beside its renderer: from what the storage holds (handed in by
:mod:`dltricks.search`, which reads it) to the verdicts, the header, the notes and the files of
:func:`dltricks.ledger.report.write_report`, and the :class:`AblationResult` a caller prints.

This module knows recipes and the ledger's runs, never the search's storage: ``dltricks.search``
imports it, not the other way round.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dltricks.errors import DltricksError
from dltricks.recipe import Recipe

if TYPE_CHECKING:  # scipy (behind the statistics) takes seconds to import; a worker never needs it
    from dltricks.ledger.store import Ledger
    from dltricks.ledger.variant_stats import VariantStats

# figures a run writes into its folder that the study's report shows, one run per variant
RUN_FIGURES = ("adaptation.png", "zero_shot.png")


@dataclass
class AblationResult:
    study: str
    metric: str
    reference: str
    stats: list[VariantStats]
    scores: dict[str, dict[int, float]]
    failures: list[dict[str, Any]]
    report: dict[str, Path]
    cells_done: int = 0
    cells_total: int = 0  # with seeds = "auto": the cells done plus those the rule still asks for
    notes: list[str] = field(default_factory=list)  # things the reader must know (a trick the baseline turns off)
    rope: float = float("nan")
    # a paired bootstrap over test samples per variant (ledger.sample_bootstrap), where runs left per-sample files
    sample_intervals: list[Any] = field(default_factory=list)

    @property
    def verdicts(self) -> dict[str, str]:
        return {s.variant: s.verdict for s in self.stats}

    @property
    def partial(self) -> bool:
        """True while cells are still to run (a study running, interrupted, or waiting for a look)."""
        return self.cells_done < self.cells_total

    def rich_table(self):
        """The results as a rich renderable (what the CLI prints); every variant name and verdict stays whole
        at any width (:class:`dltricks.ledger.verdict_table.VerdictTable`)."""
        from dltricks.ledger.verdict_table import VerdictTable

        return VerdictTable(self.stats, f"{self.study}: {self.metric}, ROPE ±{self.rope:.3g}")

    def lines(self) -> list[str]:
        """The notes under the table: partial state, reasons for inconclusive and fragile verdicts."""
        out = []
        if self.partial:
            out.append(f"partial: {self.cells_done} of {self.cells_total} cells done; verdicts may change")
        out += [f"note: {n}" for n in self.notes]
        for s in self.stats:
            if s.verdict == "inconclusive" or s.fragile:
                why = s.reason + ("; the sign-flip cross-check does not confirm it" if s.fragile else "")
                out.append(f"{s.variant}: {s.verdict}: {why}")
        return out

    def table(self) -> str:
        """The results as plain text, for print() in Python (the CLI prints :meth:`rich_table`)."""
        import io

        from rich.console import Console

        buf = io.StringIO()
        Console(file=buf, width=120, no_color=True, color_system=None, highlight=False).print(self.rich_table())
        return buf.getvalue().rstrip("\n")

    def __str__(self) -> str:
        return "\n".join([self.table(), *self.lines()])

    def __repr__(self) -> str:
        verdicts = ", ".join(f"{v}: {w}" for v, w in self.verdicts.items() if w != "baseline")
        return f"<AblationResult {self.study} ({self.metric}, {self.cells_done}/{self.cells_total} cells): {verdicts}>"


@dataclass
class StudyFacts:
    """What the storage holds about an ablation study now, as :mod:`dltricks.search` reads it.

    ``definition``: the study as stored (name, recipe, variants [{name, on, patch}], reference, seeds,
    metric, higher_is_better, mode, tricks, schedule, rope, alpha). Per variant and seed: ``scores`` (the
    metric), ``metrics`` (every metric of the run), ``run_ids``; ``failures`` lists {variant, seed, reason};
    ``done`` cells are recorded and ``remaining`` still to run; ``unchanged`` variants train exactly the
    reference's recipe."""

    definition: dict[str, Any]
    scores: dict[str, dict[int, float]]
    metrics: dict[str, dict[int, dict[str, float]]]
    run_ids: dict[str, dict[int, str]]
    failures: list[dict[str, Any]]
    done: int
    remaining: int
    unchanged: set[str] = field(default_factory=set)


def scores_with_failures(scores: dict[str, dict[int, float]], failures: list[dict[str, Any]]
                         ) -> dict[str, dict[int, float]]:
    """Scores with NaN for each failed cell: a failed run is missing from the pairing, but its cell is done."""
    out = {v: dict(by_seed) for v, by_seed in scores.items()}
    for f in failures:
        out.setdefault(f["variant"], {}).setdefault(int(f["seed"]), math.nan)
    return out


def study_stats(facts: StudyFacts) -> list[VariantStats]:
    """The verdicts: paired comparisons at fixed seeds, or the sequential rule's looks (seeds = "auto")."""
    from dltricks.ledger.stats import compare, sequential_compare

    d = facts.definition
    if d.get("schedule"):
        rows, _, _ = sequential_compare(
            scores_with_failures(facts.scores, facts.failures), d["reference"], seeds=d["seeds"],
            schedule=d["schedule"], higher_is_better=d["higher_is_better"], alpha=d.get("alpha", 0.05),
            rope=d.get("rope"), metric=d["metric"], unchanged=facts.unchanged)
        return rows
    return compare(facts.scores, d["reference"], higher_is_better=d["higher_is_better"], unchanged=facts.unchanged,
                   rope=d.get("rope"), metric=d["metric"], alpha=d.get("alpha", 0.05))


def _base(d: dict[str, Any]) -> Recipe:
    return Recipe.from_dict(d["recipe"], source=f"study {d['name']}")


def _reference(d: dict[str, Any]) -> dict[str, Any]:
    return next(v for v in d["variants"] if v["name"] == d["reference"])


def switched_off(d: dict[str, Any]) -> list[str]:
    """Tricks the recipe already had on that the reference variant turns off: the reader must know
    that the baseline is not the recipe as written (mnist1d-cnn has one_cycle; --trick one_cycle
    makes its baseline a constant learning rate)."""
    base = _base(d)
    ref = _reference(d)
    out = []
    for t in d["tricks"]:
        if not t.get("off") or t["name"] in ref["on"]:
            continue
        try:
            had = all(base.get(k) == v for k, v in t["on"].items())
        except DltricksError:
            continue
        if had:
            change = ", ".join(f"{k} = {base.get(k)!r} -> {v!r}" for k, v in t["off"].items())
            out.append(f"the recipe has {t['name']} on; the {d['reference']} turns it off ({change})")
    return out


def changes(d: dict[str, Any]) -> dict[str, str]:
    """Per variant, the recipe keys whose value differs from the reference's: "train.lr: 0.01 -> 1e-06"."""
    from dltricks.ledger.writers import flatten

    base = _base(d)

    def flat(v: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return flatten(base.patch(v["patch"]).to_dict())
        except DltricksError:
            return None

    ref = flat(_reference(d)) or {}
    out = {}
    for v in d["variants"]:
        mine = flat(v)
        if mine is None:
            out[v["name"]] = "invalid patch: " + ", ".join(f"{k} = {x!r}" for k, x in v["patch"].items())
            continue
        diff = [f"{k}: {ref.get(k)!r} -> {mine.get(k)!r}" for k in sorted(set(ref) | set(mine))
                if ref.get(k) != mine.get(k)]
        out[v["name"]] = "; ".join(diff) if diff else ("" if v["name"] == d["reference"] else "no change")
    return out


def command_changes(d: dict[str, Any]) -> dict[str, str]:
    """Per variant of a command study, what its tricks add: "args: --lr 1e-5; env: AMP=1; {lr} = 0.1"."""
    out = {}
    for v in d["variants"]:
        p = v["patch"]
        parts = [f"args: {' '.join(p['args'])}"] if p.get("args") else []
        parts += [f"env: {k}={x}" for k, x in p.get("env", {}).items()]
        parts += [f"{{{k}}} = {x}" for k, x in p.get("set", {}).items()]
        out[v["name"]] = "; ".join(parts) or ("" if v["name"] == d["reference"] else "no change")
    return out


def command_text(d: dict[str, Any]) -> str:
    """The command study's command, folder and environment, where a recipe study shows its recipe."""
    c = d["command"]
    lines = [f"command = {c['line']!r}", f"cwd = {c['cwd']!r}"]
    lines += [f"env.{k} = {v!r}" for k, v in c.get("env", {}).items()]
    if c.get("timeout"):
        lines.append(f"cell_timeout = {c['timeout']:g}")
    return "\n".join(lines) + "\n"


def _seeds_line(d: dict[str, Any]) -> str:
    schedule, alpha = d.get("schedule") or [], d.get("alpha", 0.05)
    if not schedule:
        return ", ".join(map(str, d["seeds"]))
    return (f"auto: {schedule[0]} seeds, more only for inconclusive variants, up to {schedule[-1]} "
            f"(looks at {', '.join(map(str, schedule))}; Bonferroni alpha spending, "
            f"{alpha / len(schedule):.3g} per look)")


def write_study_report(ledger: Ledger, facts: StudyFacts, *, out: str | Path | None = None,
                       count_flops: Callable[[set[str]], dict[str, float]] | None = None) -> AblationResult:
    """Verdicts, header, notes and the report files (CSV, Markdown, HTML with plots) of one study.

    ``out``: the report's folder (default: the ledger's ``reports/<study>``). ``count_flops(names)``:
    FLOPs per sample of those variants' models, for runs recorded before runs counted their own."""
    from dltricks.ledger.report import write_report
    from dltricks.ledger.store import versions

    d = facts.definition
    stats = study_stats(facts)
    curves: dict[str, dict[int, dict[str, list[float]]]] = {}
    extras: dict[str, dict[str, float]] = {}
    figures: dict[str, Path] = {}
    commits = set()
    for v, by_seed in facts.run_ids.items():
        curves[v] = {}
        for seed, run_id in sorted(by_seed.items()):
            try:
                rec = ledger.get(run_id)
            except DltricksError:
                continue
            curves[v][seed] = rec.curves
            commits.add(rec.git_short)
            for name in RUN_FIGURES:  # the first seed's figures: what the set-up looks like, per variant
                if f"{v}: {name}" not in figures and (ledger.run_dir(run_id) / name).is_file():
                    figures[f"{v}: {name}"] = ledger.run_dir(run_id) / name
        ms = list(facts.metrics.get(v, {}).values())
        extras[v] = {k: sum(m[k] for m in ms) / len(ms) for k in ("wall_time_s", "params", "flops")
                     if ms and all(k in m for m in ms)}
    uncounted = {v["name"] for v in d["variants"] if "flops" not in extras.get(v["name"], {})}
    if uncounted and count_flops is not None:  # runs recorded before runs counted their FLOPs, or none yet
        for v, flops in count_flops(uncounted).items():
            extras.setdefault(v, {})["flops"] = flops

    rope = next((row.rope for row in stats if row.rope == row.rope), float("nan"))
    rope_source = "given" if d.get("rope") is not None else "default for this metric"
    done, total = facts.done, facts.done + facts.remaining
    command = d.get("command")  # a study of any command: no recipe, its tricks add arguments and variables
    off = [] if command else switched_off(d)
    from dltricks.ledger.sample_bootstrap import sample_intervals, sample_notes

    intervals = sample_intervals({v: {s: ledger.root / "runs" / r for s, r in by_seed.items()}
                                  for v, by_seed in facts.run_ids.items()}, d["reference"])
    off = off + sample_notes(intervals)
    notes = [f"partial: {done} of {total} cells done; the verdicts may change", *off] if facts.remaining else off
    header = {
        "study": d["name"], "mode": d["mode"],
        "metric": f"{d['metric']} ({'higher' if d['higher_is_better'] else 'lower'} is better)",
        "ROPE": f"±{rope:.4g} {d['metric']} ({rope_source})", "alpha": f"{d.get('alpha', 0.05)} (family-wise, Holm)",
        "reference": d["reference"], "seeds": _seeds_line(d),
        "varies per seed": ", ".join(d.get("vary") or ["seed"]),
        "cells": f"{done} of {total} done, {len(facts.failures)} failed",
        "git commit": ", ".join(sorted(c for c in commits if c)) or "not in a git repository",
        "tricks": "; ".join(f"{t['name']}: {t['on']}" for t in d["tricks"]),
        "environment": ", ".join(f"{k} {v}" for k, v in versions().items()),
        "storage": ledger.where,
    }
    folder = Path(out) if out else ledger.root / "reports" / d["name"]
    paths = write_report(folder, title=f"Ablation: {d['name']}", stats=stats, scores=facts.scores, metric=d["metric"],
                         higher_is_better=d["higher_is_better"], header=header, curves=curves, extras=extras,
                         failures=facts.failures, notes=notes,
                         changes=command_changes(d) if command else changes(d),
                         recipe=command_text(d) if command else Recipe.from_dict(d["recipe"]).to_toml(),
                         run_figures=figures)
    return AblationResult(d["name"], d["metric"], d["reference"], stats, facts.scores, facts.failures, paths,
                          cells_done=done, cells_total=total, notes=off, rope=rope, sample_intervals=intervals)
