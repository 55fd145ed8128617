"""``dltricks inspect``: what a recipe's model sees and costs, layer by layer, and two recipes side by side.

    ins = inspect_recipe(Recipe.load("mnist1d-cnn"))
    rich.print(ins)                                   # layer table with RF, params, FLOPs + summary
    rich.print(compare_recipes(a, b))                 # e.g. one 7x7 conv vs three stacked 3x3
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from torch import nn

from dltricks.analysis.cost import Cost, cost_from_trace, human, measure_latency
from dltricks.analysis.receptive_field import RF, fmt_dims, rf_from_trace
from dltricks.analysis.trace import Trace, trace

__all__ = [
    "Comparison",
    "DataInfo",
    "Inspection",
    "compare_recipes",
    "data_info",
    "inspect_model",
    "inspect_recipe",
    "weighted_depth",
]

_WEIGHTED = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "WSConv",
             "Linear", "NonDynamicallyQuantizableLinear", "LSTM", "GRU", "RNN", "MultiheadAttention", "Bilinear")


@dataclass
class DataInfo:
    """What the analysis needs to know about a recipe's data without training: the task, the shape of one
    training input (C, *spatial) (a patch where the data trains on patches), the number of classes, and the
    loaded bundle (None when built by hand, e.g. in tests)."""

    task: str
    in_shape: tuple[int, ...]
    num_classes: int
    bundle: Any = None


def data_info(recipe) -> DataInfo:
    """Load the recipe's data (cheap for the bundled datasets) and read task, input shape and classes."""
    from dltricks.data import load_data

    bundle = load_data(recipe.data, recipe.seed)
    return DataInfo(bundle.task, net_input_shape(bundle), bundle.num_classes, bundle)


def net_input_shape(bundle) -> tuple[int, ...]:
    """(C, *spatial) of what the net sees in training: the data's shape, or a patch's where it trains on
    patches."""
    if getattr(bundle, "train_source", None) is not None:
        try:
            return tuple(bundle.train_source[0][0].shape)
        except (IndexError, TypeError, KeyError):
            pass
    return tuple(bundle.in_shape)


def weighted_depth(t: Trace) -> int:
    """Layers with weights (convs, linears, recurrent, attention) called in one pass: the net's depth."""
    return sum(1 for r in t.rows if r.kind in _WEIGHTED)


@dataclass
class Inspection:
    """A model's layer table (RF, params, FLOPs per layer) with its receptive field and cost."""

    name: str
    model_name: str
    in_shape: tuple[int, ...]
    rf: RF
    cost: Cost
    depth: int
    task: str = "classification"
    notes: list[str] = field(default_factory=list)

    def table(self) -> Table:
        t = Table("layer", "kind", "output", "RF", "stride", "params", "FLOPs", box=None,
                  title=f"{self.name} ({self.model_name}) on input {'x'.join(map(str, self.in_shape))}")
        for r in self.rf.layers:
            rf = "n/a" if not self.rf.applies else fmt_dims(r.rf_size) if r.rf_size else (
                "pooled" if r.pooled else "global")
            t.add_row(r.name, r.kind, "x".join(map(str, r.out_shape[1:])), rf, fmt_dims(r.rf_stride),
                      human(r.params) if r.params else "", human(r.flops) if r.flops else "")
        return t

    def summary(self) -> list[str]:
        lines = [self.rf.summary(), self.cost.summary(), f"depth {self.depth} weighted layers"]
        if self.rf.unknown_ops:
            lines.append("ops the receptive field does not model (taken as mixing all positions): "
                         + ", ".join(self.rf.unknown_ops))
        return lines + self.notes

    def to_dict(self) -> dict:
        return {"name": self.name, "model": self.model_name, "in_shape": list(self.in_shape), "task": self.task,
                "depth": self.depth, "receptive_field": self.rf.to_dict(), "cost": self.cost.to_dict(),
                "layers": [{"name": r.name, "kind": r.kind, "out_shape": list(r.out_shape[1:]),
                            "params": r.params, "flops": r.flops, "rf": list(r.rf_size) if r.rf_size else None,
                            "rf_stride": list(r.rf_stride) if r.rf_stride else None} for r in self.rf.layers]}

    def __rich__(self):
        return Group(self.table(), *[Text(line) for line in self.summary()])


