"""Semi-supervised learning: ramp-up, pseudo-label masks, weak/strong views in 1D/2D/3D, Ctrl-C + resume
with the unlabelled stream, the unlabelled labels provably unused, and the one-line errors."""

from __future__ import annotations

import math

import pytest
import torch
from test_train import RESUME_KW, InterruptAt, blobs, weights_equal
from torch import nn

from dltricks.errors import DltricksError
from dltricks.loop.tasks import Classification
from dltricks.loop.training import TrainingInterrupted, fit
from dltricks.methods.ssl import (
    FixMatch,
    MeanTeacher,
    PiModel,
    PseudoLabel,
    _cutout,
    pseudo_label_loss,
    sigmoid_rampup,
    views,
)
from dltricks.recipe import Recipe

SMALL_SSL = ["data.num_samples=400", "data.labels_per_class=4", "data.val_fraction=0.0", "model.channels=[4, 8]",
             "train.epochs=2", "train.batch_size=8", "train.mu=2", "train.semi_supervised=pseudo_label",
             "train.confidence_threshold=0.0", "train.rampup=0.0"]


def test_rampup_and_pseudo_label_mask():
    assert sigmoid_rampup(0.0, 0.5) == pytest.approx(math.exp(-5)) and sigmoid_rampup(0.5, 0.5) == 1.0
    assert sigmoid_rampup(0.9, 0.5) == 1.0 and sigmoid_rampup(0.0, 0.0) == 1.0
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.1, 0.0, 0.0]], requires_grad=True)
    loss, mask = pseudo_label_loss(logits, 0.9)
    assert mask.tolist() == [1.0, 0.0]  # only the confident row counts, averaged over both rows
    ref = torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0])) / 2
    assert torch.allclose(loss, ref)
    loss.backward()
    assert logits.grad[1].abs().sum() == 0
    # FixMatch: the guess (weak view) labels another tensor (strong view)
    strong = torch.zeros(2, 3, requires_grad=True)
    loss, mask = pseudo_label_loss(strong, 0.5, guess=torch.tensor([[0.0, 9.0, 0.0], [0.0, 0.0, 0.0]]))
    assert mask.tolist() == [1.0, 0.0] and torch.allclose(loss, torch.tensor(math.log(3) / 2))


@pytest.mark.parametrize("shape", [(6, 2, 32), (3, 1, 16, 12), (2, 1, 8, 8, 8), (5, 7)])
def test_weak_and_strong_views_keep_shapes_and_differ(shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    weak, strong = views(tuple(shape[1:]))
    w, s = weak(x), strong(x)
    assert w.shape == s.shape == x.shape and not torch.equal(w, x) and not torch.equal(s, w)
    if len(shape) > 2:  # cut-out zeroes one window of a quarter of each side, in every channel alike
        cut = _cutout(torch.ones(shape), 0.25)
        zero = (cut == 0).flatten(2).sum(-1)
        expect = math.prod(max(1, round(n * 0.25)) for n in shape[2:])
        assert (zero == expect).all()


def conv1d(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.2),
                         nn.Flatten(), nn.Linear(32, 3))


