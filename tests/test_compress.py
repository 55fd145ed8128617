"""dltricks.compress: real pruning and quantization of tiny trained runs, saved and rebuilt from safetensors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from dltricks.cli import main
from dltricks.compress import compress_run, compressed_model, load_compressed, save_compressed, variant_specs
from dltricks.compress import prune as pruning
from dltricks.compress.measure import paired_bootstrap
from dltricks.compress.pipeline import compress_model
from dltricks.compress.quantize import static_int8, weight_only_int8
from dltricks.compress.report import pareto_front
from dltricks.compress.sparse import SparseLinear
from dltricks.compress.store import flatten_state, unflatten_state
from dltricks.errors import DltricksError
from dltricks.ledger import Ledger
from dltricks.methods.build import model_from_run
from dltricks.recipe import CompressSpec, Recipe
from dltricks.runner.run import make_task, train

SMALL = ["data.train_limit=400", "train.epochs=1", "train.batch_size=64", "train.device='cpu'"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A ledger with one tiny trained CNN and one tiny MLP (1 epoch on 400 MNIST-1D samples)."""
    root = tmp_path_factory.mktemp("compress")
    ledger = Ledger(url=f"sqlite:///{root / 'ledger.db'}", root=root)
    cnn = train(Recipe.load("mnist1d-cnn", SMALL + ["model.channels=[8, 16, 32]"]), ledger=ledger, progress=False)
    mlp = train(Recipe.load("mnist1d-mlp", SMALL + ["model.hidden=[64, 64]"]), ledger=ledger, progress=False)
    return ledger, cnn.run_id, mlp.run_id


def _loaded(ledger, run_id):
    recipe, bundle, model = model_from_run(ledger, run_id)
    return recipe, bundle, model, make_task(recipe, bundle)


def _round_trip(tmp_path, model, desc, x):
    save_compressed(tmp_path, model, desc)
    again, _ = load_compressed(tmp_path)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))  # bit for bit, after a save/load through safetensors
    return again


@pytest.mark.parametrize("spec", [
    CompressSpec(quantize="static"),
    CompressSpec(prune=0.5, prune_mode="structured"),
    CompressSpec(prune=0.5, prune_mode="structured", quantize="static"),
    CompressSpec(quantize="weight_only"),
], ids=lambda s: f"{s.prune_mode if s.prune else ''}{s.quantize}")
def test_cnn_variants_rebuild_identically_and_shrink(runs, tmp_path, spec):
    ledger, cnn, _ = runs
    recipe, bundle, model, task = _loaded(ledger, cnn)
    dense = save_compressed(tmp_path / "dense", model, _desc(recipe, bundle)).stat().st_size
    small, desc, _ = compress_model(copy.deepcopy(model), recipe, bundle, task, spec)
    again = _round_trip(tmp_path / "small", small, desc, bundle.test[0][:50])
    assert (tmp_path / "small" / "model.safetensors").stat().st_size < 0.6 * dense
    if spec.prune:  # channels really removed: 8, 16, 32 -> 4, 8, 16
        convs = [m for m in copy.deepcopy(again).modules() if hasattr(m, "out_channels")]
        assert [c.out_channels for c in convs][:3] == [4, 8, 16]


def _desc(recipe, bundle):
    from dltricks.compress.store import Description

    return Description(recipe=recipe.to_dict(), in_shape=list(bundle.in_shape), num_classes=bundle.num_classes)


def test_unstructured_global_pruning_stores_sparse_linear_layers(runs, tmp_path):
    ledger, _, mlp = runs
    recipe, bundle, model, task = _loaded(ledger, mlp)
    spec = CompressSpec(prune=0.9, prune_scope="global")
    small, desc, _ = compress_model(copy.deepcopy(model), recipe, bundle, task, spec)
    sparse_layers = [m for m in small.modules() if isinstance(m, SparseLinear)]
    assert desc.sparse_layers and len(sparse_layers) == len(desc.sparse_layers)
    kept = sum(m.values.numel() for m in sparse_layers)
    total = sum(m.shape[0] * m.shape[1] for m in sparse_layers)
    assert kept / total <= 0.25
    assert pruning.sparsity(small) == pytest.approx(0.9, abs=0.01)  # global: 90% of all weights, CSR ones included
    again = _round_trip(tmp_path, small, desc, bundle.test[0][:50])
    assert sum(isinstance(m, SparseLinear) for m in again.modules()) == len(sparse_layers)


