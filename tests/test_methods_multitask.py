"""Regression and multi-task learning: per-task metrics in original units, target normalisation, uncertainty
weighting and PCGrad (with their state in the checkpoint), the bundled recipe and the advisor's patch."""

from __future__ import annotations

import pytest
import torch
from test_train import RESUME_KW, InterruptAt, weights_equal
from torch import nn

from dltricks.data import Target
from dltricks.loop.targets import Targets, target_stats
from dltricks.loop.training import TrainingInterrupted, fit
from dltricks.methods.multitask import MultiTask, _pcgrad_surrogate
from dltricks.recipe import Recipe
from dltricks.runner.run import train

TARGETS = [Target("kind", "classification", 3), Target("size", "regression")]


def toy(n=120, seed=0):
    """x (N, 4); a class from the first feature's sign pattern and a size on a scale of thousands."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    kind = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    size = 1000 * x[:, 2] + 5000
    return x, torch.stack([kind.float(), size], 1)


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 4))  # 3 logits + 1 regression output


def test_metrics_per_task_in_original_units_with_normalised_targets():
    x, y = toy()
    mean, std = target_stats(y, TARGETS)
    assert mean[0] == 0 and std[0] == 1 and abs(mean[1] - y[:, 1].mean()) < 1e-3
    task, raw = Targets(TARGETS, "mse", [], mean, std), Targets(TARGETS, "mse")
    logits = torch.nn.functional.one_hot(y[:, 0].long(), 3).float() * 20
    exact = torch.cat([logits, ((y[:, 1] - mean[1]) / std[1])[:, None]], 1)  # standardised, exact
    meter = task.meter()
    meter.update(exact, y, task.loss(exact, y))
    m = meter.compute()
    assert set(m) == {"loss", "kind_accuracy", "size_mae", "size_rmse", "size_r2"}
    assert m["kind_accuracy"] == 1.0 and m["size_mae"] < 0.05 and abs(m["size_r2"] - 1) < 1e-6
    # predicting the mean: r2 = 0 and rmse = the size's spread, in its own units (about 1000)
    const = torch.cat([logits, torch.zeros(len(y), 1)], 1)
    meter = task.meter()
    meter.update(const, y, task.loss(const, y))
    m = meter.compute()
    assert abs(m["size_r2"]) < 1e-4 and abs(m["size_rmse"] - y[:, 1].std(correction=0)) < 0.5
    # the loss sees standardised targets (MSE ~1), the raw task the size's square scale (~1e6 and more)
    assert 0.9 < task.task_losses(const, y)[1] < 1.1 and raw.task_losses(const, y)[1] > 1e6


def test_pcgrad_projects_conflicting_gradients():
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 1.0]]))
    out = lin(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    t1 = out[0, 0] * 1.0 + out[1, 0] * 0.0        # gradient (1, 0)
    t2 = -out[0, 0] * 1.0 + out[1, 0] * 1.0       # gradient (-1, 1): conflicts with t1 (dot = -1)
    loss = _pcgrad_surrogate(lin, [t1, t2], t1 + t2)
    assert torch.allclose(loss, (t1 + t2).detach())
    loss.backward()
    # g1' = g1 - (g1.g2 / |g2|^2) g2 = (0.5, 0.5); g2' = g2 - (g2.g1 / |g1|^2) g1 = (0, 1)
    assert torch.allclose(lin.weight.grad, torch.tensor([[0.5, 1.5]]))


@pytest.mark.parametrize("weighting, pcgrad", [("uncertainty", False), ("uncertainty", True)])
def test_uncertainty_weights_learn_and_resume_bit_identically(tmp_path, weighting, pcgrad):
    x, y = toy()
    val = toy(40, seed=1)
    mean, std = target_stats(y, TARGETS)
    recipe = Recipe.from_dict({"data": {"name": "mnist1d"}, "model": {"name": "mlp"},
                               "train": {"task_weighting": weighting, "pcgrad": pcgrad}})

    def run(at=0, resume=False, seed=0, d="a"):
        model = InterruptAt(net(seed), at)
        task = Targets(TARGETS, "huber", [1.0, 0.5], mean, std)
        method = MultiTask(task, model, recipe)
        h = fit(model, (x, y), val, task=task, method=method, checkpoint_dir=tmp_path / d, resume=resume,
                **RESUME_KW)
        return model, method, h

    full, m_full, h_full = run()
    assert {"weight_kind", "weight_size", "val_kind_accuracy", "val_size_r2"} <= set(h_full.curves)
    assert not torch.equal(m_full.log_vars.s.detach(), torch.zeros(2))  # the log-variances trained
    with pytest.raises(TrainingInterrupted):
        run(at=11, d="b")
    resumed, m, h = run(resume=True, seed=5, d="b")
    assert h.curves == h_full.curves and weights_equal(resumed, full)
    assert torch.equal(m.log_vars.s, m_full.log_vars.s)


def test_bundled_multitask_recipe_trains_with_per_task_metrics_and_the_advisor_patch(home_ledger):
    from dltricks.analysis.advisor import advise, apply_advice

    r = Recipe.load("mnist1d-multitask", ["data.num_samples=400", "train.epochs=1", "model.channels=[4, 8]"])
    (a,) = [a for a in advise(r) if a.rule == "target_scales"]
    assert a.patch == {"train.normalize_targets": True} and "energy" in a.evidence and "digit" not in a.evidence
    fixed = apply_advice(r, [a])
    assert fixed.train.normalize_targets and not [a for a in advise(fixed) if a.rule == "target_scales"]
    res = train(fixed, ledger=home_ledger, progress=False)
    for k in ("test_digit_accuracy", "test_peak_mae", "test_peak_rmse", "test_peak_r2", "test_energy_mae",
              "test_energy_r2", "val_energy_rmse"):
        assert k in res.metrics
    # errors: pcgrad on a single-target dataset; task_weights of the wrong length
    from dltricks.errors import DltricksError

    with pytest.raises(DltricksError, match="need a dataset with several targets"):
        train(Recipe.load("mnist1d-cnn", ["data.num_samples=400", "train.pcgrad=true"]), ledger=home_ledger,
              progress=False)
    with pytest.raises(DltricksError, match="train.task_weights has 2 values but the data has 3 targets"):
        train(fixed.patch({"train.task_weights": [1.0, 2.0]}), ledger=home_ledger, progress=False)
