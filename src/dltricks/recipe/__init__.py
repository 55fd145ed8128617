"""A recipe is data: one experiment (data, model, training, evaluation) as validated TOML.

Everything a user can change is a recipe key, addressed by a dotted path (``train.lr``).
Datasets and models each own a section schema; they register it here with
:func:`register_section` so that this package stays free of torch and knows nothing else.

    recipe = Recipe.load("mnist1d-cnn")                  # bundled name or a path
    recipe = recipe.patch({"train.label_smoothing": 0.1})
    print(recipe.to_toml())

One module per section of the schema (``data``, ``model``, ``train``, ``evaluate``, ``compress``,
``search``), the Recipe that puts them together (``schema``), TOML files and ``base`` (``files``),
dotted keys and ``-o`` overrides (``overrides``), and error messages (``explain``).
"""

from dltricks.recipe.compress import CompressSpec
from dltricks.recipe.data import AugmentSpec, DataSpec, DomainSpec
from dltricks.recipe.evaluate import EvalSpec
from dltricks.recipe.explain import explain_errors
from dltricks.recipe.files import bundled_recipes
from dltricks.recipe.model import ModelSpec, UserModelSpec
from dltricks.recipe.overrides import get_dotted, parse_override, set_dotted
from dltricks.recipe.schema import Recipe
from dltricks.recipe.search import AblateSpec, NasSpec, TuneSpec
from dltricks.recipe.section import PATH, RECIPE_DIR, Section, register_imported, register_section
from dltricks.recipe.train import TrainSpec

__all__ = [
    "Section", "AugmentSpec", "DomainSpec", "DataSpec", "ModelSpec", "UserModelSpec", "TrainSpec", "EvalSpec",
    "AblateSpec", "TuneSpec", "NasSpec", "CompressSpec", "Recipe",
    "register_section", "bundled_recipes", "explain_errors", "parse_override", "set_dotted", "get_dotted",
    "PATH", "RECIPE_DIR", "register_imported",
]