def test_masked_pruning_alone_is_not_smaller_and_lottery_rewinds_survivors_to_init():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    init = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # "training" moved every weight
    pruning.prune_iteratively(model, 0.75, steps=2, scope="layer", init=init)
    pruning.make_permanent(model)
    w, w0 = model[0].weight, init["0.weight"]
    assert pruning.sparsity(model) == pytest.approx(0.75, abs=0.02)
    assert w.shape == w0.shape  # dense: masked zeros take as much room as before
    assert torch.equal(w[w != 0], w0[w != 0])  # survivors are back at their initial values


def test_dynamic_and_weight_only_variants_are_ledger_runs_linked_to_the_source(runs):
    ledger, _, mlp = runs
    result = compress_run(ledger, mlp, variant_specs(["dynamic", "weight_only"]), progress=False, rounds=1)
    rows = {r["variant"]: r for r in result.rows}
    assert set(rows) == {"source", "dynamic", "weight_only"}
    for name in ("dynamic", "weight_only"):
        row = rows[name]
        assert row["size_ratio"] > 2.5  # int8 weights: 4x fewer bytes, less the file header on this tiny MLP
        assert row["delta_ci_low"] <= row["test_accuracy_delta"] <= row["delta_ci_high"]
        rec = ledger.get(row["run"])
        assert rec.status == "completed" and rec.study == f"compress-{mlp}" and rec.variant == name
        assert rec.recipe["compress"]["source"] == mlp and rec.recipe["compress"]["quantize"] == name
        for key in ("size_bytes", "latency_b1_ms", "latency_b64_ms", "test_accuracy"):
            assert rec.metrics[key] > 0
        # the stored variant rebuilds and scores what the ledger says
        model = compressed_model(ledger, rec.id)
        _, bundle, _, task = _loaded(ledger, mlp)
        from dltricks.compress.measure import test_metrics

        assert test_metrics(model, bundle, task)["test_accuracy"] == pytest.approx(rec.metrics["test_accuracy"])
    assert result.report["pareto"].stat().st_size > 1000 and "dynamic" in result.report["html"].read_text()
    with pytest.raises(DltricksError, match="already a compressed model"):
        compress_run(ledger, rows["dynamic"]["run"], variant_specs(["dynamic"]), progress=False)
    with pytest.raises(DltricksError, match="holds a compressed model"):
        model_from_run(ledger, rows["dynamic"]["run"])


def test_compress_section_in_a_recipe_is_applied_before_test_metrics(runs):
    ledger = runs[0]
    result = train(Recipe.load("mnist1d-mlp", SMALL + ["model.hidden=[64, 64]", "compress.prune=0.5",
                                                       "compress.prune_mode='structured'",
                                                       "compress.quantize='dynamic'"]),
                   ledger=ledger, progress=False)
    m = result.metrics
    assert m["size_bytes"] < 0.2 * ledger.get(runs[2]).metrics["params"] * 4  # a quarter of the width, in int8
    model = compressed_model(ledger, result.run_id)
    assert model[1].weight().shape == (32, 40)  # half of the 64 units are gone, and the weight is int8
    assert model[1].weight().dtype == torch.qint8


