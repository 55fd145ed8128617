"""Domain adaptation: the [data.target] domain (generator keys, corruptions in 1D/2D/3D), DANN's schedule
and gradient reversal, CORAL, Ctrl-C + resume with the target stream, target labels provably unused
in training, oracle figures named as such, and the one-line errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from test_train import RESUME_KW, InterruptAt, blobs, mlp, weights_equal

from dltricks.data import load_data
from dltricks.data.domains import corrupt
from dltricks.errors import DltricksError
from dltricks.loop.tasks import Classification
from dltricks.loop.training import TrainingInterrupted, fit
from dltricks.methods.domain import CORAL, DANN, GradReverse, SelfTraining, coral_loss, dann_lambda
from dltricks.recipe import DomainSpec, Recipe

SMALL_DA = ["data.num_samples=300", "model.channels=[4, 8]", "train.epochs=2", "train.batch_size=32",
            "train.mu=1", "data.target.shear_scale=1.5", "data.target.corr_noise_scale=0.5"]


def test_dann_schedule_reversal_and_coral():
    assert dann_lambda(0.0) == 0.0 and 0.99 < dann_lambda(1.0) < 1.0 and dann_lambda(0.3) < dann_lambda(0.6)
    x = torch.randn(4, 3, requires_grad=True)
    GradReverse.apply(x, 0.5).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, -0.5))
    g = torch.Generator().manual_seed(0)
    fs = torch.randn(50, 4, generator=g)
    assert coral_loss(fs, fs).abs() < 1e-9
    ft = fs * torch.tensor([1.0, 3.0, 1.0, 1.0])  # one feature's variance x9: (9-1)^2 var^2 / (4 * 16)
    expect = (torch.cov(ft.T) - torch.cov(fs.T)).pow(2).sum() / 64
    assert torch.allclose(coral_loss(fs, ft), expect) and coral_loss(fs, ft) > 0.05


@pytest.mark.parametrize("shape", [(3, 1, 32), (3, 2, 16, 16), (2, 1, 8, 8, 8)])
def test_corruptions_in_1d_2d_3d(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=g)
    inv = corrupt(x, DomainSpec(invert=True), g)
    assert torch.allclose(inv.flatten(1).amax(1), x.flatten(1).amax(1))  # min and max swap places
    assert torch.allclose(inv + x, (x.flatten(1).amax(1) + x.flatten(1).amin(1)).view(-1, *[1] * (x.dim() - 1)))
    blur = corrupt(x, DomainSpec(blur=1.0), g)
    assert blur.shape == x.shape and blur.std() < x.std() * 0.8  # smoother
    noisy = corrupt(x, DomainSpec(noise=0.5), g)
    assert 0.4 < (noisy - x).std() < 0.6
    if len(shape) > 3:  # a quarter turn in the last two axes, away from the zero-filled corners
        img = torch.zeros(shape)
        img[..., 2, 4] = 1.0
        rot = corrupt(img, DomainSpec(rotate=90.0), g)
        assert torch.allclose(rot, torch.rot90(img, 1, (-2, -1)), atol=1e-4)
    else:
        with pytest.raises(DltricksError, match="rotate needs 2D or 3D data"):
            corrupt(x, DomainSpec(rotate=10.0), g)


def test_target_domain_loads_with_labels_hidden(shared_data_cache, monkeypatch):
    monkeypatch.setenv("DLTRICKS_CACHE", str(shared_data_cache))
    r = Recipe.load("mnist1d-cnn", SMALL_DA)
    b = load_data(r.data, 0)
    assert b.target_unlabelled.shape[1:] == b.in_shape and b.target_test[0].shape[1:] == b.in_shape
    assert b.target_val is not None and b.target_unlabelled.dtype == torch.float32
    # fresh samples (data_seed + 1), shifted: not the source inputs
    assert not torch.allclose(b.target_test[0], b.test[0])
    digits = load_data(Recipe.load("digits-cnn", ["data.target.rotate=20", "data.target.invert=true"]).data, 0)
    shifted = digits.target_test[0]
    assert shifted.shape == digits.test[0].shape and not torch.equal(shifted, digits.test[0])
    assert "target" not in Recipe.load("mnist1d-cnn").to_dict()["data"]  # no target: recipes read as before


def fake_bundle(x, y, xt, val_t, test_t):
    return SimpleNamespace(train=(x, y), target_unlabelled=xt, target_val=val_t, target_test=test_t)


@pytest.mark.parametrize("kind", ["dann", "coral", "self_training"])
def test_ctrl_c_and_resume_is_bit_identical_with_the_target_stream(tmp_path, kind):
    x, y = blobs(96)
    xt, yt = blobs(90, seed=3, scale=1.5)  # a shifted domain
    bundle = fake_bundle(x, y, xt[:60], (xt[60:75], yt[60:75]), (xt[75:], yt[75:]))
    val = blobs(30, seed=1)

    def run(at=0, resume=False, seed=0, d="a"):
        model = InterruptAt(mlp(dropout=0.2, norm=True, seed=seed), at)
        cls = {"dann": DANN, "coral": CORAL, "self_training": SelfTraining}[kind]
        kw = dict(threshold=0.5, rampup=0.5) if kind == "self_training" else {}
        method = cls(Classification(), model, bundle, batch_size=16, seed=0, eval_batch=64, **kw)
        h = fit(model, (x, y), val, method=method, checkpoint_dir=tmp_path / d, resume=resume, **RESUME_KW)
        return model, method, h

    full, m_full, h_full = run()
    assert len(h_full["oracle_val_target_accuracy"]) == 4 and len(h_full["oracle_test_target_accuracy"]) == 4
    with pytest.raises(TrainingInterrupted):
        run(at=11, d="b")
    resumed, m, h = run(resume=True, seed=5, d="b")
    assert h.curves == h_full.curves and weights_equal(resumed, full)
    assert m.stream.pos == m_full.stream.pos and m.best == m_full.best
    if kind == "dann":
        assert weights_equal(m.discriminator, m_full.discriminator)
        assert 0.0 <= h_full["domain_accuracy"][-1] <= 1.0


def test_target_labels_are_never_read_and_metrics_are_named(home_ledger, monkeypatch):
    """Corrupt every label of the target's training split (what adaptation sees): training is identical;
    only the target's own validation and test labels reach the (oracle and test_target) figures."""
    from dltricks.data import registry
    from dltricks.runner.run import train

    recipe = Recipe.load("mnist1d-cnn", SMALL_DA + ["train.domain_adaptation=self_training",
                                                    "train.confidence_threshold=0.0"])
    clean = train(recipe, ledger=home_ledger, progress=False)
    original = registry._LOADERS["mnist1d"]

    def load(spec, seed):
        b = original(spec, seed)
        if spec.data_seed == 43:  # the target's generation
            x, y = b.train
            n = len(y)
            val = torch.randperm(n, generator=torch.Generator().manual_seed(10_007 + seed))[: round(n * 0.1)]
            bad = (y + 1) % 10
            bad[val] = y[val]  # keep the target's validation labels: they feed only the oracle curve
            b.train = (x, bad)
        return b

    monkeypatch.setitem(registry._LOADERS, "mnist1d", load)
    dirty = train(recipe, ledger=home_ledger, progress=False)
    assert dirty.history.curves == clean.history.curves and dirty.metrics["test_target_accuracy"] == \
        clean.metrics["test_target_accuracy"]
    m = clean.metrics
    assert {"test_target_accuracy", "test_target_loss", "oracle_val_target_accuracy",
            "oracle_test_target_accuracy"} <= set(m)
    assert m["test_loss"] != m["test_target_loss"]  # scored on the target domain, not the source


def test_one_line_errors(home_ledger):
    from dltricks.runner.run import train

    with pytest.raises(DltricksError, match=r"dataset 'shapes' cannot shift.*target domains work on.*digits"):
        Recipe.load("seg2d-unet", ["data.target.noise=0.1"])
    with pytest.raises(DltricksError, match=r"data.target.shear is not a key .* \(did you mean shear_scale"):
        Recipe.load("mnist1d-cnn", ["data.target.shear=1.0"])
    with pytest.raises(DltricksError, match=r"data.target.split_seed is not a key a target domain of 'digits'"):
        Recipe.load("digits-cnn", ["data.target.split_seed=3"])
    with pytest.raises(DltricksError, match=r"data.target.blur = 20: input should be less than or equal to 10"):
        Recipe.load("digits-cnn", ["data.target.blur=20"])
    with pytest.raises(DltricksError, match=r"domain_adaptation = 'dann' needs a target domain: add a \[data.target\]"):
        train(Recipe.load("mnist1d-cnn", ["train.domain_adaptation=dann", "data.num_samples=100"]),
              ledger=home_ledger, progress=False)
