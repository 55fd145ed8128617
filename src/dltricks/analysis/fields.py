"""Receptive-field arithmetic: the state a traced tensor carries and how windows change it.

A tensor's state is either :class:`Local` (each position sees a window of the input: size, jump and
start per spatial axis, after Araujo et al., Distill 2019) or :class:`Global` (it depends on all positions:
after global pooling, flattening, attention or a recurrent layer). The functions here are the recurrences
for one op each: a merge, a sliding window, a transposed conv, a resampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["MIXED", "POOLED", "Global", "Local", "State", "resample", "transposed", "union", "window"]


@dataclass(frozen=True)
class Local:
    """Each position of the tensor sees a window of the input, per input spatial axis ``i``:
    ``size[i]`` input pixels starting at ``start[i] + p * jump[i]`` for position ``p`` along tensor dim
    ``axes[i]``. ``-start`` is Araujo et al.'s effective padding, ``jump`` their effective stride."""

    axes: tuple[int, ...]
    size: tuple[float, ...]
    jump: tuple[float, ...]
    start: tuple[float, ...]

    def area(self) -> float:
        return math.prod(self.size)


@dataclass(frozen=True)
class Global:
    """The tensor depends on every input position. ``pooled``: it is a spatial summary (global pooling,
    squeeze-excitation) rather than a map that mixes positions (attention, recurrence, flattening)."""

    pooled: bool = False


State = Local | Global
MIXED = Global(False)
POOLED = Global(True)


def union(states: list[Local]) -> Local | Global:
    """The field of a merge (addition, concatenation): per axis the smallest window covering all inputs."""
    first = states[0]
    if any(s.axes != first.axes for s in states[1:]):
        return MIXED
    size, jump, start = [], [], []
    for i in range(len(first.axes)):
        lo = min(s.start[i] for s in states)
        hi = max(s.start[i] + s.size[i] for s in states)
        size.append(hi - lo)
        jump.append(max(s.jump[i] for s in states))
        start.append(lo)
    return Local(first.axes, tuple(size), tuple(jump), tuple(start))


def window(s: Local, ndim: int, nsp: int, kernel, stride, padding, dilation) -> Local:
    """A sliding window (conv or pool) over the last ``nsp`` dims: Araujo et al.'s recurrences
    r += (k_eff - 1) * j,  start -= p * j,  j *= s."""
    size, jump, start = list(s.size), list(s.jump), list(s.start)
    for i, a in enumerate(s.axes):
        w = a - (ndim - nsp)
        if w < 0:
            continue
        k_eff = dilation[w] * (kernel[w] - 1) + 1
        size[i] = size[i] + (k_eff - 1) * jump[i]
        start[i] = start[i] - padding[w] * jump[i]
        jump[i] = jump[i] * stride[w]
    return Local(s.axes, tuple(size), tuple(jump), tuple(start))


def transposed(s: Local, ndim: int, nsp: int, kernel, stride, padding, dilation) -> Local:
    """A transposed conv: output o gathers inputs i with i*s - p + t*d = o. At most ceil(k_eff / s) of them
    (the field grows by that many input steps minus one, its largest value over positions); the jump
    divides by s; position 0's first input is ceil((p - (k_eff - 1)) / s)."""
    size, jump, start = list(s.size), list(s.jump), list(s.start)
    for i, a in enumerate(s.axes):
        w = a - (ndim - nsp)
        if w < 0:
            continue
        k_eff = dilation[w] * (kernel[w] - 1) + 1
        n = math.ceil(k_eff / stride[w])
        first = math.ceil((padding[w] - (k_eff - 1)) / stride[w])
        start[i] = start[i] + first * jump[i]
        size[i] = size[i] + (n - 1) * jump[i]
        jump[i] = jump[i] / stride[w]
    return Local(s.axes, tuple(size), tuple(jump), tuple(start))


def resample(s: Local, in_shape, out_shape, taps: int) -> Local:
    """Interpolation (upsampling) or adaptive pooling from the shapes: each output reads ``taps``
    neighbouring inputs (nearest 1, linear 2, cubic 4; for adaptive pooling the widest bin) and the jump
    scales by in/out."""
    size, jump, start = list(s.size), list(s.jump), list(s.start)
    for i, a in enumerate(s.axes):
        n_in, n_out = in_shape[a], out_shape[a]
        if n_in == n_out:
            continue
        # adaptive pooling: bin o spans [floor(o * in / out), ceil((o + 1) * in / out))
        widest = max(math.ceil((o + 1) * n_in / n_out) - (o * n_in) // n_out for o in range(n_out))
        t = taps if taps > 0 else widest
        size[i] = size[i] + (t - 1) * jump[i]
        jump[i] = jump[i] * n_in / n_out
    return Local(s.axes, tuple(size), tuple(jump), tuple(start))
