"""What a model costs: parameters, FLOPs, activation memory and measured CPU latency.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode` on meta tensors (torch's convention:
a multiply-add is 2 FLOPs; convolutions and matrix products are counted, elementwise ops are not).
Activation memory is the sum of every layer's output for one forward pass, about what training keeps
for the backward pass. Latency is wall-clock time of real forward passes on the CPU.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch
from rich.console import Group
from rich.table import Table
from rich.text import Text
from torch import nn

from dltricks.analysis.trace import LayerRow, Trace, trace

__all__ = ["Cost", "cost", "human", "measure_latency"]


def human(n: float, unit: str = "") -> str:
    """SI prefixes, four significant digits: 1234567 -> '1.235M', 747520 with unit='FLOPs' ->
    '747.5 kFLOPs'; bytes with unit='B' -> '1.18 MiB'."""
    if unit == "B":
        for u in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(n) < 1024 or u == "TiB":
                return f"{n:.0f} {u}" if u == "B" else f"{n:.2f} {u}"
            n /= 1024
    for u in ("", "k", "M", "G", "T"):
        if abs(n) < 999.95 or u == "T":
            text = f"{n:.0f}" if u == "" else f"{n:.4g}"
            return f"{text} {u}{unit}" if unit else f"{text}{u}"
        n /= 1000
    return str(n)


@dataclass
class Cost:
    """Cost of one forward pass over ``batch_size`` inputs of ``input_shape`` = (C, *spatial)."""

    input_shape: tuple[int, ...]
    batch_size: int
    params: int
    trainable_params: int
    param_bytes: int
    flops: int
    activation_bytes: int
    latency_ms: float | None = None
    latency_std_ms: float | None = None
    latency_runs: int = 0
    layers: list[LayerRow] = field(default_factory=list)
    flops_by_op: dict[str, int] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        """Multiply-accumulates (FLOPs / 2)."""
        return self.flops // 2

    def to_dict(self) -> dict:
        return {"input_shape": list(self.input_shape), "batch_size": self.batch_size, "params": self.params,
                "trainable_params": self.trainable_params, "param_bytes": self.param_bytes, "flops": self.flops,
                "macs": self.macs, "activation_bytes": self.activation_bytes, "latency_ms": self.latency_ms,
                "latency_std_ms": self.latency_std_ms}

    def summary(self) -> str:
        lat = f", latency {self.latency_ms:.2f} ms (batch {self.batch_size})" if self.latency_ms is not None \
            else ""
        return (f"{human(self.params)} parameters ({human(self.param_bytes, 'B')}), {human(self.flops, 'FLOPs')}, "
                f"activations {human(self.activation_bytes, 'B')}{lat}")

    def table(self, title: str | None = None) -> Table:
        t = Table("layer", "kind", "output", "params", "FLOPs", "activations", title=title, box=None)
        for r in self.layers:
            t.add_row(r.name, r.kind, "x".join(map(str, r.out_shape[1:])), human(r.params) if r.params else "",
                      human(r.flops) if r.flops else "", human(r.out_bytes, "B") if r.out_bytes else "")
        return t

    def __rich__(self):
        return Group(self.table(), Text(self.summary()))


def measure_latency(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 1, repeats: int = 10,
                    budget_s: float = 1.0, warmup: int = 1, threads: int | None = 1) -> tuple[float, float, int]:
    """Median and standard deviation (ms) of ``repeats`` timed forward passes in eval mode, after ``warmup``
    untimed ones; stops early when ``budget_s`` seconds (warmup included) are spent, after at least one timed
    run. The model is timed where it lives (CPU, or CUDA with synchronisation).

    ``threads=1`` (the default) times one core: on a machine shared with other jobs, torch's multi-threaded
    kernels wait on busy cores and a 1 ms model can take 200 ms, so one core is the number that compares
    across runs and recipes. ``threads=None`` keeps torch's current setting."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    x = torch.randn((batch_size, *input_shape), device=device)
    times: list[float] = []
    try:
        with torch.inference_mode():
            t0 = time.perf_counter()
            for _ in range(warmup):
                model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            spent = time.perf_counter() - t0  # the budget counts the warmup: a big model gets one timed run
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                times.append(dt * 1000)
                spent += dt
                if spent > budget_s:
                    break
    finally:
        torch.set_num_threads(old_threads)
        for m, training in modes.items():
            m.training = training
    std = statistics.stdev(times) if len(times) > 1 else 0.0
    return statistics.median(times), std, len(times)


def cost_from_trace(t: Trace) -> Cost:
    return Cost(input_shape=t.input_shape, batch_size=t.batch_size, params=t.params,
                trainable_params=t.trainable_params, param_bytes=t.param_bytes, flops=t.flops,
                activation_bytes=t.activation_bytes, layers=t.rows, flops_by_op=t.flops_by_op)


def cost(model: nn.Module, input_shape: tuple[int, ...] | list[int], batch_size: int = 1, latency: bool = True,
         repeats: int = 10, budget_s: float = 0.5, threads: int | None = 1) -> Cost:
    """Parameters, FLOPs and activation memory of one forward pass over ``batch_size`` inputs of shape
    ``input_shape`` = (C, *spatial) (or (F,)), and with ``latency`` the measured time per pass (median of up
    to ``repeats`` runs within ``budget_s`` seconds, on ``threads`` CPU threads: see :func:`measure_latency`).

    >>> c = cost(nn.Conv2d(3, 8, 3, padding=1), (3, 16, 16)); c.flops   # 2 * 8*16*16 * 3*3*3 = 110592
    """
    c = cost_from_trace(trace(model, input_shape, batch_size))
    if latency:
        c.latency_ms, c.latency_std_ms, c.latency_runs = measure_latency(model, tuple(input_shape), batch_size,
                                                                         repeats, budget_s, threads=threads)
    return c
