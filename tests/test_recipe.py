"""Recipes: bundled files, base inheritance, overrides, errors that name the key, TOML round trips."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dltricks.errors import DltricksError
from dltricks.recipe import Recipe, bundled_recipes, parse_override


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---- bundled recipes ---------------------------------------------------------------------------------

def test_bundled_recipes_load_and_describe_themselves():
    names = bundled_recipes()
    assert {"mnist1d-cnn", "mnist1d-mlp", "digits-cnn"} <= set(names)
    for name, desc in names.items():
        r = Recipe.load(name)
        assert r.name == name
        assert desc, f"{name} has no description comment"
    r = Recipe.load("mnist1d-cnn")
    assert r.data.name == "mnist1d" and r.model.name == "cnn"
    assert r.model.channels == [32, 64, 128]
    assert r.train.schedule == "one_cycle" and r.train.epochs == 15


# ---- base inheritance ------------------------------------------------------------------------------------

def test_base_bundled_name_file_wins(tmp_path):
    p = write(tmp_path / "mine.toml", """
base = "mnist1d-cnn"
name = "mine"
[train]
epochs = 3
[model]
channels = [8, 16]
""")
    r = Recipe.load(p)
    assert r.name == "mine"
    assert r.train.epochs == 3                 # the file overrides
    assert r.train.lr == 3e-3                  # ... and inherits the rest
    assert r.train.schedule == "one_cycle"
    assert r.model.channels == [8, 16] and r.model.head == "avg" and r.model.norm == "batch"


def test_base_relative_path_and_chain(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    write(tmp_path / "root.toml", """
name = "root"
[data]
name = "mnist1d"
num_samples = 600
[model]
name = "cnn"
channels = [4, 8]
norm = "group"
[train]
epochs = 2
lr = 0.01
""")
    write(sub / "mid.toml", 'base = "../root.toml"\n[train]\nlr = 0.02\n')
    leaf = write(sub / "leaf.toml", 'base = "mid.toml"\nname = "leaf"\n[train]\nbatch_size = 16\n')
    r = Recipe.load(leaf)  # "mid.toml" is found next to leaf.toml, not in the working directory
    assert (r.name, r.train.lr, r.train.epochs, r.train.batch_size) == ("leaf", 0.02, 2, 16)
    assert r.data.num_samples == 600 and r.model.norm == "group"


def test_changed_model_name_starts_the_section_afresh(tmp_path):
    p = write(tmp_path / "mlp.toml", """
