"""``recipe:NAME`` references (``model.init_from``, ``train.teacher``): the run of that recipe that a run
learns from, found in the ledger or trained now, once per machine. The runner resolves them to run ids
before any method is built, so methods only ever see run ids and weight files.

    resolved = resolve_references(recipe, ledger, train)   # recipe:mnist1d-teacher -> 3f2a9c...

``train`` (:func:`dltricks.runner.run.train`) is passed in: it is the caller, so importing it here would
close a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.locks import exclusive
from dltricks.recipe import Recipe

__all__ = ["RECIPE_REF", "REFERENCE_KEYS", "resolve_run_ref", "resolve_references"]

RECIPE_REF = "recipe:"
REFERENCE_KEYS = ("model.init_from", "train.teacher")  # the recipe keys that may name another run


def _get(recipe: Recipe, key: str) -> str:
    section, name = key.split(".")
    return getattr(getattr(recipe, section), name)


Trainer = Callable[..., Any]  # train(recipe, *, ledger, progress) -> a result with .run_id


def resolve_references(recipe: Recipe, ledger: Ledger, train: Trainer, *, progress: bool = False) -> Recipe:
    """``recipe`` with every ``recipe:NAME`` reference replaced by the id of a completed run of that recipe
    (trained now when the ledger has none). The run records ``recipe`` as written, not this copy."""
    patch = {k: resolve_run_ref(ledger, _get(recipe, k), train, progress=progress)
             for k in REFERENCE_KEYS if _get(recipe, k).startswith(RECIPE_REF)}
    return recipe.patch(patch) if patch else recipe


def resolve_run_ref(ledger: Ledger, ref: str, train: Trainer, *, progress: bool = False) -> str:
    """A run id (or ``.safetensors`` path) as given, or, for ``recipe:NAME`` (a bundled recipe or a TOML
    path), the id of a completed run of exactly that recipe: reused from the ledger when one is there,
    else trained now. This is how a bundled study names its pretrained model or teacher: every seed of
    the study fine-tunes (or distils from) the same run, which is trained once."""
    if not ref.startswith(RECIPE_REF):
        return ref
    recipe = Recipe.load(ref[len(RECIPE_REF):])
    digest = recipe.digest()
    # The workers of a sweep on this machine all want it at the start: one trains it, the others wait
    # for it. The weights live in this machine's run folders, so a lock here is the scope that matters.
    with exclusive(ledger.root / ".locks" / f"recipe-{digest[:16]}.lock"):
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
