"""The text of a verdict: one line that says why a variant got it (or what is missing for one)."""

from __future__ import annotations

import math

from dltricks.ledger.variant_stats import VariantStats


def reason(row: VariantStats, level: float) -> str:
    """Why ``row`` got its verdict; ``level`` is the corrected alpha each claim was held to."""
    r = f"±{row.rope:.3g}"
    if row.verdict in ("helps", "hurts"):
        prob = row.prob_better if row.verdict == "helps" else row.prob_worse
        return (f"P({'better' if row.verdict == 'helps' else 'worse'} by more than the ROPE {r}) = {prob:.4f}; "
                f"corrected p {row.p_beyond_holm:.2g} < {level:.3g}")
    if row.verdict == "equivalent":
        return f"P(inside the ROPE {r}) = {row.prob_rope:.4f}; corrected TOST p {row.p_equiv_holm:.2g} < {level:.3g}"
    if math.isnan(row.ci_low):
        where = ""
    elif row.ci_low > row.rope or row.ci_high < -row.rope:
        where = f"the 95% CI [{row.ci_low:+.3g}, {row.ci_high:+.3g}] lies beyond the ROPE {r} but not after correction"
    elif -row.rope < row.ci_low and row.ci_high < row.rope:
        where = f"the 95% CI [{row.ci_low:+.3g}, {row.ci_high:+.3g}] lies in the ROPE {r} but not after correction"
    else:
        where = f"the 95% CI [{row.ci_low:+.3g}, {row.ci_high:+.3g}] straddles the ROPE edge {r}"
    more = f"; about {row.seeds_needed} paired seeds would decide" if row.seeds_needed else ""
    return (where or "undefined statistics") + more