base = "mnist1d-cnn"
[model]
name = "mlp"
hidden = [32]
""")
    r = Recipe.load(p)  # the cnn's channels/kernel_size would be unknown keys for an mlp
    assert r.model.name == "mlp" and r.model.hidden == [32]
    assert r.model.norm == "none"  # the mlp's default, not the cnn's "batch"


def test_base_cycle_is_detected(tmp_path):
    write(tmp_path / "a.toml", 'base = "b.toml"\nname = "a"\n')
    write(tmp_path / "b.toml", 'base = "a.toml"\nname = "b"\n')
    with pytest.raises(DltricksError, match="cycle"):
        Recipe.load(tmp_path / "a.toml")
    # the same cycle through a path spelled differently each time is still caught
    (tmp_path / "c").mkdir()
    write(tmp_path / "c" / "self.toml", 'base = "../c/self.toml"\n')
    with pytest.raises(DltricksError, match="cycle"):
        Recipe.load(tmp_path / "c" / "self.toml")


def test_missing_base_and_missing_file(tmp_path):
    with pytest.raises(DltricksError, match="not found"):
        Recipe.load(tmp_path / "nope.toml")
    p = write(tmp_path / "x.toml", 'base = "mnist1d-cnnn"\n')
    with pytest.raises(DltricksError, match="did you mean mnist1d-cnn"):
        Recipe.load(p)


# ---- overrides ----------------------------------------------------------------------------------

def test_overrides_are_typed():
    r = Recipe.load("mnist1d-cnn", ["train.lr=0.1", "train.epochs=2", "train.nesterov=true",
                                    "model.channels=[4, 8]", "data.name=mnist1d", "train.schedule=cosine",
                                    'name="with spaces"', "train.betas=[0.8, 0.9]"])
    assert r.train.lr == 0.1 and isinstance(r.train.lr, float)
    assert r.train.epochs == 2 and r.train.nesterov is True
    assert r.model.channels == [4, 8] and r.train.schedule == "cosine" and r.name == "with spaces"
    assert r.train.betas == (0.8, 0.9)


def test_override_switching_model_drops_the_old_models_keys():
    r = Recipe.load("mnist1d-cnn", ["model.name=mlp", "model.hidden=[16]"])
    assert r.model.name == "mlp" and r.model.hidden == [16]


def test_override_without_equals_is_an_error():
    with pytest.raises(DltricksError, match="key=value"):
        Recipe.load("mnist1d-cnn", ["train.lr"])


# ---- errors name the key ----------------------------------------------------------------------------

@pytest.mark.parametrize("override, expected", [
    ("train.lrr=0.1", "unknown key train.lrr (did you mean train.lr?)"),
    ("model.chanels=[1]", "unknown key model.chanels (did you mean model.channels?)"),
    ("data.num_sample=10", "did you mean data.num_samples?"),
    ("trian.lr=1", "unknown key trian (did you mean train?)"),
])
def test_unknown_key_did_you_mean(override, expected):
    with pytest.raises(DltricksError) as e:
        Recipe.load("mnist1d-cnn", [override])
    assert expected in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("override, key, value", [
    ("train.epochs=ten", "train.epochs", "'ten'"),
    ("train.epochs=0", "train.epochs", "0"),
    ("train.lr=-1.0", "train.lr", "-1.0"),
    ("train.label_smoothing=1.5", "train.label_smoothing", "1.5"),
    ("train.optimizer=adagrad", "train.optimizer", "'adagrad'"),
    ("train.device=tpu", "train.device", "'tpu'"),
    ("data.val_fraction=1.0", "data.val_fraction", "1.0"),
    ("model.dropout=2", "model.dropout", "2"),
    ("seed=-3", "seed", "-3"),
    ("train.lr=inf", "train.lr", "inf"),
])
def test_bad_value_names_key_and_value(override, key, value):
    with pytest.raises(DltricksError) as e:
        Recipe.load("mnist1d-cnn", [override])
    msg = str(e.value)
    assert f"{key} = {value}" in msg, msg
    assert "\n" not in msg


def test_unknown_model_and_dataset_name_list_the_valid_ones():
    with pytest.raises(DltricksError, match=r"model\.name = 'cnnn'.*did you mean cnn.*valid:.*mlp"):
        Recipe.load("mnist1d-cnn", ["model.name=cnnn"])
    with pytest.raises(DltricksError, match=r"data\.name = 'mnist'.*valid:.*digits"):
        Recipe.load("mnist1d-cnn", ["data.name=mnist"])


def test_malformed_toml_gives_file_and_line(tmp_path):
    p = write(tmp_path / "bad.toml", 'name = "x"\n[train]\nlr = 0.1\nepochs = = 3\n')
    with pytest.raises(DltricksError) as e:
        Recipe.load(p)
    msg = str(e.value)
    assert str(p) in msg and "line 4" in msg and "\n" not in msg


def test_missing_sections(tmp_path):
    p = write(tmp_path / "nodata.toml", '[model]\nname = "mlp"\n')
    with pytest.raises(DltricksError, match="missing key data"):
        Recipe.load(p)


# ---- patch, TOML round trip, digest --------------------------------------------------------------------

def test_patch_returns_a_new_validated_recipe():
    r = Recipe.load("mnist1d-cnn")
    p = r.patch({"train.label_smoothing": 0.1, "model.dropout": 0.2})
    assert p.train.label_smoothing == 0.1 and p.model.dropout == 0.2
    assert r.train.label_smoothing == 0.0  # the original is untouched
    assert p.digest() != r.digest()
    with pytest.raises(DltricksError, match="train.label_smoothing = 2"):
        r.patch({"train.label_smoothing": 2})
    with pytest.raises(DltricksError, match="unknown key train.smoothing"):
        r.patch({"train.smoothing": 0.1})
    m = r.patch({"model.name": "mlp"})
    assert m.model.name == "mlp" and m.model.dropout == r.model.dropout


@pytest.mark.parametrize("name", sorted(bundled_recipes()))
def test_to_toml_round_trip(name):
    r = Recipe.load(name).patch({"train.milestones": [3, 6], "train.class_weights": [1.0, 2.5],
                                 "train.betas": [0.85, 0.99], "name": 'quote " and \\ and ünïcode'})
    again = Recipe.from_dict(tomllib.loads(r.to_toml()))
    assert again == r
    assert again.digest() == r.digest()
    assert again.flat() == r.flat()


def test_digest_is_stable_and_sensitive():
    a, b = Recipe.load("mnist1d-cnn"), Recipe.load("mnist1d-cnn")
    assert a.digest() == b.digest() and len(a.digest()) == 12
    # written out, read back in another key order: same digest
    d = a.to_dict()
    reordered = {k: d[k] for k in reversed(list(d))}
    assert Recipe.from_dict(reordered).digest() == a.digest()
    assert a.patch({"seed": 1}).digest() != a.digest()
    assert a.patch({"train.lr": 0.003}).digest() == a.digest()  # the same value as the file's 3e-3


def test_flat_and_get():
    r = Recipe.load("mnist1d-cnn")
    flat = r.flat()
    assert flat["train.lr"] == 3e-3 and flat["model.name"] == "cnn" and flat["data.augment.flip"] == 0.0
    assert r.get("train.epochs") == 15
    with pytest.raises(DltricksError, match="no recipe key"):
        r.get("train.nope")


# ---- parse_override -------------------------------------------------------------------------------

def _toml_value(v) -> str:
    import tomli_w

    return tomli_w.dumps({"v": v}).split("=", 1)[1].strip()


keys = st.from_regex(r"[a-z][a-z0-9_]{0,8}(\.[a-z][a-z0-9_]{0,8}){0,2}", fullmatch=True)
values = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(keys, values)
def test_parse_override_round_trips_toml_values(key, value):
    k, v = parse_override(f"{key}={_toml_value(value)}")
    assert k == key
    assert type(v) is type(value)
    assert v == value or (isinstance(v, float) and math.isclose(v, value))


@settings(max_examples=200, deadline=None)
@given(keys, st.from_regex(r"[A-Za-z_][A-Za-z0-9_\-/.]{0,20}", fullmatch=True))
def test_parse_override_bare_words_are_strings(key, word):
    k, v = parse_override(f" {key} = {word} ")
    assert k == key
    if word in ("true", "false", "inf", "nan") or word.lstrip("+-").replace("_", "").isdigit():
        return  # TOML literals keep their TOML meaning
    assert v == word


def test_parse_override_examples():
    assert parse_override("train.lr=1e-3") == ("train.lr", 1e-3)
    assert parse_override("data.name=digits") == ("data.name", "digits")
    assert parse_override("model.channels=[1, 2]") == ("model.channels", [1, 2])
    assert parse_override("x=a=b") == ("x", "a=b")
    assert parse_override("x=1\nb = 2") == ("x", "1\nb = 2")  # not one TOML value: kept as text


# ---- paths, names and model switches, as a new user meets them ----------------------------------------------

def test_relative_paths_are_taken_from_the_recipe_file_and_stored_absolute(tmp_path, monkeypatch):
    import numpy as np

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    np.savez(project / "data" / "d.npz", x=np.zeros((20, 3), np.float32), y=np.arange(20) % 2)
    write(project / "base.toml", '[data]\nname = "npz"\npath = "data/d.npz"\n[model]\nname = "mlp"\n')
    (project / "exp").mkdir()
    write(project / "exp" / "leaf.toml", 'base = "../base.toml"\n[train]\nepochs = 1\n')
    write(project / "own.toml", 'base = "base.toml"\n[data]\npath = "./data/d.npz"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    want = str((project / "data" / "d.npz").resolve())
    assert Recipe.load(project / "exp" / "leaf.toml").data.path == want  # from the base file's folder
    assert Recipe.load(project / "own.toml").data.path == want
    # a path typed on the command line is the user's, from where they typed it
    (elsewhere / "other.npz").write_bytes(b"")
    assert Recipe.load(project / "own.toml", ["data.path=other.npz"]).data.path == str(elsewhere / "other.npz")
    from dltricks.data import load_data

    assert len(load_data(Recipe.load(project / "exp" / "leaf.toml").data).train[1]) > 0


def test_a_recipe_with_a_base_keeps_its_own_name(tmp_path):
    p = write(tmp_path / "my-exp.toml", 'base = "mnist1d-cnn"\n[train]\nepochs = 2\n')
    assert Recipe.load(p).name == "my-exp"
    named = write(tmp_path / "named.toml", 'base = "my-exp.toml"\nname = "given"\n')
    assert Recipe.load(named).name == "given"


@pytest.mark.parametrize("start", ["mnist1d-mlp", "mnist1d-cnn"])
def test_switching_model_by_override_is_one_rule(start):
    """From any recipe, -o model.name=rnn gives the rnn's defaults (keeping only dropout), whatever the
    old model's keys were called (the mlp's hidden list used to stay and fail as an rnn's int)."""
    r = Recipe.load(start, ["model.name=rnn"])
    assert r.model.name == "rnn" and r.model.hidden == 64 and r.model.cell == "lstm"
    # order of the overrides does not matter: the switch applies first
    r2 = Recipe.load(start, ["model.hidden=32", "model.name=rnn", "model.cell=gru"])
    assert (r2.model.name, r2.model.hidden, r2.model.cell) == ("rnn", 32, "gru")
    with pytest.raises(DltricksError, match=r"model.hidden = 'wide'.*model.name changed from .* to 'rnn'"):
        Recipe.load(start, ["model.name=rnn", "model.hidden=wide"])


