"""The ablation's verdict table for a terminal: every variant name and verdict whole at any width.

The layout is picked when rich renders it, from the width it is given: one line per variant where the
table fits; else the probabilities go under the interval; else the numbers stack in one column that
wraps, beside the name and the verdict, which never wrap or shorten.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

    from dltricks.ledger.variant_stats import VariantStats

COLOUR = {"helps": "green", "hurts": "red", "equivalent": "cyan", "baseline": "bold"}
GAP = 1  # spaces between columns


def _cells(s: VariantStats) -> dict[str, str]:
    """The plain text of one row's cells (the verdict without its colour)."""
    base = s.verdict == "baseline"
    ci = "" if base or s.delta != s.delta else f"{s.delta:+.3f} [{s.ci_low:+.3f},{s.ci_high:+.3f}]"
    probs = "" if base or s.prob_rope != s.prob_rope else f"{s.prob_worse:.2f}/{s.prob_rope:.2f}/{s.prob_better:.2f}"
    return {"variant": s.variant, "n": str(s.n), "mean": f"{s.mean:.4f}", "ci": ci, "probs": probs,
            "verdict": s.verdict + (" (fragile)" if s.fragile else ""),
            "need": "" if s.seeds_needed is None else str(s.seeds_needed)}


def _verdict(s: VariantStats) -> str:
    return f"[{COLOUR.get(s.verdict, 'yellow')}]{s.verdict}[/]" + (" (fragile)" if s.fragile else "")


def _width(rows: list[dict[str, str]], columns: dict[str, str]) -> int:
    """Width of a one-line-per-cell table: each column as wide as its header or widest cell."""
    widths = [max([cell_len(head), *(max((cell_len(x) for x in r[key].split("\n")), default=0) for r in rows)])
              for key, head in columns.items()]
    return sum(widths) + GAP * (len(widths) - 1)


WIDE = {"variant": "variant", "n": "n", "mean": "mean", "ci": "Δ [95% CI]", "probs": "P(worse/ROPE/better)",
        "verdict": "verdict", "need": "need"}


class VerdictTable:
    """A rich renderable: ``console.print(VerdictTable(stats, title))``.

    ``stats``: one row per variant (the reference's verdict is "baseline")."""

    def __init__(self, stats: Sequence[VariantStats], title: str):
        self.stats, self.title = list(stats), title

    def _table(self) -> Table:
        return Table(title=self.title, box=None, padding=(0, GAP), collapse_padding=True, pad_edge=False)

    def layout(self, width: int) -> Table:
        rows = [_cells(s) for s in self.stats]
        if _width(rows, WIDE) <= width:
            return self.wide()
        stacked = {**WIDE, "ci": "Δ [95% CI] / P(w/R/b)"}
        del stacked["probs"]
        if _width([{**r, "ci": f"{r['ci']}\n{r['probs']}"} for r in rows], stacked) <= width:
            return self.stacked()
        return self.narrow()

    def wide(self) -> Table:
        t = self._table()
        for key, head in WIDE.items():
            t.add_column(head, no_wrap=True, justify="right" if key in ("n", "need") else "left")
        for s, r in zip(self.stats, (_cells(s) for s in self.stats)):
            t.add_row(escape(r["variant"]), r["n"], r["mean"], r["ci"], r["probs"], _verdict(s), r["need"])
        return t

    def stacked(self) -> Table:
        """The probabilities under the interval: 15 columns fewer."""
        t = self._table()
        for head, right in (("variant", False), ("n", True), ("mean", False), ("Δ [95% CI] / P(w/R/b)", False),
                            ("verdict", False), ("need", True)):
            t.add_column(head, no_wrap=True, justify="right" if right else "left")
        for s, r in zip(self.stats, (_cells(s) for s in self.stats)):
            both = "\n".join(x for x in (r["ci"], r["probs"]) if x)
            t.add_row(escape(r["variant"]), r["n"], r["mean"], both, _verdict(s), r["need"])
        return t

    def narrow(self) -> Table:
        """Name and verdict whole; every number in one column that wraps in what width is left."""
        t = self._table()
        rows = [_cells(s) for s in self.stats]
        name_w = max([cell_len("variant"), *(cell_len(r["variant"]) for r in rows)])
        verdict_w = max([cell_len("verdict"), *(cell_len(r["verdict"]) for r in rows)])
        t.add_column("variant", no_wrap=True, min_width=name_w)
        t.add_column("verdict", no_wrap=True, min_width=verdict_w)
        t.add_column("n, mean, Δ [95% CI], P(w/R/b), need", overflow="fold")
        for s, r in zip(self.stats, rows):
            lines = [f"n {r['n']}  mean {r['mean']}", r["ci"] and f"Δ {r['ci']}",
                     "  ".join(x for x in (r["probs"] and f"P {r['probs']}", r["need"] and f"need {r['need']}") if x)]
            t.add_row(escape(r["variant"]), _verdict(s), escape("\n".join(x for x in lines if x)))
        return t

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.layout(options.max_width)
