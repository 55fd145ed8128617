"""MkDocs hook: the recipe key reference and the trick catalogue are generated from the code at build time.

They are written from the pydantic schema (:class:`dltricks.recipe.Recipe`, its sections and every registered
dataset and model section) and from :func:`dltricks.tricks.catalogue`, so the site cannot drift from them.
MkDocs loads this file through ``hooks:`` in mkdocs.yml; ``python docs/hooks.py OUT_DIR`` writes the two
pages to a folder instead (to read them without building the site).
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

# page path (relative to docs/) -> generator; mkdocs.yml's nav names these paths
GENERATED = {"reference/recipe-keys.md": "recipe_keys_page", "reference/tricks.md": "tricks_page"}


# ---- recipe keys ------------------------------------------------------------------------------------------

def _variants(base: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Registered dataset or model sections: ``{"mnist1d": Mnist1dSpec, ...}``, by their ``name`` default.

    Subclasses without a default name (shared bases such as the segmentation datasets' keys) are skipped:
    their keys appear under each dataset that has them."""
    import dltricks.data  # noqa: F401  (the registries fill when these packages import)
    import dltricks.nn  # noqa: F401

    found: dict[str, type[BaseModel]] = {}
    todo = list(base.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        name = cls.model_fields["name"].default
        if isinstance(name, str):
            found[name] = cls
    return dict(sorted(found.items()))


def _type_text(annotation: Any) -> str:
    """``Literal['a', 'b']`` -> ``"a" | "b"``; ``list[int]`` stays; class names lose their module."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args)
    if origin is typing.Annotated:
        return _type_text(args[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_text(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_text(a) for a in args)}]" if args else name
    if isinstance(annotation, type):
        return "table" if issubclass(annotation, BaseModel) else annotation.__name__
    return str(annotation).replace("typing.", "")


def _default_text(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "{}"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        value = list(value)
    return repr(value)


def _cell(text: str) -> str:
    # a table cell: pipes would end it, and backticks keep key names literal
    return text.replace("|", "\\|").replace("\n", " ")


def section_keys(model: type[BaseModel], prefix: str, skip: frozenset[str] = frozenset()
                 ) -> Iterator[tuple[str, str, str, str]]:
    """``(dotted key, type, default, description)`` for every key of ``model``, nested tables flattened."""
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        key = f"{prefix}.{name}" if prefix else name
        ann = field.annotation
        nested = isinstance(ann, type) and issubclass(ann, BaseModel)
        yield key, _type_text(ann), _default_text(field), field.description or ""
        if nested:
            yield from section_keys(ann, key)


def _table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    out = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    out += [f"| `{k}` | `{_cell(t)}` | `{_cell(d)}` | {_cell(desc)} |" for k, t, d, desc in rows]
    return out + [""]


def recipe_keys() -> list[str]:
    """Every dotted key the generated page documents (the test checks it against the schema too)."""
    return [row[0] for _, rows in _recipe_sections() for row in rows]


IMPORT_PATH = "module:attr"  # how the key page names a section read by the user's own code


def _recipe_sections() -> list[tuple[str, list[tuple[str, str, str, str]]]]:
    """``[(heading, rows)]``: top-level keys, then each section, data and model per registered variant."""
    from dltricks.recipe import DataSpec, ModelSpec, Recipe
    from dltricks.recipe.section import variant_spec

    fields = Recipe.model_fields
    out = [("Top level", list(section_keys(Recipe, "", skip=frozenset(fields_sections(Recipe)))))]
    for section, base in (("data", DataSpec), ("model", ModelSpec)):
        out.append((f"`[{section}]`: every {'dataset' if section == 'data' else 'model'}",
                    list(section_keys(base, section))))
        common = frozenset(base.model_fields) - {"name"}
        for name, cls in _variants(base).items():
            out.append((f'`[{section}]` name = "{name}"', list(section_keys(cls, section, skip=common))))
        imported = variant_spec(section, IMPORT_PATH)  # the user's own code, named "module:attr"
        if imported is not None:
            out.append((f'`[{section}]` name = "{IMPORT_PATH}"', list(section_keys(imported, section, skip=common))))
    for section in fields_sections(Recipe):
        if section in ("data", "model"):
            continue
        out.append((f"`[{section}]`", list(section_keys(fields[section].annotation, section))))
    return out


def fields_sections(model: type[BaseModel]) -> list[str]:
    """The recipe's table-valued keys (``data``, ``model``, ``train``, ...) in schema order."""
    return [n for n, f in model.model_fields.items()
            if isinstance(_unwrap(f.annotation), type) and issubclass(_unwrap(f.annotation), BaseModel)]


def _unwrap(annotation: Any) -> Any:
    # SerializeAsAny[DataSpec] is Annotated[DataSpec, ...] on some pydantic versions
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation


def recipe_keys_page() -> str:
    lines = [
        "# Recipe keys",
        "",
        "<!-- generated by docs/hooks.py from dltricks.recipe at build time: edit the schema, not this page -->",
        "",
        "Every key a recipe accepts, generated from the schema that validates it, so it is what the code",
        "checks today. Set a key in a TOML file or with `-o section.key=value` (a TOML value). A dataset's",
        "or model's own keys apply when `data.name` or `model.name` selects it; switching the name starts",
        "that section from the new dataset's or model's defaults. `base = \"NAME\"` (a bundled recipe or a",
        "path) is read before validation: the file inherits that recipe and overrides its keys.",
        '`[tune]` and `[nas]` also take search dimensions: any dotted recipe key',
        '(`"train.lr" = { low = 1e-4, high = 0.1, log = true }` or a list of choices),',
        "see [Tuning and architecture search](../search.md).",
        "",
    ]
    for heading, rows in _recipe_sections():
        lines += [f"## {heading}", ""]
        lines += _table(rows) if rows else ["(no keys of its own)", ""]
    return "\n".join(lines)


# ---- tricks ------------------------------------------------------------------------------------------------

def _patch_text(patch: dict[str, Any]) -> str:
    if not patch:
        return "(the recipe as it is)"
    return ", ".join(f"`{k} = {_toml_value(v)}`" for k, v in patch.items())


def _toml_value(v: Any) -> str:
    import tomli_w

    return tomli_w.dumps({"x": v}).partition("=")[2].strip()


def trick_names() -> list[str]:
    from dltricks.tricks import catalogue

    return sorted(catalogue())


def tricks_page() -> str:
    from dltricks.tricks import catalogue

    by_family: dict[str, list[Any]] = {}
    for t in catalogue().values():
        by_family.setdefault(t.family, []).append(t)
    lines = [
        "# Trick catalogue",
        "",
        "<!-- generated by docs/hooks.py from dltricks.tricks at build time: edit the catalogue, not this page -->",
        "",
        "Every trick is a named patch of recipe keys: **on** is what `dltricks ablate --trick NAME` sets in the",
        "variant, **off** what it sets in the baseline. `dltricks tricks` prints the same catalogue,",
        "`dltricks tricks NAME` one entry. A custom trick is `--trick NAME:key=value[,key=value...]`.",
        "",
        "| family | tricks |",
        "| --- | --- |",
    ]
    for family in sorted(by_family):
        names = ", ".join(f"[`{t.name}`](#{t.name})" for t in sorted(by_family[family], key=lambda t: t.name))
        lines.append(f"| {family} | {names} |")
    lines.append("")
    for family in sorted(by_family):
        lines += [f"## {family}", ""]
        for t in sorted(by_family[family], key=lambda t: t.name):
            lines += [f"### `{t.name}` {{ #{t.name} }}", "", t.tip, "",
                      f"- on: {_patch_text(t.on)}", f"- off: {_patch_text(t.off)}"]
            if t.applies_to:
                lines.append("- applies to: " + ", ".join(f"`{a}`" for a in t.applies_to))
            if t.reference:
                lines.append(f"- reference: {t.reference}")
            lines.append("")
    return "\n".join(lines)


# ---- layers ------------------------------------------------------------------------------------------------

LAYERS_MARK = "<!-- layers -->"


def layers_text() -> str:
    """The layer contract of pyproject.toml ([tool.importlinter], written there once) as a numbered list,
    top first, for the architecture page."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    contracts = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    return "\n".join(f"{i}. " + " | ".join(f"`{name.strip()}`" for name in layer.split("|"))
                     for i, layer in enumerate(layers, 1))


# ---- mkdocs ------------------------------------------------------------------------------------------------

def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """The architecture page shows the layers as the contract states them."""
    return markdown.replace(LAYERS_MARK, layers_text()) if LAYERS_MARK in markdown else markdown


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the build (they exist only in memory: nothing is written to docs/)."""
    from mkdocs.structure.files import File

    for path, fn in GENERATED.items():
        files.append(File.generated(config, path, content=globals()[fn]()))
    return files


def write(out: Path) -> list[Path]:
    """Write the generated pages under ``out`` (same relative paths as on the site)."""
    written = []
    for path, fn in GENERATED.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(globals()[fn]() + "\n")
        written.append(target)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python docs/hooks.py OUT_DIR  (writes the generated reference pages there)")
    for p in write(Path(sys.argv[1])):
        print(p)