def test_switching_model_in_a_file_follows_the_same_rule(tmp_path):
    p = write(tmp_path / "gru.toml", 'base = "mnist1d-mlp"\n[model]\nname = "rnn"\ncell = "gru"\n')
    r = Recipe.load(p)
    assert r.model.name == "rnn" and r.model.hidden == 64
    d = write(tmp_path / "drop.toml", 'base = "mnist1d-mlp"\n[model]\nname = "mlp"\ndropout = 0.2\n')
    assert Recipe.load(write(tmp_path / "cnn.toml", f'base = "{d}"\n[model]\nname = "cnn"\n')).model.dropout == 0.2


def test_every_key_of_the_common_sections_is_described():
    """The docs' key reference is generated from ``Field(description=...)``: a key without one would be a
    blank row. Every section the recipe package owns (the dataset's and model's own keys live with them)."""
    from pydantic import BaseModel

    import dltricks.recipe as schema

    seen, blank = set(), []

    def walk(model: type[BaseModel], prefix: str) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            if not (field.description or "").strip():
                blank.append(f"{prefix}{name}")
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                walk(field.annotation, f"{prefix}{name}.")

    walk(schema.Recipe, "")
    assert {schema.DataSpec, schema.ModelSpec, schema.AugmentSpec, schema.DomainSpec, schema.TuneSpec} <= seen
    assert blank == [], f"keys without a description: {blank}"


