"""TensorBoard event files for runs: one folder per run, its curves as scalars per epoch, its final
metrics, and its resolved recipe as text.

    export_runs(ledger.runs(), "tb/")       # then: tensorboard --logdir tb/
    writer = EpochScalars(run_dir / "tensorboard", recipe_toml)   # live, during training (train.tensorboard)
    writer(epoch, {"train_loss": 0.4, ...}); writer.close()

Written through ``torch.utils.tensorboard`` (it needs the ``tensorboard`` package).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import tomli_w

from dltricks.ledger.export import needs, writable_dir
from dltricks.ledger.record import RunRecord

__all__ = ["EpochScalars", "export_run", "export_runs", "run_folder"]


def _writer(folder: Path):
    needs("tensorboard", "tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(folder))


def run_folder(rec: RunRecord) -> str:
    """``NAME-ID`` (a study's runs: ``STUDY/VARIANT-sSEED-ID``), so TensorBoard groups what belongs together."""
    if rec.study:
        return f"{rec.study}/{rec.variant or 'run'}-s{rec.seed}-{rec.id}"
    return f"{rec.name}-{rec.id}"


def _recipe_text(recipe: Mapping) -> str:
    try:
        body = tomli_w.dumps(dict(recipe))
    except (TypeError, ValueError):  # a value TOML cannot hold (None): the JSON form still reads
        import json

        body = json.dumps(recipe, indent=2)
    return "```toml\n" + body + "\n```"  # TensorBoard's text tab renders Markdown


class EpochScalars:
    """Scalars per epoch into ``folder``, as :func:`dltricks.loop.training.fit`'s ``on_epoch`` hook."""

    def __init__(self, folder: str | Path, recipe: Mapping | None = None):
        self.folder = writable_dir(folder, "TensorBoard folder")
        self._w = _writer(self.folder)
        if recipe is not None:
            self._w.add_text("recipe", _recipe_text(recipe), 0)

    def __call__(self, epoch: int, row: Mapping[str, float]) -> None:
        for k, v in row.items():
            if isinstance(v, int | float):
                self._w.add_scalar(k, float(v), epoch)
        self._w.flush()

    def close(self) -> None:
        self._w.close()


def export_run(rec: RunRecord, log_dir: str | Path) -> Path:
    """Write one run's event file under ``log_dir`` (replacing one an earlier export wrote); its folder.
    Curves become scalars at steps 1..epochs; final metrics the tag ``final/NAME`` at the last step."""
    folder = writable_dir(Path(log_dir) / run_folder(rec), "TensorBoard folder")
    for old in folder.glob("events.out.tfevents.*"):  # a re-export replaces, never doubles, the points
        old.unlink()
    w = _writer(folder)
    try:
        w.add_text("recipe", _recipe_text(rec.recipe), 0)
        last = 0
        for name, values in sorted(rec.curves.items()):
            for step, v in enumerate(values, start=1):
                w.add_scalar(name, float(v), step)
            last = max(last, len(values))
        for name, v in sorted(rec.metrics.items()):
            w.add_scalar(f"final/{name}", float(v), max(last, 1))
    finally:
        w.close()
    return folder


def export_runs(records: Iterable[RunRecord], log_dir: str | Path) -> list[Path]:
    """:func:`export_run` for each run; the folders written."""
    root = writable_dir(log_dir, "TensorBoard folder")
    return [export_run(r, root) for r in records]
