"""A study's tricks against the user's own model (``model.name = "module:attr"``): a trick that patches a
``model.*`` key applies only when the model's class or factory takes that keyword, and is otherwise refused
before any training, naming the trick and what the model takes."""

from __future__ import annotations

from typing import Any

from dltricks.errors import DltricksError
from dltricks.recipe import Recipe, UserModelSpec

# keys every model has that dltricks itself acts on, never passed to the user's factory
OWN_KEYS = ("name", "init_from", "embedding_dim", "module_dir", "source_sha256")


def check_model_keywords(recipe: Recipe, tricks: list[dict[str, Any]]) -> None:
    """Raise :class:`DltricksError` for the first trick (``{"name", "on", "off"}``) that sets a model
    keyword the user's model does not take. Bundled models are checked by their schema instead."""
    if not isinstance(recipe.model, UserModelSpec):
        return
    from dltricks.nn.models.imported import accepted_keywords

    takes, any_kw = accepted_keywords(recipe.model)
    if any_kw:
        return
    for t in tricks:
        for key in {**t.get("off", {}), **t.get("on", {})}:
            section, _, leaf = key.partition(".")
            if section == "model" and leaf not in OWN_KEYS and leaf not in takes:
                raise DltricksError(f"trick {t['name']} sets {key}, but {recipe.model.name} takes no keyword "
                                    f"{leaf!r}; it takes: {', '.join(sorted(takes)) or 'no keywords'} (add "
                                    f"{leaf!r} to its arguments, or leave the trick out)")