def test_the_package_keeps_every_public_name():
    """``from dltricks.recipe import X`` keeps working for every name the single module had."""
    import dltricks.recipe as schema

    for name in ("Section", "AugmentSpec", "DomainSpec", "DataSpec", "ModelSpec", "TrainSpec", "EvalSpec",
                 "AblateSpec", "TuneSpec", "NasSpec", "CompressSpec", "Recipe", "register_section",
                 "bundled_recipes", "explain_errors", "parse_override", "set_dotted", "get_dotted", "PATH"):
        assert name in schema.__all__ and getattr(schema, name) is not None, name


# ---- what is not a recipe ------------------------------------------------------------------------------

def test_a_folder_or_a_data_file_is_refused_for_what_it_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(DltricksError, match=r"^runs is a folder, not a recipe"):
        Recipe.load("runs")
    (tmp_path / "mnist1d-cnn").mkdir()  # a folder named like a bundled recipe: the bundled name still wins
    assert Recipe.load("mnist1d-cnn").name == "mnist1d-cnn"
    (tmp_path / "vols" / "imagesTr").mkdir(parents=True)
    (tmp_path / "vols" / "imagesTr" / "case1.nii.gz").write_bytes(b"")
    with pytest.raises(DltricksError, match=r"vols is a folder of NIfTI volumes in sub-folders.*name = \"nifti\""):
        Recipe.load("vols")
    (tmp_path / "vols" / "labelsTr").mkdir()  # laid out as dltricks reads it: init can survey it
    with pytest.raises(DltricksError, match=r"vols is a folder of NIfTI volumes.*: dltricks init vols && "):
        Recipe.load("vols")
    for name, kind, what in (("x.png", "an image", "images"), ("x.wav", "a sound file", "WAV files"),
                             ("x.mp3", "a sound file", "WAV files")):
        (tmp_path / name).write_bytes(b"1,2\n")
        with pytest.raises(DltricksError, match=rf"^{name} is {kind}, not a recipe; dltricks reads {what}.* from a "
                                                r"folder with one sub-folder per class.*dltricks init FOLDER"):
            Recipe.load(name)
    with pytest.raises(DltricksError, match=r"lay them out so, converted to WAV, then run"):
        Recipe.load("x.mp3")
    (tmp_path / "x.xlsx").write_bytes(b"PK")
    with pytest.raises(DltricksError, match=r"^x\.xlsx is a spreadsheet, not a recipe; save it as a CSV.*"
                                            r"name = \"npz\""):
        Recipe.load("x.xlsx")
    for name, kind in (("x.csv", "a CSV table"), ("x.npz", "NumPy arrays")):
        (tmp_path / name).write_bytes(b"1,2\n")
        with pytest.raises(DltricksError, match=rf"^{name} is {kind}, not a recipe;.*: dltricks init {name} && "
                                                r"dltricks train x\.toml$"):
            Recipe.load(name)
    # the suggested recipe never overwrites a file that is there
    (tmp_path / "x.toml").write_text("")
    with pytest.raises(DltricksError, match=r"-o x-2\.toml && dltricks train x-2\.toml$"):
        Recipe.load("x.csv")


