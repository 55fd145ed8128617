"""``ablate.vary``: what each paired seed of a study draws afresh.

- ``"seed"`` (always): the run's seed, so the initialisation, the batch order, the augmentation and the
  validation split carved from train (:func:`dltricks.data.splits.carve_val` is seeded by the run's
  seed) differ from seed to seed; the test set stays the one the data defines.
- ``"split"``: also the test split, where the data has no fixed test set and holds one out itself
  (its ``data.split_seed``: digits, CSV/NPZ files without a test file, NIfTI folders without imagesTs):
  seed ``s`` uses ``data.split_seed = s``, k-fold style. Data with a fixed test set (MNIST-1D) keeps it.

Both variants of a seed get the same patch, so they are trained and tested on the same split and stay
paired; only the seeds differ.
"""

from __future__ import annotations

from typing import Any

from dltricks.recipe import Recipe

__all__ = ["VARY", "cell_patch", "redraws_test_split"]

VARY = ("seed", "split")


def redraws_test_split(recipe: Recipe) -> bool:
    """Whether the recipe's data holds out its own test split (a ``split_seed`` key) that "split" redraws."""
    return "split_seed" in type(recipe.data).model_fields


def cell_patch(recipe: Recipe, seed: int, vary: list[str] | tuple[str, ...] = ("seed",)) -> dict[str, Any]:
    """The patch that makes a cell's recipe from the base ``recipe`` for paired seed ``seed`` (the variant's
    own patch comes on top): the seed, and with "split" in ``vary`` the data's test split."""
    patch: dict[str, Any] = {"seed": seed}
    if "split" in vary and redraws_test_split(recipe):
        patch["data.split_seed"] = seed
    return patch
