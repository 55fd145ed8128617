"""The documentation: generated reference pages cover the whole schema and catalogue; the site builds strictly;
the README stays one page whose links resolve inside the repository."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sections(page: str) -> dict[str, str]:
    """``{"## heading": body}`` of a Markdown page, split at its second-level headings."""
    parts = re.split(r"^(## .*)$", page, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def keys_of(model: type[BaseModel], prefix: str) -> list[str]:
    """Dotted keys of a pydantic model, nested tables included (the test's own walk, not the generator's)."""
    out = []
    for name, field in model.model_fields.items():
        out.append(f"{prefix}.{name}")
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += keys_of(ann, f"{prefix}.{name}")
    return out


def variant_class(section: str, name: str) -> type[BaseModel]:
    """The schema a dataset or model name validates against (a registered one, or the user's own code's)."""
    from dltricks.recipe.section import variant_spec

    spec = variant_spec(section, name)
    assert spec is not None, f"[{section}] name = {name!r} has no schema"
    return spec


def test_recipe_key_page_lists_every_key_of_every_section_and_variant(hooks):
    from dltricks.data import datasets
    from dltricks.nn import models
    from dltricks.recipe import DataSpec, ModelSpec, Recipe

    page = hooks.recipe_keys_page()
    by_heading = sections(page)
    documented = set(re.findall(r"^\| `([\w.]+)` \|", page, flags=re.M))
    assert documented == set(hooks.recipe_keys())

    # the fixed sections: every key under its own heading
    for section, field in Recipe.model_fields.items():
        ann = field.annotation
        if section in ("data", "model") or not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            continue
        body = by_heading[f"## `[{section}]`"]
        for key in keys_of(ann, section):
            assert f"| `{key}` |" in body, f"{key} missing from the recipe key page"
    assert "| `name` |" in by_heading["## Top level"] and "| `seed` |" in by_heading["## Top level"]

    # every registered dataset and model: the common keys once, its own keys under its heading
    for section, base, names in (("data", DataSpec, datasets()), ("model", ModelSpec, models())):
        kind = "dataset" if section == "data" else "model"
        common = by_heading[f"## `[{section}]`: every {kind}"]
        for key in keys_of(base, section):
            assert f"| `{key}` |" in common, f"{key} missing from the recipe key page"
        assert len(names) >= 6
        for name in [*names, hooks.IMPORT_PATH]:  # the registered ones, and the user's own by import path
            body = by_heading[f'## `[{section}]` name = "{name}"']
            cls = variant_class(section, name)
            for key in keys_of(cls, section):
                own = key.split(".")[1] not in base.model_fields or key == f"{section}.name"
                assert f"| `{key}` |" in (body if own else common), f"{key} ({name}) missing from the page"

    # a default and a description come through from the schema, escaped for the table
    assert '| `train.loss` | `"ce" \\| "dice" \\| "ce_dice"` | `"ce"` | dice and ce_dice for segmentation |' in page


def test_trick_page_lists_every_catalogue_trick_with_its_patch(hooks):
    from dltricks.tricks import catalogue

    page = hooks.tricks_page()
    tricks = catalogue()
    assert len(tricks) >= 40 and hooks.trick_names() == sorted(tricks)
    for name, t in tricks.items():
        heading = f"### `{name}` {{ #{name} }}"
        assert heading in page, f"trick {name} missing from the catalogue page"
        entry = page[page.index(heading):].split("\n### ", 1)[0]
        assert t.tip in entry and (not t.reference or t.reference in entry)
        for key in t.on:  # off: the same key, or (an empty off patch) the recipe as it is
            shown = entry.count(f"`{key} = ")
            assert shown == 2 or (not t.off and shown == 1 and "- off: (the recipe as it is)" in entry), \
                f"{name}: patch of {key} not shown on and off"
        assert f"## {t.family}\n" in page
    ls = page[page.index("### `label_smoothing`"):].split("\n### ", 1)[0]
    assert "- on: `train.label_smoothing = 0.1`" in ls and "- off: `train.label_smoothing = 0.0`" in ls


def test_hooks_writes_the_generated_pages_from_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "hooks.py"), str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    keys = (tmp_path / "reference" / "recipe-keys.md").read_text()
    tricks = (tmp_path / "reference" / "tricks.md").read_text()
    assert "| `train.lr` |" in keys and "### `one_cycle`" in tricks
    bad = subprocess.run([sys.executable, str(ROOT / "docs" / "hooks.py")], capture_output=True, text=True)
    assert bad.returncode != 0 and "usage: python docs/hooks.py OUT_DIR" in bad.stderr


@pytest.mark.slow
def test_site_builds_strictly_with_the_generated_pages(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra (pip install -e '.[docs]') builds the site")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    keys = (site / "reference" / "recipe-keys" / "index.html").read_text()
    tricks = (site / "reference" / "tricks" / "index.html").read_text()
    assert "train.label_smoothing" in keys and 'id="label_smoothing"' in tricks
    assert not (site / "hooks.py").exists()


def test_readme_is_one_page_whose_links_stay_in_the_repository():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for phrase in ("| target |", "neither target", "before this work", "when the issue was filed", "../shared"):
        assert phrase not in text.lower(), phrase
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert len(links) >= 15
    for link in links:
        assert not link.startswith(("/", "..", "http")), link
        path = ROOT / link.split("#", 1)[0]
        assert path.is_file(), f"README links {link}, which is not a file in the repository"
    assert "docs/architecture.md" in links
    # the two commands: set-up + the main job, and the tests
    assert "./setup.sh && .venv/bin/dltricks ablate" in text and ".venv/bin/python -m pytest" in text


def test_every_docs_page_is_in_the_nav_and_every_measured_table_says_when_it_was_measured():
    nav = (ROOT / "mkdocs.yml").read_text()
    # docs/evidence/ holds the fragments `dltricks evidence --docs` writes; pages include them, they are not pages
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")
                   if not p.relative_to(ROOT / "docs").as_posix().startswith("evidence/"))
    assert len(pages) >= 20
    for page in pages:
        assert page in nav, f"docs/{page} is not in mkdocs.yml's nav"
    for page in pages:
        text = (ROOT / "docs" / page).read_text()
        assert "{{" not in text, f"docs/{page} has an unfilled placeholder"
        if "| verdict |" in text and page not in ("statistics.md", "ablation.md"):
            # a table of study verdicts says the date it was run, or that it was not rerun and how to
            assert re.search(r"(?i)(rerun|measured) on 2\d{3}-\d\d-\d\d", text) or "not rerun since" in text, page


def python_blocks(page: str, heading: str) -> list[str]:
    """The ```python blocks of one ``## heading`` section of a docs page."""
    body = sections(page)[heading]
    return re.findall(r"```python\n(.*?)\n```", body, flags=re.S)


def test_the_architecture_page_shows_the_contracts_layers(hooks):
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert hooks.LAYERS_MARK in page
    text = hooks.layers_text()
    for layer in ("cli", "search", "runner", "compress", "methods", "loop", "analysis", "recipe"):
        assert f"`{layer}`" in text


def test_the_architecture_pages_model_and_dataset_examples_train(tmp_path):
    """The worked examples of "Add a model" and "Add a dataset" run as written: a recipe that names them
    trains (in a subprocess, so that their registrations stay out of this one)."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    code = python_blocks(page, "## Add a model") + python_blocks(page, "## Add a dataset")
    assert len(code) == 2
    script = "\n\n".join(code) + '''

from dltricks.ledger import Ledger
from dltricks.recipe import Recipe
from dltricks.runner import train

recipe = Recipe.from_dict({"data": {"name": "blobs", "num_samples": 300}, "model": {"name": "tiny", "width": 8},
                           "train": {"epochs": 5, "lr": 0.05, "batch_size": 32}})
result = train(recipe, ledger=Ledger(), progress=False)
print("accuracy", result.metrics["test_accuracy"])
'''
    env = {**os.environ, "DLTRICKS_HOME": str(tmp_path)}
    env.pop("DLTRICKS_LEDGER", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    accuracy = float(done.stdout.split("accuracy")[-1])
    assert accuracy > 0.9  # two blobs three standard deviations apart
