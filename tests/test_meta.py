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
from dltricks.errors import DltricksError, RunFailed
from dltricks.loop.targets import make_targets_task
from dltricks.loop.training import TrainingInterrupted
from dltricks.methods.meta import MetaLearner, meta_loss
from dltricks.recipe import Recipe
from dltricks.runner.run import metric_names, train
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


@pytest.mark.parametrize("algo", ["maml", "reptile"])
def test_a_meta_loss_that_blows_up_fails_with_the_loops_diagnosis(algo, shared_data_cache):
    """The outer loop goes through the loop's own NaN check: one line, where, and what to lower."""
    r = Recipe.load("sinusoid-maml", SMALL + [f"train.meta={algo}", "train.inner_lr=1e30"])
    bundle = load_data(r.data, 0)
    learner = MetaLearner(make_targets_task(r, bundle), bundle, r.train, [1])
    with pytest.raises(RunFailed, match=r"^meta-loss (became NaN/Inf|diverged to .*) at epoch 1, step 1\b.*"
                                        r"try a lower train.inner_lr \(now 1e\+30\), or a lower train.lr") as e:
        learner.outer_loop()(net(), spec=r.train, device="cpu", progress=False)
    assert "\n" not in str(e.value)


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
    with pytest.raises(DltricksError, match="needs a family of tasks to sample: use data.name = .sinusoid., or hold"):
        train(r, ledger=home_ledger, progress=False)


# ---- few-shot classification episodes ---------------------------------------------------------------

EPISODIC = ["data.num_samples=1000", "model.hidden=[32]", "train.epochs=2", "train.meta_steps=4",
            "train.meta_batch=4", "eval.queries=5", "eval.episodes=40", "eval.adapt_steps=[1, 5]", "train.inner_lr=0.4"]


def conv_bn(seed=0, classes=5):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 40, classes))


def episodes(n=3, seed=0, k=1, q=3):
    from dltricks.data.episodes import Episodes

    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(60, 1, 40, generator=g), torch.arange(6).repeat(10)
    return Episodes(x, y, n_way=5, k_shot=k, queries=q).sample(n, g), (x, y)


def test_episodes_relabel_a_fresh_draw_of_classes_in_every_episode():
    batch, (x, y) = episodes(n=50, k=2, q=3)
    assert batch.xs.shape == (50, 10, 1, 40) and batch.xq.shape == (50, 15, 1, 40)
    assert torch.equal(batch.ys[0], torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4]))
    assert torch.equal(batch.yq[0], torch.arange(5).repeat_interleave(3))

    def source_class(xi):  # the original label of a sample, found by its values
        return int(y[(x == xi).flatten(1).all(1)][0])

    mapping = {tuple(source_class(batch.xs[e, 2 * c]) for c in range(5)) for e in range(50)}
    assert len(mapping) > 40  # label 0 means another class from episode to episode
    for e in range(5):
        sup = {batch.xs[e, i].sum().item() for i in range(10)}
        assert not sup & {batch.xq[e, i].sum().item() for i in range(15)}  # support and queries are disjoint
        for c in range(5):  # each episode label is one source class, in support and queries alike
            assert len({source_class(batch.xs[e, 2 * c + j]) for j in range(2)} |
                       {source_class(batch.xq[e, 3 * c + j]) for j in range(3)}) == 1


def test_maml_on_episodes_matches_autograd_with_cross_entropy_and_batch_statistics():
    from dltricks.methods.adaptation import batch_statistics

    model, (batch, _) = conv_bn(), episodes(n=3, k=2)
    running = model[1].running_mean.clone()
    params = dict(model.named_parameters())
    with batch_statistics(model):
        loss, _ = meta_loss(model, params, batch, "maml", steps=2, lr=0.3)
    got = torch.autograd.grad(loss, list(params.values()))

    def by_batch(w, x):  # the same network, normalised by the batch's own statistics
        p = dict(zip(params, w))
        h = F.conv1d(x, p["0.weight"], p["0.bias"], padding=1)
        h = F.batch_norm(h, None, None, p["1.weight"], p["1.bias"], training=True)
        return F.linear(F.relu(h).flatten(1), p["4.weight"], p["4.bias"])

    total = 0.0
    for i in range(3):
        w = list(params.values())
        for _ in range(2):
            g = torch.autograd.grad(F.cross_entropy(by_batch(w, batch.xs[i]), batch.ys[i]), w, create_graph=True)
            w = [a - 0.3 * b for a, b in zip(w, g)]
        total = total + F.cross_entropy(by_batch(w, batch.xq[i]), batch.yq[i])
    want = torch.autograd.grad(total / 3, list(params.values()))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, want))
    assert torch.equal(model[1].running_mean, running)  # batch statistics leave the running ones alone

    # first order: the mean of each task's query gradient at its adapted weights, the inner steps constant
    with batch_statistics(model):
        fo, _ = meta_loss(model, params, batch, "fomaml", steps=2, lr=0.3)
    got = torch.autograd.grad(fo, list(params.values()))
    want = [torch.zeros_like(p) for p in params.values()]
    for i in range(3):
        w = [p.detach().requires_grad_() for p in params.values()]
        for _ in range(2):
            g = torch.autograd.grad(F.cross_entropy(by_batch(w, batch.xs[i]), batch.ys[i]), w)
            w = [(a - 0.3 * b).detach().requires_grad_() for a, b in zip(w, g)]
        gq = torch.autograd.grad(F.cross_entropy(by_batch(w, batch.xq[i]), batch.yq[i]), w)
        want = [a + b / 3 for a, b in zip(want, gq)]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, want))


