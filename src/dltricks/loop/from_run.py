"""Weights of earlier runs: a fine-tuning start, a distillation teacher, a model to compress.

A run is named by its ledger id (or a unique prefix); its weights are the safetensors file the run
wrote when it completed. Nothing here unpickles anything.

    state = run_weights(ledger, "3f2a9c")            # {name: tensor}
    recipe, bundle, model = model_from_run(ledger, "3f2a9c")   # rebuilt and loaded, in eval mode
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from dltricks.data import DataBundle
from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.ledger.record import RunRecord
from dltricks.recipe import Recipe

__all__ = ["completed_run", "read_weights", "run_weights", "model_from_run", "resolve_run_ref"]

RECIPE_REF = "recipe:"
_PICKLES = {".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle"}


def resolve_run_ref(ledger: Ledger, ref: str, *, progress: bool = False) -> str:
    """A run id (or ``.safetensors`` path) as given, or, for ``recipe:NAME`` (a bundled recipe or a TOML
    path), the id of a completed run of exactly that recipe: reused from the ledger when one is there,
    else trained now. This is how a bundled study names its pretrained model or teacher: every seed of
    the study fine-tunes (or distils from) the same run, which is trained once."""
    if not ref.startswith(RECIPE_REF):
        return ref
    from dltricks.runner.run import train  # the runner imports this module: import late

    recipe = Recipe.load(ref[len(RECIPE_REF):])
    digest = recipe.digest()
    # The workers of a sweep on this machine all want it at the start: one trains it, the others wait
    # for it. The weights live in this machine's run folders, so a lock here is the scope that matters.
    with _machine_lock(ledger.root / ".locks" / f"recipe-{digest[:16]}.lock"):
        found = _completed_run_of(ledger, recipe, digest)
        return found or train(recipe, ledger=ledger, progress=progress).run_id


def _completed_run_of(ledger: Ledger, recipe: Recipe, digest: str) -> str | None:
    for rec in ledger.runs(name=recipe.name, status="completed"):
        try:
            same = Recipe.from_dict(rec.recipe, source=f"run {rec.id}").digest() == digest
        except DltricksError:  # a run of an older schema: not this recipe
            continue
        if same and rec.checkpoint and Path(rec.checkpoint).is_file():
            return rec.id
    return None


@contextmanager
def _machine_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` among the processes of this machine (flock; released if the holder
    dies); none where the OS has no flock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: at worst two workers train the same run
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def completed_run(ledger: Ledger, run_id: str, *, why: str = "its weights are used") -> RunRecord:
    """The ledger's record of ``run_id``, which must have completed and left its weights."""
    rec = ledger.get(run_id)
    if rec.status != "completed":
        raise DltricksError(f"run {rec.id} is {rec.status}, not completed: {why} only from a finished run "
                            f"(see `dltricks runs`)")
    if not rec.checkpoint or not Path(rec.checkpoint).is_file():
        raise DltricksError(f"run {rec.id} has no weights file (expected {rec.checkpoint or 'model.safetensors'}); "
                            "was its run folder moved or deleted?")
    return rec


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file as ``{name: tensor}``, with one clear line when it cannot be read."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise DltricksError(f"weights {path} must be a .safetensors file (pickled .pt/.pth files are never loaded)")
    if not path.is_file():
        raise DltricksError(f"weights file {path} does not exist")
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise DltricksError(f"cannot read weights {path}: {e}") from None


def run_weights(ledger: Ledger, ref: str) -> tuple[RunRecord | None, dict[str, torch.Tensor]]:
    """Weights named by a run id or by a path to a ``.safetensors`` file; the run's record when it is a run."""
    if ref.endswith(".safetensors") or Path(ref).suffix in _PICKLES:  # a file; pickles get read_weights' refusal
        return None, read_weights(ref)
    rec = completed_run(ledger, ref)
    return rec, read_weights(rec.checkpoint)


def model_from_run(ledger: Ledger, run_id: str, *, why: str = "its weights are used",
                   ) -> tuple[Recipe, DataBundle, nn.Module]:
    """Rebuild a completed run's model from its stored recipe, load its weights exactly, and return the
    recipe, its data and the model (in eval mode, on the CPU)."""
    from dltricks.runner.run import build  # run imports this module's neighbours; import late

    rec = completed_run(ledger, run_id, why=why)
    recipe = Recipe.from_dict(rec.recipe, source=f"run {rec.id}")
    if recipe.compress.active:
        raise DltricksError(f"run {rec.id} holds a compressed model (int8 or pruned layers), not the float model "
                            f"its recipe builds; load it with dltricks.compress.compressed_model(ledger, "
                            f"{rec.id!r})" + (f", or use its source run {recipe.compress.source}"
                                              if recipe.compress.source else ""))
    bundle, model, _ = build(recipe)
    state = read_weights(rec.checkpoint)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise DltricksError(f"weights of run {rec.id} do not fit the model its recipe builds "
                            f"(was the code changed since?): {first}") from None
    return recipe, bundle, model.eval()
