"""Cost: FLOPs equal hand counts, parameters and activation memory add up, latency is measured, and the
inspect/compare views built on them show the 7x7-vs-stacked-3x3 trade-off."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dltricks.analysis import compare_recipes, cost, inspect_model, inspect_recipe, measure_latency
from dltricks.analysis.inspect import DataInfo
from dltricks.nn import build_model
from dltricks.nn.models.resnet import resnet50_spec
from dltricks.recipe import Recipe


@pytest.mark.parametrize("dims", (1, 2, 3))
def test_single_conv_flops_match_hand_count(dims: int) -> None:
    cin, cout, k, s, batch = 3, 8, 3, 6, 2
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims](cin, cout, k, padding=1)
    c = cost(conv, (cin, *([s] * dims)), batch_size=batch, latency=False)
    macs = batch * cout * s ** dims * cin * k ** dims  # one multiply-add per output, input channel and tap
    assert c.flops == 2 * macs and c.macs == macs
    assert c.params == cout * cin * k ** dims + cout
    assert c.activation_bytes == batch * cout * s ** dims * 4  # float32 output
    assert c.param_bytes == 4 * c.params


def test_strided_conv_and_linear_hand_counts() -> None:
    net = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    c = cost(net, (2, 8, 8), latency=False)
    assert c.flops == 2 * (4 * 4 * 4 * 2 * 9) + 2 * (64 * 5)
    assert [r.flops for r in c.layers if r.flops] == [2 * 4 * 16 * 2 * 9, 2 * 64 * 5]
    assert sum(r.params for r in c.layers) == c.params


def test_shared_modules_count_their_parameters_once() -> None:
    conv = nn.Conv1d(4, 4, 3, padding=1)
    net = nn.Sequential(conv, nn.ReLU(), conv)
    c = cost(net, (4, 10), latency=False)
    assert c.params == 4 * 4 * 3 + 4 and sum(r.params for r in c.layers) == c.params
    assert c.flops == 2 * 2 * (4 * 10 * 4 * 3)  # but its FLOPs twice


def test_resnet50_cost_matches_published_figures() -> None:
    with torch.device("meta"):
        model = build_model(resnet50_spec(), (3, 224, 224), 1000)
    c = cost(model, (3, 224, 224), latency=False)
    assert c.params == 25_557_032
    assert c.macs / 1e9 == pytest.approx(4.09, abs=0.01)  # torchvision: 4.09 GMACs ("GFLOPS")


def test_latency_is_measured_and_restores_state() -> None:
    net = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4)).train()
    threads = torch.get_num_threads()
    median, std, runs = measure_latency(net, (1, 32), repeats=3, budget_s=5.0, threads=1)
    assert median > 0 and std >= 0 and runs == 3
    assert net.training and torch.get_num_threads() == threads
    c = cost(net, (1, 32), repeats=2)
    assert c.latency_ms is not None and c.latency_ms > 0 and "latency" in c.summary()


def test_inspect_model_table_and_json() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    ins = inspect_model(net, (1, 16, 16), name="tiny", latency=False)
    assert ins.rf.size == (8, 8) and ins.depth == 3
    d = json.loads(json.dumps(ins.to_dict()))
    assert d["receptive_field"]["size"] == [8, 8] and d["cost"]["params"] == ins.cost.params
    assert [row["rf"] for row in d["layers"]][:4] == [[3, 3], [3, 3], [4, 4], [8, 8]]
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(ins)
    text = console.export_text()
    assert "receptive field 8" in text and "MaxPool2d" in text


def test_compare_7x7_with_three_3x3() -> None:
    a = Recipe.load("digits-cnn", ["model.channels=[16]", "model.kernel_size=7"])
    b = Recipe.load("digits-cnn", ["model.channels=[16]", "model.kernel_size=7", "model.stack_3x3=true"])
    cmp = compare_recipes(a, b, latency=False)
    rows = {q: (va, vb) for q, va, vb, _, _ in cmp.rows()}
    assert rows["receptive field"] == (7, 7)  # the same field...
    assert rows["depth"] == (2, 4)  # ...through three convs instead of one
    conv_a = 16 * 1 * 49  # first layer 1 -> 16 channels
    conv_b = 16 * 1 * 9 + 2 * 16 * 16 * 9
    assert rows["parameters"][1] - rows["parameters"][0] == conv_b - conv_a + 2 * 2 * 16  # + two more norms
    assert cmp.to_dict()["rows"][0]["quantity"] == "parameters"


def test_inspect_recipe_with_given_data_info() -> None:
    r = Recipe.load("mnist1d-cnn")
    ins = inspect_recipe(r, latency=False, info=DataInfo("classification", (1, 40), 10))
    assert ins.rf.size == (18,) and ins.rf.stride == (4,)
    assert ins.cost.params == 32_554


def test_human_uses_si_prefixes_and_a_space_before_the_unit():
    from dltricks.analysis.cost import human

    assert human(747_520, "FLOPs") == "747.5 kFLOPs"
    assert human(1_234_567) == "1.235M" and human(999) == "999" and human(12_000_000_000, "FLOPs") == "12 GFLOPs"
    assert human(3 * 1024 ** 2, "B") == "3.00 MiB"


def test_a_run_records_the_flops_of_its_trained_model(ledger_home) -> None:
    """Each run counts its model's FLOPs (one forward pass per sample, on meta tensors): what a study's
    report shows, without the report counting them again."""
    from dltricks.analysis.inspect import data_info
    from dltricks.runner.run import train

    recipe = Recipe.load("mnist1d-cnn", ["data.num_samples=300", "train.epochs=1", "model.channels=[4, 8]"])
    m = train(recipe, progress=False).metrics
    info = data_info(recipe)
    assert m["flops"] == cost(build_model(recipe.model, info.in_shape, info.num_classes), info.in_shape,
                              latency=False).flops > 0
