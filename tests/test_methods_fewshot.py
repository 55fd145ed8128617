"""Metric learning and few-shot: losses, P x K batches, held-out classes, N-way K-shot episodes, the
bundled one-shot study recipe and its tricks."""

from __future__ import annotations

import pytest
import torch
from test_train import RESUME_KW, InterruptAt, blobs, mlp, weights_equal

from dltricks.data import load_data
from dltricks.errors import DltricksError
from dltricks.loop.batches import Batches
from dltricks.loop.metric import MetricTask, prototypical_loss, recall_at_1
from dltricks.loop.training import TrainingInterrupted, fit
from dltricks.methods.episodes import episode_accuracy, features, fewshot_metrics
from dltricks.methods.fewshot import ClassBalanced
from dltricks.recipe import Recipe
from dltricks.runner.run import metric_names, train
from dltricks.tricks.catalogue import get

SMALL = ["data.num_samples=600", "model.channels=[8, 8]", "train.epochs=1", "eval.episodes=50",
         "eval.queries=5"]


def test_prototypical_loss_matches_a_hand_computed_episode():
    # two classes, two samples each: ranks 0 are support (prototypes), ranks 1 queries
    z = torch.tensor([[0.0, 0.0], [4.0, 0.0], [1.0, 0.0], [3.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 1, 0, 1])
    loss = prototypical_loss(z, y)
    # query (1,0): d^2 to protos (0,0),(4,0) = 1, 9 -> CE = log(1 + e^-8); query (3,0) likewise
    expected = torch.log1p(torch.exp(torch.tensor(-8.0)))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    loss.backward()
    assert z.grad.abs().sum() > 0


def test_metric_losses_fall_when_classes_separate():
    x, y = blobs(200, classes=4)
    for name in ("contrastive", "triplet", "protonet"):
        task = MetricTask(name)
        raw = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
        good = torch.nn.functional.one_hot(y, 8).float() * 5 + 0.01 * raw
        assert task.loss(good, y) < task.loss(raw, y), name


def test_recall_at_1_and_episodes_on_known_features():
    y = torch.arange(5).repeat_interleave(30)
    separated = torch.nn.functional.one_hot(y, 5).float() * 10 + torch.randn(150, 5) * 0.1
    noise = torch.randn(150, 5, generator=torch.Generator().manual_seed(1))
    assert recall_at_1(separated, y) == 1.0
    mean, ci, accs = episode_accuracy(separated, y, 5, 1, 5, 100, seed=0)
    assert mean == 1.0 and ci == 0.0 and len(accs) == 100
    mean, ci, accs = episode_accuracy(noise, y, 5, 1, 5, 400, seed=0)
    assert abs(mean - 0.2) < 3 * ci + 0.02 and ci > 0  # chance, with an honest interval
    assert episode_accuracy(noise, y, 5, 1, 5, 50, seed=3)[2] == episode_accuracy(noise, y, 5, 1, 5, 50, seed=3)[2]
    assert episode_accuracy(noise, y, 5, 1, 5, 50, seed=3)[2] != episode_accuracy(noise, y, 5, 1, 5, 50, seed=4)[2]
    # Chen et al.'s fine-tuned head: a softmax classifier per episode, all episodes at once
    assert episode_accuracy(separated, y, 5, 5, 5, 100, seed=0, head="linear")[0] == 1.0
    mean, ci, _ = episode_accuracy(noise, y, 5, 5, 5, 200, seed=0, head="linear")
    assert abs(mean - 0.2) < 3 * ci + 0.02


def test_classifier_features_are_the_input_of_the_last_linear_layer():
    model = mlp(hidden=16)
    x = torch.randn(10, 8)
    f = features(model, x, embedding=False)
    assert f.shape == (10, 16)
    assert torch.allclose(model[-1](f), model(x), atol=1e-6)
    assert features(model, x, embedding=True).shape == (10, 3)


def test_pk_batches_hold_k_samples_of_p_classes_and_resume_bit_identically(tmp_path):
    x, y = blobs(240, classes=6)
    method = ClassBalanced(MetricTask("triplet"), y, batch_size=12, k=3)
    batches = Batches((x, y), 12, 0, torch.device("cpu"))
    order = method.order(batches)
    assert len(order) == len(batches) * 12
    for block in order.view(-1, 12):
        labels = y[block].view(4, 3)
        assert (labels == labels[:, :1]).all() and len(set(labels[:, 0].tolist())) == 4
        assert len(set(block.tolist())) == 12

    val = blobs(60, classes=6, seed=1)

    def run(at=0, resume=False, seed=0, d="a"):
        model = InterruptAt(mlp(classes=16, seed=seed), at)  # a 16-wide embedding head
        m = ClassBalanced(MetricTask("protonet"), y, batch_size=12, k=3)
        kw = {**RESUME_KW, "batch_size": 12}
        h = fit(model, (x, y), val, method=m, checkpoint_dir=tmp_path / d, resume=resume, **kw)
        return model, h

    full, h_full = run()
    assert "train_accuracy" not in h_full.curves  # embeddings have no argmax accuracy
    assert h_full.curves["val_recall_at_1"][-1] > 0.9
    with pytest.raises(TrainingInterrupted):
        run(at=30, d="b")
    resumed, h = run(resume=True, seed=5, d="b")
    assert h.curves == h_full.curves and weights_equal(resumed, full)


def test_pk_errors_name_the_key_and_what_fits():
    x, y = blobs(30, classes=3)
    with pytest.raises(DltricksError, match="must divide train.batch_size"):
        ClassBalanced(MetricTask("triplet"), y, batch_size=10, k=3)
    with pytest.raises(DltricksError, match="needs 4 classes per batch"):
        ClassBalanced(MetricTask("triplet"), y, batch_size=12, k=3)
    with pytest.raises(DltricksError, match="has only 10 training samples; use train.pk_samples <= 10"):
        ClassBalanced(MetricTask("triplet"), y, batch_size=24, k=12)


def test_novel_classes_are_held_out_of_every_training_split(shared_data_cache, monkeypatch):
    monkeypatch.setenv("DLTRICKS_CACHE", str(shared_data_cache))
    r = Recipe.load("mnist1d-oneshot", SMALL)
    b = load_data(r.data, 0)
    assert b.num_classes == 5 and b.class_names == ["0", "1", "2", "3", "4"]
    assert b.novel_names == ["5", "6", "7", "8", "9"] and set(b.novel[1].tolist()) == set(range(5))
    n_all = len(load_data(r.patch({"data.novel_classes": []}).data, 0).test[1])
    assert len(b.test[1]) < n_all and int(b.train[1].max()) == 4
    with pytest.raises(DltricksError, match=r"data.novel_classes and data.classes share \[5\]"):
        load_data(r.patch({"data.classes": [0, 1, 5]}).data, 0)
    with pytest.raises(DltricksError, match=r"\[12\] are not classes"):
        load_data(r.patch({"data.novel_classes": [12]}).data, 0)


def test_episodes_need_enough_novel_classes_and_samples(shared_data_cache, monkeypatch):
    monkeypatch.setenv("DLTRICKS_CACHE", str(shared_data_cache))
    b = load_data(Recipe.load("mnist1d-oneshot", SMALL).data, 0)
    model = mlp(dim=40, classes=4)
    flat = (b.novel[0].flatten(1), b.novel[1])
    with pytest.raises(DltricksError, match="eval.n_way = 6 but data.novel_classes holds only 5"):
        fewshot_metrics(model, flat, embedding=False, n_way=6, shots=[1], queries=5, episodes=5, seed=0)
    with pytest.raises(DltricksError, match=r"eval.shots = 500 with eval.queries = 5 needs 505 samples"):
        fewshot_metrics(model, flat, embedding=False, n_way=5, shots=[500], queries=5, episodes=5, seed=0)


def test_too_many_shots_fail_before_training_and_leave_no_run(home_ledger):
    # issue 20.5: a recipe refused before the first step records no run (it once left a `failed` row)
    with pytest.raises(DltricksError, match="needs 505 samples of each class of data.novel_classes"):
        train(Recipe.load("mnist1d-oneshot", SMALL + ["eval.shots=[500]"]), ledger=home_ledger, progress=False)
    assert home_ledger.runs() == []


def test_metric_loss_needs_an_embedding_head(home_ledger):
    r = Recipe.load("mnist1d-oneshot", SMALL + ["train.metric_loss=triplet"])
    with pytest.raises(DltricksError, match="train.metric_loss and model.embedding_dim go together"):
        train(r, ledger=home_ledger, progress=False)


def test_one_shot_study_variants_run_and_record_episode_metrics(home_ledger):
    r = Recipe.load("mnist1d-oneshot", SMALL)
    assert r.ablate.tricks == ["protonet", "siamese", "triplet"] and r.eval.metric == "test_5way_1shot_accuracy"
    base = train(r, ledger=home_ledger, progress=False)
    proto = train(r.patch(get("protonet").on), ledger=home_ledger, progress=False)
    for res in (base, proto):
        m = home_ledger.get(res.run_id).metrics
        assert res.status == "completed" and 0.2 < m["test_5way_1shot_accuracy"] <= 1.0
        assert 0 < m["test_5way_1shot_ci95"] < 0.1 and m["test_5way_5shot_accuracy"] > m["test_5way_1shot_accuracy"]
        assert 0 <= m["test_novel_recall_at_1"] <= 1
    assert proto.recipe.model.embedding_dim == 64 and "test_recall_at_1" in proto.metrics
    # sweeps check their metric against the names a run records, known before training
    assert set(metric_names(r.patch(get("protonet").on))) >= {k for k in proto.metrics if k.startswith("test_")}
    assert get("protonet").off == get("siamese").off == {"model.embedding_dim": 0, "train.metric_loss": "none",
                                                         "train.pk_samples": 0}
