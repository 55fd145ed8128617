"""``[model]``: keys every model has; a model's own schema subclasses :class:`ModelSpec`; the user's own
model by import path (``name = "my_models:TinyNet"``) is a :class:`UserModelSpec`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, field_validator, model_serializer, model_validator

from dltricks.errors import DltricksError
from dltricks.imports import file_sha256, is_import_path, locate, split_ref
from dltricks.recipe.section import Section, register_imported


class ModelSpec(Section):
    """Keys every model has; a model's own schema subclasses this."""

    name: str = Field(description="the model builder (e.g. mlp, cnn, resnet, unet); its own keys follow")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout probability before the head; 0 = off")
    init_from: str = Field("", description="start from a run's weights: a run id, a .safetensors file, or "
                                           "recipe:NAME (a run of that recipe, trained once); '' = random init")
    embedding_dim: int = Field(0, ge=0, description="the head outputs an embedding of this width instead of "
                                                    "class scores (metric learning); 0 = a classifier")

    # Keys added after studies were named by their recipes: left out of the written recipe while at their
    # default, so a recipe (and so the name a study of it has, and its resume) reads as before they existed.
    QUIET_DEFAULTS: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _quiet_defaults(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        for key in type(self).QUIET_DEFAULTS:
            if key in out and out[key] == type(self).model_fields[key].default:
                del out[key]
        return out



class UserModelSpec(ModelSpec):
    """``name = "my_models:TinyNet"``: the user's class or factory, by import path. The table's other keys
    are its keyword arguments (``in_shape`` and ``num_classes`` come from the data, passed when it takes
    them). Loading the recipe records where the module was found and a hash of its source file, so that a
    worker elsewhere imports the same code, or refuses when the file differs."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="the model as 'module:attr': a class or a factory returning an nn.Module; the "
                                  "module is found beside the recipe file, then in the current directory, then "
                                  "on sys.path")
    dropout: float | None = Field(None, ge=0.0, lt=1.0, description="passed to the model as `dropout` when set "
                                                                      "(it must take that keyword unless 0)")
    module_dir: str = Field("", description="the folder the module was found in (filled when the recipe is "
                                            "loaded; workers import from it)")
    source_sha256: str = Field("", description="sha256 of the module's source file (filled when the recipe is "
                                               "loaded; a build from a changed file is refused)")

    @field_validator("name")
    @classmethod
    def _import_path(cls, v: str) -> str:
        try:
            split_ref(v)
        except DltricksError as e:
            raise ValueError(str(e).split(": ", 1)[-1]) from None
        return v

    @model_validator(mode="after")
    def _located(self) -> UserModelSpec:
        if not self.module_dir:  # a dict built in Python, not a file: the current directory, then sys.path
            locate_model(self.__dict__, Path.cwd())
        if not self.source_sha256:
            self.__dict__["source_sha256"] = file_sha256(module_file(self))
        return self

    @model_serializer(mode="wrap")
    def _without_unset_dropout(self, handler: Any) -> dict[str, Any]:
        out = handler(self)
        if out.get("dropout", 0) is None:  # TOML has no null: unset stays absent
            del out["dropout"]
        return out

    def keywords(self) -> dict[str, Any]:
        """The keyword arguments the table gives the model (``dropout`` only when set)."""
        out = dict(self.model_extra or {})
        if self.dropout is not None:
            out["dropout"] = self.dropout
        return out


def module_file(spec: UserModelSpec) -> Path | None:
    """The source file of ``spec``'s module in its recorded folder (None if not there)."""
    return locate(spec.name, [Path(spec.module_dir)], what="model.name").file if spec.module_dir else None


def locate_model(table: dict[str, Any], folder: Path) -> None:
    """Fill ``module_dir`` of a ``[model]`` table naming an import path: the module beside ``folder`` (the
    recipe file's), then in the current directory, then on sys.path."""
    if is_import_path(table.get("name")) and not table.get("module_dir"):
        table["module_dir"] = str(locate(table["name"], [folder, Path.cwd()], what="model.name").folder)


register_imported("model", UserModelSpec)  # model.name = "module:attr" validates against it
