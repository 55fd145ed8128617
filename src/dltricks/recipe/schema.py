"""The Recipe: one experiment, its sections put together; load, patch, dump, digest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

import tomli_w
from pydantic import Field, SerializeAsAny, ValidationError, field_validator

from dltricks.errors import DltricksError, did_you_mean, one_of
from dltricks.recipe.compress import COMPRESS_OFF, CompressSpec
from dltricks.recipe.data import DataSpec
from dltricks.recipe.evaluate import EvalSpec
from dltricks.recipe.explain import explain_errors
from dltricks.recipe.files import absolute_paths, load_tree
from dltricks.recipe.model import ModelSpec, locate_model
from dltricks.recipe.overrides import SWITCHES, get_dotted, parse_override, set_key
from dltricks.recipe.search import AblateSpec, NasSpec, TuneSpec
from dltricks.recipe.section import _VARIANTS, Section, plugins_loaded, variant_spec
from dltricks.recipe.train import TrainSpec


class Recipe(Section):
    """One experiment. Build with :meth:`load`, :meth:`from_dict` or :meth:`patch`."""

    name: str = Field("recipe", description="names its runs and studies (a file's stem by default)")
    seed: int = Field(0, ge=0, description="fixes data splits, init and batch order")
    data: SerializeAsAny[DataSpec] = Field(description="[data]: the dataset and its split")
    model: SerializeAsAny[ModelSpec] = Field(description="[model]: the network")
    train: TrainSpec = Field(default_factory=TrainSpec, description="[train]: optimisation and learning set-ups")
    eval: EvalSpec = Field(default_factory=EvalSpec, description="[eval]: metrics, calibration, episodes")
    ablate: AblateSpec = Field(default_factory=AblateSpec, description="[ablate]: `dltricks ablate`'s settings")
    tune: TuneSpec = Field(default_factory=TuneSpec, description="[tune]: `dltricks tune`'s settings and space")
    nas: NasSpec = Field(default_factory=NasSpec, description="[nas]: `dltricks nas`'s settings and space")
    compress: CompressSpec = Field(default_factory=CompressSpec, description="[compress]: pruning and "
                                                                                 "quantization")

    _sections: ClassVar[tuple[str, ...]] = ("data", "model", "train", "eval", "ablate", "tune", "nas", "compress")

    @field_validator("data", "model", mode="before")
    @classmethod
    def _variant(cls, v: Any, info) -> Any:
        if isinstance(v, Section):
            return v
        if not isinstance(v, dict):
            raise ValueError("must be a table")
        variants = _VARIANTS[info.field_name]
        name = v.get("name")
        if name is None:
            raise ValueError(f"needs a name; valid: {one_of(variants)}")
        spec = variant_spec(info.field_name, name)
        if spec is None:
            kind = "dataset" if info.field_name == "data" else "model"
            own = ", or your own as 'module:attr'"
            raise ValueError(f"no {kind} of that name{did_you_mean(name, variants)}; valid: {one_of(variants)}{own}")
        return spec.model_validate(v)

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "recipe") -> Recipe:
        """Validate a plain dict (``base`` already resolved); errors name the key and what is valid."""
        plugins_loaded()
        d = dict(d)
        d.pop("base", None)
        try:
            return cls.model_validate(d)
        except ValidationError as e:
            raise DltricksError(f"{source}: {explain_errors(e, cls, d)}") from None

    @classmethod
    def load(cls, path_or_name: str | Path, overrides: list[str] | None = None) -> Recipe:
        """Load a bundled recipe by name or a TOML file, resolve ``base``, apply ``key=value`` overrides."""
        d, source = load_tree(str(path_or_name), seen=())
        parsed = [parse_override(item) for item in overrides or []]
        # a switch of dataset or model comes first, so that `-o model.hidden=[16] -o model.name=mlp`
        # means what `-o model.name=mlp -o model.hidden=[16]` does
        parsed.sort(key=lambda kv: kv[0] not in SWITCHES)
        notes = []
        for key, value in parsed:
            note = set_key(d, key, value)
            notes += [note] if note else []
        file = Path(path_or_name).expanduser()
        if file.is_file() and isinstance(d.get("model"), dict):  # -o model.name=m:Net: m.py beside the file first
            locate_model(d["model"], file.parent)
        absolute_paths(d, Path.cwd())  # what is still relative came from -o, typed here
        try:
            return cls.from_dict(d, source)
        except DltricksError as e:
            if not notes:
                raise
            raise DltricksError(f"{e} ({'; '.join(notes)})") from None

    def patch(self, patch: dict[str, Any]) -> Recipe:
        """A new recipe with dotted keys set, e.g. ``{"train.lr": 0.1}``; validated like a file."""
        d = self.to_dict()
        for key, value in patch.items():
            set_key(d, key, value)
        return Recipe.from_dict(d, source="patch " + ", ".join(f"{k}={v!r}" for k, v in patch.items()))

    # ---- output -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json")
        if d.get("compress") == COMPRESS_OFF:  # off: recipes (and their digests) read as before [compress]
            del d["compress"]
        return d

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def get(self, key: str) -> Any:
        return get_dotted(self.to_dict(), key)

    def digest(self) -> str:
        """A short hash of the resolved recipe: equal recipes, equal digests."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def flat(self) -> dict[str, Any]:
        """``{"train.lr": 0.001, ...}``: every key by its dotted path."""
        out: dict[str, Any] = {}

        def walk(prefix: str, v: Any) -> None:
            if isinstance(v, dict):
                for k, sub in v.items():
                    walk(f"{prefix}.{k}" if prefix else k, sub)
            else:
                out[prefix] = v

        walk("", self.to_dict())
        return out

