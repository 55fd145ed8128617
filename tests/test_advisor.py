"""The advisor: every rule fires on a recipe crafted to break its tip, its patch makes it go quiet and the
patched recipe validates; sound recipes get no advice; ``dltricks advise/inspect`` work end to end."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from dltricks.analysis import advice_to_json, advise, apply_advice, render_advice
from dltricks.analysis.advisor import RULES
from dltricks.analysis.inspect import DataInfo
from dltricks.recipe import Recipe

SEQ = DataInfo("classification", (1, 64), 10)
SEG2D = DataInfo("segmentation", (1, 128, 128), 2)
VOL = DataInfo("classification", (1, 16, 16, 16), 2)


def recipe(model: dict, **train) -> Recipe:
    """A recipe that is sound apart from what the test changes (cosine schedule, batch 32)."""
    t = {"epochs": 10, "batch_size": 32, "schedule": "cosine"}
    t.update(train)
    return Recipe.from_dict({"name": "crafted", "data": {"name": "mnist1d"}, "model": model, "train": t})


SOUND_CNN = {"name": "cnn", "channels": [8, 16, 32, 32]}  # field 38 of 64
SOUND_UNET = {"name": "unet", "channels": [4, 8, 16, 32], "norm": "instance"}

# rule -> (recipe, data info, the patch it must propose)
CASES = {
    "small_batch_batchnorm": (recipe(SOUND_CNN, batch_size=8), SEQ,
                              {"model.norm": "group", "model.weight_standardization": True}),
    "large_kernel_3d": (recipe({"name": "cnn", "channels": [4, 8], "kernel_size": 5}), VOL,
                        {"model.stack_3x3": True}),
    "receptive_field": (recipe({"name": "cnn", "channels": [8]}), SEQ, None),
    "segmentation_without_skips": (recipe({**SOUND_UNET, "skip_connections": False}), SEG2D,
                                   {"model.skip_connections": True}),
    "no_padding": (recipe({**SOUND_CNN, "padding": "valid"}), SEQ, {"model.padding": "same"}),
    "deep_plain_net": (recipe({"name": "cnn", "channels": [8] * 12, "norm": "none", "downsample": "none"}),
                       DataInfo("classification", (1, 16), 10), {"model.residual": True, "model.norm": "batch"}),
    "high_dropout": (recipe({**SOUND_CNN, "dropout": 0.7}), SEQ, {"model.dropout": 0.3}),
    "no_lr_schedule": (recipe(SOUND_CNN, schedule="constant"), SEQ, {"train.schedule": "cosine"}),
    "rnn_without_clipping": (recipe({"name": "rnn", "hidden": 8}), SEQ,
                             {"train.grad_clip": 1.0, "train.grad_clip_mode": "norm"}),
}


def test_every_rule_has_a_case() -> None:
    assert set(CASES) | {"target_scales", "feature_scales"} == set(RULES)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires_and_its_patch_silences_it(rule: str) -> None:
    r, info, patch = CASES[rule]
    advice = advise(r, info)
    assert [a.rule for a in advice] == [rule]  # only the broken tip fires
    a = advice[0]
    assert a.tip and a.evidence and a.reference and "\n" not in a.evidence
    if patch is not None:
        assert a.patch == patch
    fixed = apply_advice(r, advice)
    assert fixed != r
    assert advise(fixed, info) == []  # the fix is enough, and breaks no other tip
    again = Recipe.from_dict(fixed.to_dict())  # and it round-trips through validation
    assert again == fixed


def test_receptive_field_patch_reaches_the_target() -> None:
    r, info, _ = CASES["receptive_field"]
    (a,) = advise(r, info)
    assert "ratio 0.05" in a.evidence  # 3 / 64
    assert a.patch  # the cheapest candidate that reaches a third of the input
    from dltricks.analysis import receptive_field
    from dltricks.nn import build_model

    fixed = apply_advice(r, [a])
    rf = receptive_field(build_model(fixed.model, info.in_shape, 10), info.in_shape)
    assert rf.min_ratio >= 1 / 3


def test_segmentation_context_rule() -> None:
    small = recipe({"name": "unet", "channels": [4, 8], "norm": "group"})
    (a,) = advise(small, SEG2D)
    assert a.rule == "receptive_field" and "segmentation" in a.title
    assert a.patch == {"model.dilated_bottleneck": True}  # 18 -> 34 of 128 voxels: above a quarter
    assert advise(apply_advice(small, [a]), SEG2D) == []


def test_batchnorm_in_an_mlp_becomes_layernorm() -> None:
    r = recipe({"name": "mlp", "hidden": [16], "norm": "batch"}, batch_size=4)
    (a,) = advise(r, SEQ)
    assert a.patch == {"model.norm": "layer"}


def test_targets_on_different_scales() -> None:
    n = 64
    gen = torch.Generator().manual_seed(0)
    targets = {"age": 40 + 15 * torch.randn(n, generator=gen), "ratio": 0.02 * torch.randn(n, generator=gen)}
    bundle = SimpleNamespace(train=(torch.randn(n, 1, 64), targets))
    info = DataInfo("classification", (1, 64), 10, bundle)
    (a,) = advise(recipe(SOUND_CNN), info)
    assert a.rule == "target_scales" and "age" in a.evidence and a.patch == {"train.normalize_targets": True}
    close = SimpleNamespace(train=(torch.randn(n, 1, 64), torch.randn(n, 2, generator=gen)))
    assert advise(recipe(SOUND_CNN), DataInfo("classification", (1, 64), 10, close)) == []
    labels = SimpleNamespace(train=(torch.randn(n, 1, 64), torch.randint(0, 10, (n,))))
    assert advise(recipe(SOUND_CNN), DataInfo("classification", (1, 64), 10, labels)) == []


@pytest.mark.parametrize("name", ["mnist1d-cnn", "digits-cnn", "mnist1d-mlp", "mnist1d-gru", "mnist1d-transformer"])
def test_sound_bundled_recipes_get_no_advice(name: str) -> None:
    assert advise(Recipe.load(name)) == []


def test_sound_crafted_recipes_get_no_advice() -> None:
    assert advise(recipe(SOUND_UNET), SEG2D) == []
    assert advise(recipe({"name": "resnet"}), DataInfo("classification", (3, 32, 32), 10)) == []
    assert advise(recipe({"name": "transformer"}, grad_clip=1.0), SEQ) == []


def test_json_and_rendering() -> None:
    r, info, _ = CASES["high_dropout"]
    advice = advise(r, info)
    d = json.loads(advice_to_json(advice, r))
    assert d["recipe"] == "crafted" and d["count"] == 1 and d["advice"][0]["patch"] == {"model.dropout": 0.3}
    from rich.console import Console

    console = Console(width=100, record=True)
    console.print(render_advice(advice, r))
    console.print(render_advice([], r))
    text = console.export_text()
    assert "high_dropout" in text and "model.dropout = 0.3" in text and "no advice" in text


def test_unknown_rule_name() -> None:
    from dltricks.errors import DltricksError

    with pytest.raises(DltricksError, match="advisor rule"):
        advise(recipe(SOUND_CNN), SEQ, rules=["no_such_rule"])


# ---- the CLI verbs (thin wrappers over the functions above) -------------------------------------------

def test_cli_advise_fix_writes_a_valid_recipe(tmp_path, capsys) -> None:
    from dltricks.cli import main

    src = tmp_path / "bad.toml"
    src.write_text('name = "bad"\n[data]\nname = "mnist1d"\n[model]\nname = "cnn"\nchannels = [16, 32, 64]\n'
                   'dropout = 0.8\n[train]\nepochs = 10\nbatch_size = 8\n')
    out = tmp_path / "fixed.toml"
    assert main(["advise", str(src), "--json", "--fix", str(out)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {a["rule"] for a in d["advice"]} == {"small_batch_batchnorm", "high_dropout", "no_lr_schedule"}
    fixed = Recipe.load(str(out))  # re-validates
    assert fixed.model.norm == "group" and fixed.model.dropout == 0.3 and fixed.train.schedule == "cosine"
    assert main(["advise", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 0


def test_cli_inspect_and_compare(capsys) -> None:
    from dltricks.cli import main

    assert main(["inspect", "mnist1d-cnn", "--no-latency", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["receptive_field"]["size"] == [18] and d["cost"]["params"] == 32_554
    assert main(["inspect", "--compare", "mnist1d-cnn", "mnist1d-mlp", "--no-latency"]) == 0
    text = capsys.readouterr().out
    assert "receptive field" in text and "mnist1d-mlp" in text
    # -o sets a key in both, -b only in B: one 7x7 conv per stage against its stack of three 3x3
    assert main(["inspect", "--compare", "mnist1d-cnn", "mnist1d-cnn", "-o", "model.kernel_size=7",
                 "-b", "model.stack_3x3=true", "--no-latency", "--json"]) == 0
    rows = {r["quantity"]: (r["a"], r["b"]) for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["depth"] == (4, 10) and rows["receptive field"][0] == rows["receptive field"][1]
    assert main(["inspect"]) == 2  # a user mistake: one line, exit 2
    assert "inspect needs a RECIPE" in capsys.readouterr().err


# ---- feature vectors (a CSV table) ---------------------------------------------------------------------

def wine_recipe(tmp_path) -> str:
    """scikit-learn's bundled wine data as a CSV (feature std from 0.12 to 314) and a recipe on it."""
    from sklearn.datasets import load_wine

    d = load_wine()
    names = [n.replace("/", "_") for n in d.feature_names]
    rows = [",".join(names + ["label"])] + [",".join(f"{v:g}" for v in x) + f",{int(y)}"
                                            for x, y in zip(d.data, d.target)]
    (tmp_path / "wine.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "wine.toml").write_text('name = "wine"\n[data]\nname = "csv"\npath = "wine.csv"\n'
                                        '[model]\nname = "mlp"\n[train]\nschedule = "cosine"\n')
    return str(tmp_path / "wine.toml")


