"""Zero-shot: attribute files, the zsl1d dataset, DAP and ESZSL, ZSL and generalised ZSL metrics, the study
recipe and its trick."""

from __future__ import annotations

import json

import pytest
import torch

from dltricks.data import load_data
from dltricks.data.zsl1d import ATTRIBUTES, class_table
from dltricks.errors import DltricksError
from dltricks.methods.zeroshot import dap_scores, eszsl_fit, eszsl_scores, per_class_accuracy
from dltricks.recipe import Recipe
from dltricks.runner.run import metric_names, train
from dltricks.tricks.catalogue import get

SMALL = ["data.per_class=30", "model.channels=[8, 8]", "train.epochs=2", "eval.queries=5"]


def test_zsl1d_classes_are_distinct_part_combinations_drawn_from_their_parts():
    table = class_table(20)
    vecs = torch.tensor(list(table.values()))
    assert len(table) == 20 and len({tuple(v) for v in vecs.tolist()}) == 20
    assert set(vecs.sum(1).tolist()) <= {2.0, 3.0} and (vecs.sum(0) > 0).all()  # every part is in some class
    b = load_data(Recipe.load("zsl1d-zeroshot", SMALL).data, 0)
    assert b.class_names == list(table)[:15] and b.novel_names == list(table)[15:]
    assert b.train[0].shape[1:] == (1, 64) and set(b.novel[1].tolist()) == set(range(5))
    name = b.novel_names[0]
    assert name.split("+") == [a for a, on in zip(ATTRIBUTES, table[name]) if on]


def test_dap_scores_pick_the_class_whose_attributes_are_predicted():
    s = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    logits = (s * 2 - 1) * 4  # confident, correct attribute predictions for each class
    assert torch.equal(dap_scores(logits, s).argmax(1), torch.arange(3))
    p = torch.sigmoid(logits[0])
    want = torch.log(p[0]) + torch.log(1 - p[1]) + torch.log(p[2])
    assert dap_scores(logits[:1], s)[0, 0].item() == pytest.approx(want.item(), rel=1e-5)


def test_eszsl_recovers_a_linear_attribute_map_and_transfers_to_unseen_classes():
    g = torch.Generator().manual_seed(0)
    attrs = torch.tensor(list(class_table(20).values()))
    w = torch.randn(6, 16, generator=g)
    y = torch.arange(20).repeat_interleave(20)
    x = attrs[y] @ w + 0.05 * torch.randn(len(y), 16, generator=g)  # features are a linear view of attributes
    seen = y < 15
    v = eszsl_fit(x[seen], y[seen], attrs[:15], gamma=0.1, lam=0.1)
    pred = eszsl_scores(x[~seen], v, attrs[15:]).argmax(1)
    assert per_class_accuracy(pred, y[~seen] - 15) >= 0.6  # chance is 0.2


def test_attribute_files_json_and_csv_and_a_missing_class(tmp_path, shared_data_cache, monkeypatch):
    monkeypatch.setenv("DLTRICKS_CACHE", str(shared_data_cache))
    vectors = {str(c): [float(c % 2), float(c // 5), 0.5] for c in range(10)}
    (tmp_path / "a.json").write_text(json.dumps(vectors))
    (tmp_path / "a.csv").write_text("class,odd,high,half\n" + "".join(f"{k},{','.join(map(str, v))}\n"
                                                                      for k, v in vectors.items()))
    base = Recipe.load("mnist1d-cnn", ["data.num_samples=600", "data.novel_classes=[8, 9]"])
    for f in ("a.json", "a.csv"):
        b = load_data(base.patch({"data.attributes": str(tmp_path / f)}).data, 0)
        assert b.attributes["9"].tolist() == [1.0, 1.0, 0.5] and b.novel_names == ["8", "9"]
    del vectors["7"]
    (tmp_path / "b.json").write_text(json.dumps(vectors))
    with pytest.raises(DltricksError, match="has no attributes for class '7'"):
        load_data(base.patch({"data.attributes": str(tmp_path / "b.json")}).data, 0)
    with pytest.raises(DltricksError, match="file not found"):
        load_data(base.patch({"data.attributes": str(tmp_path / "none.json")}).data, 0)


def test_dap_needs_attributes_in_0_1_and_a_head_of_its_own(home_ledger, tmp_path):
    r = Recipe.load("mnist1d-cnn", ["data.num_samples=600", "train.epochs=1", "train.zero_shot=dap"])
    with pytest.raises(DltricksError, match="zero-shot learning needs class attributes"):
        train(r, ledger=home_ledger, progress=False)
    (tmp_path / "a.json").write_text(json.dumps({str(c): [c - 4.5, 1.0] for c in range(10)}))
    with pytest.raises(DltricksError, match=r"must lie in \[0, 1\]; use train.zero_shot = 'eszsl'"):
        train(r.patch({"data.attributes": str(tmp_path / "a.json")}), ledger=home_ledger, progress=False)
    z = Recipe.load("zsl1d-zeroshot", SMALL + ["train.zero_shot=dap", "model.embedding_dim=8"])
    with pytest.raises(DltricksError, match="cannot also be an embedding"):
        train(z, ledger=home_ledger, progress=False)


def test_study_recipe_scores_both_models_on_unseen_classes(home_ledger):
    r = Recipe.load("zsl1d-zeroshot", SMALL)
    assert r.ablate.tricks == ["zero_shot_attributes"] and r.eval.metric == "test_zsl_accuracy"
    for patch in ({}, get("zero_shot_attributes").on):
        res = train(r.patch(patch) if patch else r, ledger=home_ledger, progress=False)
        m = home_ledger.get(res.run_id).metrics
        assert res.status == "completed" and (res.run_dir / "zero_shot.png").stat().st_size > 1000
        for k in ("test_zsl_accuracy", "test_gzsl_seen", "test_gzsl_unseen", "test_gzsl_h"):
            assert 0 <= m[k] <= 1
        s, u = m["test_gzsl_seen"], m["test_gzsl_unseen"]
        assert m["test_gzsl_h"] == pytest.approx(2 * s * u / (s + u) if s + u else 0.0)
        assert set(metric_names(res.recipe)) >= {k for k in m if k.startswith("test_")}
    assert res.recipe.train.zero_shot == "dap"