@pytest.mark.parametrize("kind", ["fixmatch", "mean_teacher", "pi_model"])
def test_ctrl_c_and_resume_is_bit_identical_with_the_unlabelled_stream(tmp_path, kind):
    x, y = blobs(96)
    x = x[:, None, :]  # (N, 1, 8) signals, so the views are data.augment ops
    u = blobs(60, seed=3)[0][:, None, :]
    val = (blobs(30, seed=1)[0][:, None, :], blobs(30, seed=1)[1])

    def run(at=0, resume=False, seed=0, d="a"):
        model = InterruptAt(conv1d(seed), at)
        if kind == "fixmatch":
            method = FixMatch(Classification(), u, batch_size=32, seed=0, threshold=0.5)
        elif kind == "pi_model":
            method = PiModel(Classification(), u, batch_size=32, seed=0, rampup=0.5)
        else:
            method = MeanTeacher(Classification(), model, u, batch_size=32, seed=0, ema_decay=0.9, rampup=0.5)
        h = fit(model, (x, y), val, method=method, checkpoint_dir=tmp_path / d, resume=resume, **RESUME_KW)
        return model, method, h

    full, m_full, h_full = run()
    assert m_full.stream.pos > 0 and ("confident_fraction" in h_full.curves) == (kind == "fixmatch")
    with pytest.raises(TrainingInterrupted):
        run(at=9, d="b")
    resumed, m, h = run(resume=True, seed=5, d="b")
    assert h.curves == h_full.curves and weights_equal(resumed, full)
    assert m.stream.pos == m_full.stream.pos and torch.equal(m.stream.perm, m_full.stream.perm)
    if kind == "mean_teacher":
        assert weights_equal(m.teacher, m_full.teacher) and m.steps == m_full.steps == 4 * 6
        # training ends with the model holding the EMA teacher's weights, not the last student's
        assert weights_equal(m.teacher, full)


def _corrupting_loader(original, seed, per_class):
    """The MNIST-1D loader, with the labels of every training sample that data.labels_per_class leaves
    unlabelled (all after the point where its seeded walk has filled every class) replaced by wrong ones."""
    def load(spec, s):
        b = original(spec, s)
        x, y = b.train
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(20_011 + seed)).tolist()
        taken, stop = [0] * 10, 0
        while min(taken) < per_class:
            taken[int(y[order[stop]])] += 1
            stop += 1
        late = torch.tensor(order[stop:])
        y = y.clone()
        y[late] = (y[late] + 1 + torch.randint(0, 9, (len(late),), generator=torch.Generator().manual_seed(7))) % 10
        b.train = (x, y)
        load.corrupted = len(late)
        return b
    return load


def test_the_labels_of_unlabelled_data_are_never_read(home_ledger, monkeypatch):
    from dltricks.data import registry
    from dltricks.runner.run import build, train

    recipe = Recipe.load("mnist1d-cnn", SMALL_SSL)
    clean = train(recipe, ledger=home_ledger, progress=False)
    bundle_clean = build(recipe)[0]
    load = _corrupting_loader(registry._LOADERS["mnist1d"], 0, 4)
    monkeypatch.setitem(registry._LOADERS, "mnist1d", load)
    bundle = build(recipe)[0]
    assert load.corrupted > 0.8 * len(bundle.unlabelled)  # most unlabelled samples carry a wrong label
    assert torch.equal(bundle.train[1], bundle_clean.train[1])
    assert torch.equal(bundle.unlabelled, bundle_clean.unlabelled)
    dirty = train(recipe, ledger=home_ledger, progress=False)
    assert dirty.history.curves == clean.history.curves
    assert clean.history["confident_fraction"][-1] > 0  # pseudo-labels were used
    from safetensors.torch import load_file

    a, b = load_file(clean.run_dir / "model.safetensors"), load_file(dirty.run_dir / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_one_line_errors(home_ledger):
    from dltricks.runner.run import train

    with pytest.raises(DltricksError, match=r"needs unlabelled data; set data.labels_per_class = N"):
        train(Recipe.load("mnist1d-cnn", ["train.semi_supervised=fixmatch", "data.num_samples=100"]),
              ledger=home_ledger, progress=False)
    with pytest.raises(DltricksError, match=r"train.confidence_threshold = 1.5: input should be less than 1"):
        Recipe.load("mnist1d-cnn", ["train.confidence_threshold=1.5"])
    with pytest.raises(DltricksError, match=r"train.confidence_threshold = -0.1: input should be greater"):
        Recipe.load("mnist1d-cnn", ["train.confidence_threshold=-0.1"])
    with pytest.raises(DltricksError, match="cannot be combined"):
        train(Recipe.load("mnist1d-cnn", SMALL_SSL + ["train.domain_adaptation=dann", "data.target.noise=0.1"]),
              ledger=home_ledger, progress=False)
    assert isinstance(PseudoLabel(Classification(), torch.zeros(3, 1, 8), 2, 0).stream.next(), torch.Tensor)
