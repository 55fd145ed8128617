"""A study's tricks and a search's space against the user's own model (``model.name = "module:attr"``): a
trick or a search dimension on a ``model.*`` key applies only when the model's class or factory takes that
keyword, and is otherwise refused before any training, naming the trick (or key) and what the model takes."""

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


def keyword_value(recipe: Recipe, key: str, section: str) -> Any:
    """The value a search dimension on the user model's ``model.X`` starts from: the recipe's, else the
    default in the model's signature. Raises naming what the model takes."""
    from dltricks.nn.models.imported import accepted_keywords, keyword_defaults

    assert isinstance(recipe.model, UserModelSpec)
    leaf = key.partition(".")[2]
    given = recipe.model.keywords()
    if leaf in OWN_KEYS or leaf in type(recipe.model).model_fields:
        return getattr(recipe.model, leaf)
    takes, any_kw = accepted_keywords(recipe.model)
    if leaf not in takes and not any_kw:
        raise DltricksError(f"[{section}] {key}: {recipe.model.name} takes no keyword {leaf!r}; it takes: "
                            f"{', '.join(sorted(takes)) or 'no keywords'}")
    defaults = keyword_defaults(recipe.model)
    if leaf in given:
        return given[leaf]
    if leaf in defaults:
        return defaults[leaf]
    raise DltricksError(f"[{section}] {key}: {recipe.model.name} has no default for {leaf!r}; set it in [model]")