def test_cli_inspect_and_advise_on_a_csv_recipe(tmp_path, capsys) -> None:
    from dltricks.cli import main

    path = wine_recipe(tmp_path)
    assert main(["inspect", path, "--no-latency", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["in_shape"] == [13] and d["receptive_field"]["size"] == []  # no spatial axis: no field
    # mlp hidden [100, 100]: (13 + 1) * 100 + 101 * 100 + 101 * 3 weights
    assert d["cost"]["params"] == 14 * 100 + 101 * 100 + 101 * 3 and d["cost"]["flops"] > 0
    assert [r["kind"] for r in d["layers"] if r["params"]] == ["Linear"] * 3
    assert main(["inspect", path, "--no-latency"]) == 0
    text = capsys.readouterr().out
    assert "receptive field n/a" in text and "Linear" in text and "Traceback" not in text
    assert main(["inspect", "--compare", path, path, "-b", "model.hidden=[32]", "--no-latency"]) == 0
    assert "n/a" in capsys.readouterr().out
    # standardised by default: a sound recipe; read as it is, the 2500x spread of its features is flagged
    assert main(["advise", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 0
    assert main(["advise", path, "--json", "-o", "data.standardize=false"]) == 0
    (a,) = json.loads(capsys.readouterr().out)["advice"]
    assert a["rule"] == "feature_scales" and a["patch"] == {"data.standardize": True}
    assert "'proline'" in a["evidence"] and "differ" in a["evidence"]


def test_feature_scales_rule_counts_spreads_not_constants() -> None:
    n = 64
    x = torch.randn(n, 3)
    x[:, 0] *= 1000
    r = recipe({"name": "mlp"})
    info = DataInfo("classification", (3,), 2, SimpleNamespace(train=(x, torch.randint(0, 2, (n,)))))
    (a,) = advise(r, info)
    assert a.rule == "feature_scales" and "feature 0" in a.evidence
    x[:, 0] /= 20  # 50x apart: within the rule's 100x
    x[:, 2] = 7.0  # a constant column has no scale to compare
    assert advise(r, info) == []
