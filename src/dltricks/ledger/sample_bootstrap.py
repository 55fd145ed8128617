"""Verdicts beyond the seeds: a paired bootstrap over test samples, beside the seed-level interval.

Each classification run leaves ``test_correct.npy`` in its folder: one bool per test sample (was it
classified correctly?). The two variants of a seed are tested on the same samples (with
``ablate.vary = ["seed", "split"]`` each seed draws its own test split, still shared by the pair), so
per seed the difference ``other - reference`` is paired sample by sample. One bootstrap draw resamples
the test samples of every seed with replacement (both variants on the same draw) and takes the mean
over seeds of each seed's accuracy difference; the percentile interval of the draws says how much the
measured difference depends on which test samples were drawn. The seed-level interval answers "across
training runs"; this one answers "across test samples".

    lines = sample_notes(ledger, run_ids, reference="baseline")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CORRECT_FILE", "SampleInterval", "paired_sample_bootstrap", "read_correct", "sample_intervals",
           "sample_notes"]

CORRECT_FILE = "test_correct.npy"


@dataclass
class SampleInterval:
    variant: str
    mean: float  # the accuracy difference against the reference, averaged over seeds
    lo: float
    hi: float
    seeds: int
    samples: int  # test samples per seed (the smallest, where the seeds' test splits differ in size)


def read_correct(run_dir: Path) -> np.ndarray | None:
    """A run's per-sample correctness, or None where it left none (never unpickled)."""
    path = Path(run_dir) / CORRECT_FILE
    if not path.is_file():
        return None
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return a.astype(bool).ravel()


def paired_sample_bootstrap(pairs: Sequence[tuple[np.ndarray, np.ndarray]], n_boot: int = 2000, seed: int = 0,
                            level: float = 0.95) -> tuple[float, float, float]:
    """Mean over seeds of ``other - reference`` accuracy, and its percentile bootstrap interval over test
    samples. ``pairs``: per seed ``(reference_correct, other_correct)``, each of shape (N_seed,)."""
    rng = np.random.default_rng(seed)
    diffs = [o.astype(np.float64) - r.astype(np.float64) for r, o in pairs]
    draws = np.zeros(n_boot)
    for d in diffs:
        for start in range(0, n_boot, 250):  # bounded memory on large test sets
            k = min(250, n_boot - start)
            draws[start:start + k] += d[rng.integers(0, len(d), size=(k, len(d)))].mean(axis=1)
    draws /= len(diffs)
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(np.mean([d.mean() for d in diffs])), float(lo), float(hi)


def sample_intervals(run_dirs: Mapping[str, Mapping[int, Path]], reference: str) -> list[SampleInterval]:
    """One interval per variant with per-sample files for the reference's seeds. ``run_dirs[variant][seed]``."""
    ref = {s: read_correct(p) for s, p in run_dirs.get(reference, {}).items()}
    out = []
    for variant, by_seed in run_dirs.items():
        if variant == reference:
            continue
        pairs = []
        for s, p in sorted(by_seed.items()):
            other, base = read_correct(p), ref.get(s)
            if other is not None and base is not None and len(other) == len(base):
                pairs.append((base, other))
        if pairs:
            mean, lo, hi = paired_sample_bootstrap(pairs)
            out.append(SampleInterval(variant, mean, lo, hi, len(pairs), min(len(b) for b, _ in pairs)))
    return out


def sample_notes(intervals: Sequence[SampleInterval]) -> list[str]:
    """The report's lines for :func:`sample_intervals`."""
    return [f"{i.variant}: paired bootstrap over test samples ({i.samples} per seed, {i.seeds} seeds): test accuracy "
            f"{i.mean:+.4f} [{i.lo:+.4f}, {i.hi:+.4f}] (95%; how much the difference depends on the test samples "
            f"drawn; the seed-level interval is about training runs)" for i in intervals]