def test_cli_compress_prints_the_table_and_errors_are_one_line(runs, capsys, monkeypatch):
    ledger, cnn, _ = runs
    monkeypatch.setenv("DLTRICKS_HOME", str(ledger.root))
    url = ledger.url
    assert main(["compress", cnn, "--quantize", "static", "-q", "--ledger", url]) == 0
    text = capsys.readouterr().out
    assert "static" in text and "source" in text and "compress.html" in text
    assert (ledger.root / "reports" / f"compress-{cnn}" / "pareto.png").is_file()
    assert main(["compress", cnn, "--prune", "1.5", "--ledger", url]) == 2
    assert capsys.readouterr().err.strip() == \
        "error: pruning fraction 1.5 is out of range; give a share of weights in (0, 1), e.g. 0.5"
    assert main(["compress", "0123456789ab", "--quantize", "dynamic", "--ledger", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no run '0123456789ab'") and err.count("\n") == 1
    assert main(["compress", cnn, "--ledger", url]) == 2
    assert "nothing to compress" in capsys.readouterr().err


def test_methods_refuse_models_they_cannot_handle():
    class Branchy(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -self.fc(x)

    with pytest.raises(DltricksError, match="static int8 needs a model that torch.fx can trace"):
        static_int8(Branchy(), torch.ones(1, 4), [torch.ones(2, 4)])
    with pytest.raises(DltricksError, match="weight-only int8 acts on Linear and Conv layers"):
        weight_only_int8(nn.Sequential(nn.Flatten(), nn.ReLU()))
    with pytest.raises(DltricksError, match="out of range"):
        pruning.magnitude_prune(nn.Linear(3, 3), 0.0)
    with pytest.raises(DltricksError, match="compress.prune = 1.0"):
        Recipe.load("mnist1d-mlp", ["compress.prune=1.0"])
    with pytest.raises(DltricksError, match="set compress.finetune_epochs >= 1"):
        variant_specs(["qat"])


def test_quantized_state_round_trips_through_plain_tensors():
    w = torch.randn(6, 4)
    per_channel = torch.quantize_per_channel(w, torch.rand(6) + 0.01, torch.zeros(6, dtype=torch.long), 0, torch.qint8)
    per_tensor = torch.quantize_per_tensor(w, 0.05, 3, torch.quint8)
    state = {"a": per_channel, "b": (per_tensor, torch.ones(2)), "c": torch.qint8, "d": torch.arange(3)}
    tensors, layout = flatten_state(state)
    assert all(not t.is_quantized for t in tensors.values())
    back = unflatten_state(tensors, layout)
    assert torch.equal(back["a"].int_repr(), per_channel.int_repr())
    assert torch.equal(back["a"].q_per_channel_scales(), per_channel.q_per_channel_scales())
    assert back["b"][0].q_scale() == 0.05 and back["b"][0].q_zero_point() == 3 and back["c"] is torch.qint8


def test_pareto_front_and_paired_bootstrap():
    assert pareto_front([(1.0, 0.5), (2.0, 0.9), (3.0, 0.8), (0.5, 0.4)]) == [3, 0, 1]
    base = np.array([True] * 90 + [False] * 10)
    same = paired_bootstrap(base, base.copy())
    assert same == (0.0, 0.0, 0.0)
    worse = base.copy()
    worse[:20] = False
    delta, lo, hi = paired_bootstrap(base, worse)
    assert delta == pytest.approx(-0.2) and lo < delta < hi < 0


def test_compress_section_is_absent_from_recipes_that_do_not_use_it():
    r = Recipe.load("mnist1d-cnn")
    assert "compress" not in r.to_dict()
    on = r.patch({"compress.quantize": "dynamic"})
    assert on.to_dict()["compress"]["quantize"] == "dynamic" and on.digest() != r.digest()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_dynamic_int8_recurrent_models_round_trip(tmp_path, cell):
    from dltricks.compress.quantize import dynamic_int8
    from dltricks.compress.store import Description
    from dltricks.nn import build_model

    recipe = Recipe.load("mnist1d-cnn", ["model.name=rnn", f"model.cell='{cell}'", "model.bidirectional=true"])
    model = dynamic_int8(build_model(recipe.model, (1, 40), 10).eval())
    assert type(model.rnn).__module__.startswith("torch.ao.nn.quantized.dynamic")  # int8 LSTM/GRU
    desc = Description(recipe=recipe.to_dict(), in_shape=[1, 40], num_classes=10, quantize="dynamic")
    _round_trip(tmp_path, model, desc, torch.randn(3, 1, 40))