def test_adapting_scores_each_episode_after_each_number_of_steps():
    from dltricks.methods.adaptation import post_update_scores

    model, (batch, _) = conv_bn(), episodes(n=7, k=3, q=4)
    scores = post_update_scores(model, batch, [1, 3], lr=0.5, chunk=3)  # chunks of 3, 3 and 1 episodes
    assert set(scores) == {0, 1, 3} and all(v.shape == (7,) for v in scores.values())
    for e in (0, 6):  # the same as adapting that one episode alone
        alone = post_update_scores(model, type(batch)(*(t[e:e + 1] for t in vars(batch).values())), [3], 0.5)
        assert alone[3].item() == pytest.approx(scores[3][e].item())
    assert all(((v * 20).round() == v * 20).all() for v in scores.values())  # accuracies of 20 queries
    assert model.training and "forward" not in vars(model[1])  # its own forward back


@pytest.mark.parametrize("algo", ["maml", "reptile"])
def test_meta_learner_on_episodes_of_the_base_classes_into_the_ledger(home_ledger, algo):
    r = Recipe.load("mnist1d-meta", EPISODIC).patch(get(algo).on)
    res = train(r, ledger=home_ledger, progress=False)
    m = home_ledger.get(res.run_id).metrics
    assert res.status == "completed" and res.history.epochs == 2
    assert (res.run_dir / "adaptation.png").stat().st_size > 1000  # accuracy against adaptation steps
    assert set(metric_names(res.recipe)) >= {k for k in m if k.startswith("test_")}
    assert "test_accuracy" not in m  # the head's classes change with every episode
    for k in (1, 5):
        acc = m[f"test_5way_{k}shot_accuracy"]
        assert acc == pytest.approx(m[f"test_5way_{k}shot_accuracy_{r.train.inner_steps}step"])
        assert 0.2 < acc < 1 and m[f"test_5way_{k}shot_ci95"] > 0
    # adapted to five shots, better than chance (one in five) by more than the interval
    assert m["test_5way_5shot_accuracy"] - m["test_5way_5shot_ci95"] > 0.2
    assert {"val_pre_update_accuracy", "val_post_update_accuracy_1step"} <= set(res.history.curves)
    assert res.history.curves["val_pre_update_accuracy"][-1] == pytest.approx(0.2, abs=0.08)  # chance before


def test_meta_learner_on_episodes_resumes_bit_identically_after_ctrl_c(tmp_path, home_ledger):
    r = Recipe.load("mnist1d-meta", EPISODIC + ["train.meta=fomaml", "train.epochs=3"])
    from dltricks.runner.run import build

    bundle, _, task = build(r)

    def run(at=0, resume=False, d="a"):
        model = InterruptAt(conv_bn(), at)
        learner = MetaLearner(task, bundle, r.train, [1], r.eval, seed=0)
        h = learner.outer_loop()(model, epochs=3, seed=0, device="cpu", progress=False, checkpoint_dir=tmp_path / d,
                                 resume=resume, fingerprint="f")
        return model, h

    full, h_full = run()
    with pytest.raises(TrainingInterrupted, match="in epoch 2 of 3"):
        run(at=11, d="b")
    resumed, h = run(resume=True, d="b")
    assert h.curves == h_full.curves and weights_equal(resumed, full)


def test_meta_episodes_need_enough_base_classes(home_ledger):
    r = Recipe.load("mnist1d-meta", EPISODIC + ["train.meta=maml", "data.novel_classes=[4, 5, 6, 7, 8, 9]"])
    with pytest.raises(DltricksError, match=r"eval.n_way = 5 but the training \(base\) classes holds only 4"):
        train(r, ledger=home_ledger, progress=False)


def test_the_ablation_report_shows_each_variants_adaptation_figure(home_ledger):
    from dltricks.search.ablate import ablate

    result = ablate(Recipe.load("sinusoid-maml", SMALL + ["train.epochs=1"]), ["maml"], mode="add", seeds=3,
                    workers=1, study="meta", ledger=home_ledger, progress=False)
    html = result.report["html"].read_text()
    for variant in ("baseline", "+maml"):
        copied = result.report[f"{variant}: adaptation.png"]
        assert copied.parent == result.report["html"].parent and copied.stat().st_size > 1000
        assert f'src="{copied.name}"' in html and f'alt="{variant}: adaptation.png"' in html
