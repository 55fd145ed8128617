"""The advisor's report: one panel per piece of advice in the terminal, or JSON."""

from __future__ import annotations

import json

from rich.console import Group
from rich.panel import Panel
from rich.text import Text

from dltricks.analysis.advice import RULES, Advice

__all__ = ["advice_to_json", "render_advice"]


def advice_to_json(advice: list[Advice], recipe=None) -> str:
    """``{"recipe": name, "advice": [...]}`` as indented JSON."""
    return json.dumps({"recipe": getattr(recipe, "name", None), "count": len(advice),
                       "advice": [a.to_dict() for a in advice]}, indent=2, default=str)


def render_advice(advice: list[Advice], recipe=None):
    """A rich renderable: one panel per advice, or a line saying the recipe looks sound."""
    name = getattr(recipe, "name", "recipe")
    if not advice:
        return Text(f"{name}: no advice, the recipe follows the tips the advisor checks ({len(RULES)} rules)")
    panels = []
    for a in advice:
        body = Text()
        body.append("tip: ", style="bold")
        body.append(a.tip + "\n")
        body.append("evidence: ", style="bold")
        body.append(a.evidence + "\n")
        body.append("fix: ", style="bold")
        body.append(", ".join(f"{k} = {json.dumps(v)}" for k, v in a.patch.items()) or "no recipe key; see tip")
        if a.reference:
            body.append("\nreference: ", style="bold")
            body.append(a.reference)
        panels.append(Panel(body, title=f"[bold]{a.rule}[/]: {a.title}", title_align="left", expand=True))
    return Group(Text(f"{name}: {len(advice)} piece{'s' if len(advice) != 1 else ''} of advice"), *panels)
