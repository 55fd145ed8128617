"""``data.standardize``: scale each input feature to mean 0, std 1 with statistics of the training split.

A table's features come in their own units (wine: proline in the hundreds, hue near 1); an MLP with default
initialisation and learning rate then learns the large ones and ignores the rest. The statistics are taken
from the training split only (after validation is carved out, never from validation or test), applied to
every split of the bundle, and kept on it as ``bundle.standardizer`` so that evaluation, compression and
export use the same numbers; :func:`save_standardizer` writes them into a run folder.

``"auto"`` (the default) is on for feature tables read from the user's files (a dataset spec with
``tabular = True``: csv, and npz whose ``x`` is (N, F)) and off for signals, images and volumes and for the
bundled datasets, which are already scaled. ``true`` on (N, C, *spatial) data standardises each channel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from dltricks.data.bundle import DataBundle
from dltricks.errors import DltricksError

__all__ = ["FILENAME", "Standardizer", "fit_standardizer", "load_standardizer", "save_standardizer",
           "standardize_bundle", "wants_standardize"]

FILENAME = "standardize.json"
# a feature whose spread is below this (a constant column) is only centred: dividing by ~0 would blow it up
_MIN_STD = 1e-8


@dataclass(frozen=True)
class Standardizer:
    """Per-feature (or per-channel) ``mean`` and ``std``, each (F,) or (C,): ``x -> (x - mean) / std`` along
    dim 1 of an (N, F) or (N, C, *spatial) batch. ``raw_std`` keeps the spreads before clamping (the
    advisor reports how far apart the scales were)."""

    mean: torch.Tensor
    std: torch.Tensor
    raw_std: torch.Tensor

    def _shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (1, -1) + (1,) * (x.dim() - 2)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F) or (N, C, *spatial) -> the same shape, standardised; float32."""
        if x.dim() < 2 or x.shape[1] != len(self.mean):
            raise DltricksError(f"data.standardize: inputs of shape {tuple(x.shape[1:])} do not match the "
                                f"{len(self.mean)} features the statistics were taken on")
        x = x.float()
        return ((x - self.mean.view(self._shape(x))) / self.std.view(self._shape(x))).to(torch.float32)

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Back to the data's own units (for showing inputs)."""
        return x * self.std.view(self._shape(x)) + self.mean.view(self._shape(x))

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "raw_std": self.raw_std.tolist(),
                "axis": 1, "split": "train"}

    @classmethod
    def from_dict(cls, d: dict) -> Standardizer:
        return cls(torch.tensor(d["mean"], dtype=torch.float32), torch.tensor(d["std"], dtype=torch.float32),
                   torch.tensor(d.get("raw_std", d["std"]), dtype=torch.float32))


def fit_standardizer(x: torch.Tensor) -> Standardizer:
    """Statistics of ``x`` (N, F) or (N, C, *spatial) per feature/channel, in float64 for the sums."""
    if x.dim() < 2 or len(x) == 0:
        raise DltricksError(f"data.standardize needs a batch of inputs (N, F) or (N, C, ...), got {tuple(x.shape)}")
    flat = x.double().transpose(0, 1).reshape(x.shape[1], -1)  # (F, N * spatial)
    mean = flat.mean(1)
    raw = flat.std(1, unbiased=False)
    std = torch.where(raw > _MIN_STD, raw, torch.ones_like(raw))
    return Standardizer(mean.float(), std.float(), raw.float())


def wants_standardize(spec, bundle: DataBundle) -> bool:
    """Whether ``spec.standardize`` (True, False or "auto") turns standardisation on for this bundle; one
    line naming the key where it cannot apply."""
    setting = getattr(spec, "standardize", "auto")
    tabular = getattr(type(spec), "tabular", False) and bundle.train[0].dim() == 2
    if setting == "auto":
        return bool(tabular) and bundle.train_source is None and bundle.tasks is None
    if not setting:
        return False
    if bundle.train_source is not None or bundle.tasks is not None:
        what = "streams training patches" if bundle.train_source is not None else "samples tasks"
        raise DltricksError(f"data.standardize = true: dataset {spec.name!r} {what}, whose inputs are made "
                            "during training; set data.standardize = false (or \"auto\")")
    if not bundle.train[0].is_floating_point() or bundle.train[0].dim() < 2:
        raise DltricksError(f"data.standardize = true needs float inputs (N, F) or (N, C, *spatial); dataset "
                            f"{spec.name!r} gives {bundle.train[0].dtype} of shape {tuple(bundle.train[0].shape)}")
    return True


def standardize_bundle(bundle: DataBundle, stats: Standardizer | None = None) -> DataBundle:
    """Standardise every input of ``bundle`` in place with ``stats`` (default: fitted on ``bundle.train``)
    and keep them as ``bundle.standardizer``. Labels and targets are left as they are."""
    stats = stats or fit_standardizer(bundle.train[0])

    def pair(p):
        return None if p is None else (stats.apply(p[0]), p[1])

    bundle.train, bundle.val, bundle.test = pair(bundle.train), pair(bundle.val), pair(bundle.test)
    bundle.novel = pair(bundle.novel)
    bundle.target_val, bundle.target_test = pair(bundle.target_val), pair(bundle.target_test)
    if bundle.unlabelled is not None:
        bundle.unlabelled = stats.apply(bundle.unlabelled)
    if bundle.target_unlabelled is not None:
        bundle.target_unlabelled = stats.apply(bundle.target_unlabelled)
    bundle.standardizer = stats
    return bundle


def save_standardizer(bundle_or_stats: DataBundle | Standardizer | None, folder: str | Path) -> Path | None:
    """Write the statistics as ``standardize.json`` into ``folder`` (a run's folder); None when the data is
    not standardised. Plain JSON: readable by anything that serves the model."""
    stats = getattr(bundle_or_stats, "standardizer", bundle_or_stats)
    if stats is None:
        return None
    path = Path(folder) / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats.to_dict(), indent=1))
    return path


def load_standardizer(folder: str | Path) -> Standardizer | None:
    """The statistics :func:`save_standardizer` wrote into ``folder``, or None when it wrote none."""
    path = Path(folder) / FILENAME
    if not path.exists():
        return None
    try:
        return Standardizer.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise DltricksError(f"{path} is not a standardisation file ({e})") from None