def test_a_missing_base_names_the_file_and_the_key(tmp_path):
    p = write(tmp_path / "leaf.toml", 'base = "../nope/parent.toml"\n')
    with pytest.raises(DltricksError, match=r"leaf\.toml: base = '\.\./nope/parent\.toml': no recipe file /"):
        Recipe.load(p)
    mid = write(tmp_path / "mid.toml", 'base = "mnist1d-cnnn"\n')
    top = write(tmp_path / "top.toml", f'base = "{mid}"\n')
    with pytest.raises(DltricksError) as e:  # the recipe that holds the bad key is named, once
        Recipe.load(top)
    assert str(e.value).startswith(f"{mid}: base = 'mnist1d-cnnn': no recipe file or bundled recipe named")


def test_a_data_file_as_base_names_the_recipe_that_says_so(tmp_path):
    write(tmp_path / "rows.csv", "a,label\n1,0\n")
    p = write(tmp_path / "exp.toml", 'base = "rows.csv"\n')
    with pytest.raises(DltricksError, match=r"exp\.toml: base = 'rows\.csv': rows\.csv is a CSV table, not a recipe"):
        Recipe.load(p)


def test_a_folder_of_tables_points_at_one_of_its_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tables").mkdir()
    write(tmp_path / "tables" / "train.csv", "a,label\n1,0\n")
    with pytest.raises(DltricksError, match=r"^tables is a folder of CSV tables.*dltricks init tables/train\.csv "
                                            r"&& dltricks train tables/train\.toml$"):
        Recipe.load("tables")
