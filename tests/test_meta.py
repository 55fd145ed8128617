"""Meta-learning with torch.func: MAML's second-order meta-gradient against plain autograd, first-order MAML,
Reptile, the sinusoid task family, resuming after Ctrl-C, and the bundled study recipe in the ledger."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_train import InterruptAt, weights_equal
from torch import nn

from dltricks.data import load_data
from dltricks.errors import DltricksError
from dltricks.methods.meta import MetaLearner, meta_loss
from dltricks.recipe import Recipe
from dltricks.train.loop import TrainingInterrupted
from dltricks.train.run import metric_names, train
from dltricks.train.targets import make_targets_task
from dltricks.tricks.catalogue import get

SMALL = ["train.epochs=2", "train.meta_steps=5", "train.meta_batch=4", "data.train_tasks=20", "data.test_tasks=8",
         "model.hidden=[16, 16]"]


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))


def tasks(n=3, seed=0):
    spec = Recipe.load("sinusoid-maml").data
    b = load_data(spec, 0)
    return b.tasks.sample(n, torch.Generator().manual_seed(seed))


def test_sinusoid_tasks_follow_the_maml_paper():
    b = load_data(Recipe.load("sinusoid-maml", SMALL).data, 0)
    t = b.tasks.sample(200, torch.Generator().manual_seed(0))
    assert t.xs.shape == (200, 10, 1) and t.yq.shape == (200, 10, 1)
    assert 0.1 <= t.amplitude.min() and t.amplitude.max() <= 5 and 0 <= t.phase.min() and t.phase.max() <= math.pi
    assert torch.allclose(t.ys, t.amplitude[:, None, None] * torch.sin(t.xs - t.phase[:, None, None]))
    assert t.xs.abs().max() <= 5
    again = load_data(Recipe.load("sinusoid-maml", SMALL).data, 3)
    assert torch.equal(b.test_tasks.xq, again.test_tasks.xq)  # fixed test tasks, whatever the run's seed
    assert b.train[0].shape == (int(20 * 20 * 0.9), 1)  # the pooled points of all tasks, minus validation


def test_maml_meta_gradient_matches_autograd_through_the_inner_steps():
    model, batch = net(), tasks(3)
    params = dict(model.named_parameters())
    loss, _ = meta_loss(model, params, batch, "maml", steps=2, lr=0.1)
    got = torch.autograd.grad(loss, list(params.values()))

    # the same objective with a Python loop over tasks and create_graph=True
    total = 0.0
    for i in range(3):
        w = list(params.values())
        for _ in range(2):
            inner = F.mse_loss(torch.func.functional_call(model, dict(zip(params, w)), (batch.xs[i],)), batch.ys[i])
            g = torch.autograd.grad(inner, w, create_graph=True)
            w = [a - 0.1 * b for a, b in zip(w, g)]
        total = total + F.mse_loss(torch.func.functional_call(model, dict(zip(params, w)), (batch.xq[i],)),
                                   batch.yq[i])
    want = torch.autograd.grad(total / 3, list(params.values()))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want))

    fo, _ = meta_loss(model, params, batch, "fomaml", steps=2, lr=0.1)
    fo_grad = torch.autograd.grad(fo, list(params.values()))
    assert fo.item() == pytest.approx(loss.item(), rel=1e-5)  # same objective value, first-order gradient
    assert not all(torch.allclose(a, b, atol=1e-5) for a, b in zip(fo_grad, got))


def test_reptile_target_is_the_mean_of_the_adapted_weights():
    model, batch = net(), tasks(4)
    params = dict(model.named_parameters())
    _, mean_phi = meta_loss(model, params, batch, "reptile", steps=3, lr=0.05)
    x, y = torch.cat([batch.xs[1], batch.xq[1]]), torch.cat([batch.ys[1], batch.yq[1]])
    single = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    opt = torch.optim.SGD(single.values(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(torch.func.functional_call(model, single, (x,)), y).backward()
        opt.step()
    _, phis = meta_loss(model, params, type(batch)(*(t[1:2] for t in vars(batch).values())), "reptile", 3, 0.05)
    assert all(torch.allclose(phis[k], single[k], atol=1e-6) for k in single)
    assert not torch.allclose(mean_phi["0.weight"], phis["0.weight"])  # the mean over four tasks differs


def test_meta_learner_resumes_bit_identically_after_ctrl_c(tmp_path, shared_data_cache):
    r = Recipe.load("sinusoid-maml", SMALL + ["train.meta=maml", "train.epochs=3"])
    bundle = load_data(r.data, 0)
    task = make_targets_task(r, bundle)

    def run(at=0, resume=False, seed=0, d="a"):
        model = InterruptAt(net(seed), at)
        learner = MetaLearner(task, bundle, r.train, [1])
        h = learner.outer_loop()(model, epochs=3, seed=0, device="cpu", progress=False, checkpoint_dir=tmp_path / d,
                                 resume=resume, fingerprint="f")
        return model, h

    full, h_full = run()
    with pytest.raises(TrainingInterrupted):
        run(at=8, d="b")
    resumed, h = run(resume=True, seed=5, d="b")
    assert h.curves == h_full.curves and weights_equal(resumed, full)
    assert set(h.curves) >= {"train_loss", "val_pre_update_mse", "val_post_update_mse_1step"}


def test_study_recipe_runs_each_learner_into_the_ledger(home_ledger):
    r = Recipe.load("sinusoid-maml", SMALL)
    assert r.ablate.tricks == ["maml", "fomaml", "reptile"] and r.eval.metric == "test_post_update_mse_1step"
    for name in (None, "maml", "reptile"):
        res = train(r if name is None else r.patch(get(name).on), ledger=home_ledger, progress=False)
        m = home_ledger.get(res.run_id).metrics
        assert res.status == "completed" and (res.run_dir / "adaptation.png").stat().st_size > 1000
        for k in ("test_pre_update_mse", "test_post_update_mse_1step", "test_post_update_mse_10step"):
            assert 0 < m[k] < 50
        assert m["test_post_update_mse_10step"] < m["test_pre_update_mse"]  # adapting to a task helps
        assert set(metric_names(res.recipe)) >= {k for k in m if k.startswith("test_")}


def test_meta_needs_a_task_family(home_ledger):
    r = Recipe.load("mnist1d-cnn", ["train.meta=maml", "data.num_samples=600", "train.epochs=1"])
    with pytest.raises(DltricksError, match="needs a family of tasks to sample; use data.name = 'sinusoid'"):
        train(r, ledger=home_ledger, progress=False)