def inspect_model(model: nn.Module, in_shape: tuple[int, ...], name: str = "model", model_name: str = "",
                  latency: bool = True, task: str = "classification") -> Inspection:
    """Trace ``model`` once on (1, *in_shape) and (with ``latency``) time it on the CPU."""
    t = trace(model, in_shape)
    c = cost_from_trace(t)
    if latency:
        c.latency_ms, c.latency_std_ms, c.latency_runs = measure_latency(model, tuple(in_shape), budget_s=0.5)
    return Inspection(name, model_name or type(model).__name__, tuple(in_shape), rf_from_trace(t), c,
                      weighted_depth(t), task, list(t.notes))


def inspect_recipe(recipe, latency: bool = True, info: DataInfo | None = None) -> Inspection:
    """Build the recipe's model for its data's input shape and inspect it."""
    from dltricks.nn import build_model

    info = info or data_info(recipe)
    model = build_model(recipe.model, info.in_shape, info.num_classes)
    return inspect_model(model, info.in_shape, recipe.name, recipe.model.name, latency, info.task)


def _top(values) -> float | None:
    """The largest value per axis; None for a feature vector (no axes)."""
    return max(values) if values else None


def _ratio(rf: RF) -> float | None:
    return rf.min_ratio if rf.applies else None


def _dims(rf: RF, shown) -> str:
    """How a field quantity is shown: "n/a" where the input has no spatial axes."""
    if not rf.applies:
        return "n/a"
    return shown if isinstance(shown, str) else fmt_dims(shown)


@dataclass
class Comparison:
    """Two inspections side by side: one row per quantity, with B / A."""

    a: Inspection
    b: Inspection

    def rows(self) -> list[tuple[str, Any, Any, str, str]]:
        """(quantity, value A, value B, shown A, shown B)."""
        a, b = self.a, self.b

        def lat(i: Inspection):
            return i.cost.latency_ms

        return [
            ("parameters", a.cost.params, b.cost.params, human(a.cost.params), human(b.cost.params)),
            ("FLOPs", a.cost.flops, b.cost.flops, human(a.cost.flops), human(b.cost.flops)),
            ("activations", a.cost.activation_bytes, b.cost.activation_bytes,
             human(a.cost.activation_bytes, "B"), human(b.cost.activation_bytes, "B")),
            ("latency (ms)", lat(a), lat(b), f"{lat(a):.2f}" if lat(a) is not None else "-",
             f"{lat(b):.2f}" if lat(b) is not None else "-"),
            ("depth", a.depth, b.depth, str(a.depth), str(b.depth)),
            ("receptive field", _top(a.rf.size), _top(b.rf.size), _dims(a.rf, a.rf.size), _dims(b.rf, b.rf.size)),
            ("RF stride", _top(a.rf.stride), _top(b.rf.stride), _dims(a.rf, a.rf.stride),
             _dims(b.rf, b.rf.stride)),
            ("RF / input", _ratio(a.rf), _ratio(b.rf), _dims(a.rf, f"{a.rf.min_ratio:.2f}"),
             _dims(b.rf, f"{b.rf.min_ratio:.2f}")),
            ("global context", None, None, ", ".join(a.rf.context) or "-", ", ".join(b.rf.context) or "-"),
        ]

    def table(self) -> Table:
        t = Table("", self.a.name, self.b.name, "B / A", box=None,
                  title=f"{self.a.name} ({self.a.model_name}) vs {self.b.name} ({self.b.model_name})")
        for q, va, vb, sa, sb in self.rows():
            numbers = isinstance(va, (int, float)) and isinstance(vb, (int, float))
            ratio = f"{vb / va:.2f}" if numbers and va else ""
            t.add_row(q, sa, sb, ratio)
        return t

    def to_dict(self) -> dict:
        return {"a": self.a.to_dict(), "b": self.b.to_dict(),
                "rows": [{"quantity": q, "a": va, "b": vb} for q, va, vb, _, _ in self.rows() if va is not None]}

    def __rich__(self):
        return self.table()


def compare_recipes(a, b, latency: bool = True) -> Comparison:
    """Inspect two recipes and put them side by side (parameters, FLOPs, memory, latency, depth, RF)."""
    info_a = data_info(a)
    info_b = info_a if (a.data, a.seed) == (b.data, b.seed) else data_info(b)
    ia = inspect_recipe(a, latency, info_a)
    ib = inspect_recipe(b, latency, info_b)
    if ia.name == ib.name:
        ib.name = f"{ib.name} (B)"
    return Comparison(ia, ib)
