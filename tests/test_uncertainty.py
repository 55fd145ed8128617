"""Uncertainty and calibration: the metrics against hand-computed values, temperature scaling on an
overconfident predictor, last-layer Laplace against the exact posterior, and end to end through recipes:
temperature scaling keeps accuracy, MC dropout, an ensemble and a GP head widen intervals in the gap of
the 1D toy, `dltricks ensemble` records a run, and the one-line errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dltricks.errors import DltricksError
from dltricks.loop import calibration as cal
from dltricks.recipe import Recipe
from dltricks.runner.run import train

TINY = ["data.num_samples=400", "train.epochs=2", "train.batch_size=32", "model.hidden=[32]", "model.dropout=0.0"]


def tiny(*extra: str) -> Recipe:
    return Recipe.load("mnist1d-mlp", TINY + list(extra))


# ---- metrics ----------------------------------------------------------------------------------------

def test_nll_brier_ece_and_auroc_match_hand_computed_values():
    p = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]])
    y = torch.tensor([0, 0, 1, 1])
    assert cal.nll(p, y) == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.3) + math.log(0.8)) / 4)
    assert cal.brier(p, y) == pytest.approx((2 * 0.1 ** 2 + 2 * 0.6 ** 2 + 2 * 0.7 ** 2 + 2 * 0.2 ** 2) / 4)
    m = cal.classification_metrics(p, y, bins=10)
    assert m["accuracy"] == 0.5
    # equal-width: 0.9 and 0.8 land in their own bins (both right), 0.6 and 0.7 (both wrong)
    assert m["ece"] == pytest.approx((0.1 + 0.2 + 0.6 + 0.7) / 4)
    # adaptive with 2 bins: {0.6, 0.7} (acc 0) and {0.8, 0.9} (acc 1)
    conf, pred = p.max(1)
    assert cal.ece_adaptive(conf, pred == y, bins=2) == pytest.approx(0.5 * 0.65 + 0.5 * 0.15)
    assert cal.ood_auroc(torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.4])) == 1.0
    assert cal.ood_auroc(torch.ones(3), torch.ones(3)) == 0.5
    rel = cal.reliability(conf, pred == y, bins=10)
    assert sum(rel["count"]) == 4 and rel["accuracy"][8] == 1.0 and rel["accuracy"][6] == 0.0


def test_gaussian_intervals_cover_their_nominal_share():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(20000, generator=g) * 2.0 + 1.0
    m = cal.interval_metrics(torch.full_like(y, 1.0), torch.full_like(y, 4.0), y)
    for level in (50, 90, 95):
        assert m[f"coverage_{level}"] == pytest.approx(level / 100, abs=0.01)
    assert m["width_95"] == pytest.approx(2 * 1.959964 * 2.0, rel=1e-4)
    assert m["nll"] == pytest.approx(0.5 * math.log(2 * math.pi * 4.0) + 0.5, abs=0.02)
    # overconfident intervals cover less and score a worse NLL
    tight = cal.interval_metrics(torch.full_like(y, 1.0), torch.full_like(y, 0.25), y)
    assert tight["coverage_90"] < 0.5 and tight["nll"] > m["nll"]


def test_temperature_fitted_on_overconfident_logits_recovers_the_temperature_and_keeps_argmax():
    from dltricks.methods.uncertainty.temperature import _tempered, fit_temperature

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4000, 5, generator=g) * 1.5
    y = torch.distributions.Categorical(logits=logits).sample()  # calibrated at T = 1 by construction
    over = (logits * 3).softmax(1)  # three times too sharp
    t = fit_temperature(over, y)
    assert t == pytest.approx(3.0, rel=0.15)
    fixed = _tempered(over, t)
    assert torch.equal(fixed.argmax(1), over.argmax(1))
    before, after = cal.classification_metrics(over, y), cal.classification_metrics(fixed, y)
    assert after["ece"] < before["ece"] / 2 and after["nll"] < before["nll"]


def test_kron_laplace_equals_the_exact_last_layer_posterior_for_one_output():
    from dltricks.methods.uncertainty.laplace import LastLayerLaplace

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    x = torch.randn(50, 3)
    la = LastLayerLaplace(model, x, "kron", regression=True, device=torch.device("cpu"), noise_var=0.5)
    la.tau = 2.0
    with torch.no_grad():
        phi = torch.cat([torch.tanh(model[0](x)), torch.ones(50, 1)], 1).double()
    sigma = torch.linalg.inv(phi.T @ phi / 0.5 + 2.0 * torch.eye(5, dtype=torch.float64))
    xt = torch.randn(7, 3) * 3
    mean, var = la(xt)
    with torch.no_grad():
        pt = torch.cat([torch.tanh(model[0](xt)), torch.ones(7, 1)], 1).double()
        assert torch.allclose(mean, model(xt)[:, 0].double(), atol=1e-6)
    assert torch.allclose(var, ((pt @ sigma) * pt).sum(1), rtol=1e-6)
    la_d = LastLayerLaplace(model, x, "diag", regression=True, device=torch.device("cpu"), noise_var=0.5)
    la_d.tau = 2.0
    diag = 1 / (phi.pow(2).sum(0) / 0.5 + 2.0)
    assert torch.allclose(la_d(xt)[1], pt.pow(2) @ diag, rtol=1e-6)


def test_classification_laplace_is_less_confident_far_from_the_data():
    from test_train import blobs, mlp

    from dltricks.loop.training import fit
    from dltricks.methods.uncertainty.laplace import LastLayerLaplace

    x, y = blobs(n=240, classes=3, dim=8)
    model = mlp(dim=8, classes=3, hidden=16)
    fit(model, (x, y), epochs=5, batch_size=32, lr=1e-2, progress=False, device="cpu")
    far = torch.randn(50, 8, generator=torch.Generator().manual_seed(3)) * 20
    for structure in ("diag", "kron"):
        la = LastLayerLaplace(model, x, structure, regression=False, device=torch.device("cpu"))
        la.tau = 1e-2
        p_map = model(far).softmax(1)
        p_la = la(far)
        assert torch.allclose(p_la.sum(1), torch.ones(50, dtype=p_la.dtype))
        assert (p_la.max(1).values <= p_map.max(1).values.double() + 1e-9).all()
        assert p_la.max(1).values.mean() < p_map.max(1).values.double().mean() - 0.01


# ---- end to end through recipes ---------------------------------------------------------------------

def test_temperature_scaling_run_keeps_accuracy_changes_ece_and_writes_a_reliability_diagram(home_ledger):
    plain = train(tiny("eval.ood='noise'"), ledger=home_ledger, progress=False)
    ts = train(tiny("eval.ood='noise'", "eval.temperature_scaling=true", "eval.plots=true"), ledger=home_ledger,
               progress=False)
    m, mp = ts.metrics, plain.metrics
    assert m["test_accuracy"] == mp["test_accuracy"]
    assert m["test_ece_unscaled"] == pytest.approx(mp["test_ece"])
    assert m["temperature"] != pytest.approx(1.0, abs=1e-3) and m["test_ece"] != m["test_ece_unscaled"]
    for k in ("test_nll", "test_brier", "test_ece_adaptive", "test_ood_auroc"):
        assert k in mp and math.isfinite(mp[k])
    assert 0.0 <= mp["test_ood_auroc"] <= 1.0
    assert (ts.run_dir / "reliability.png").stat().st_size > 1000
    assert home_ledger.get(ts.run_id).metrics["temperature"] == m["temperature"]


def test_mc_dropout_and_ensemble_runs_and_dltricks_ensemble(home_ledger, capsys):
    from dltricks.cli import main

    mc = train(tiny("model.dropout=0.3", "eval.mc_samples=4"), ledger=home_ledger, progress=False)
    det = train(tiny("model.dropout=0.3"), ledger=home_ledger, progress=False)
    assert mc.metrics["test_nll"] != det.metrics["test_nll"]  # the stochastic passes are averaged
    other = train(tiny("model.dropout=0.3", "seed=1"), ledger=home_ledger, progress=False)
    assert main(["ensemble", det.run_id, other.run_id, "-q"]) == 0
    ens = home_ledger.runs(name="ensemble-mnist1d-mlp")[0]
    assert ens.status == "completed" and ens.recipe["eval"]["ensemble_runs"] == [det.run_id, other.run_id]
    assert ens.metrics["members"] == 2 and ens.metrics["test_nll"] not in (det.metrics["test_nll"],
                                                                            other.metrics["test_nll"])
    # one line, exit 2: runs of other classes; a single run; mc_samples on a model without dropout
    few = train(tiny("data.classes=[0, 1, 2]"), ledger=home_ledger, progress=False)
    capsys.readouterr()
    assert main(["ensemble", det.run_id, few.run_id]) == 2
    msg = capsys.readouterr().err
    assert "different tasks (10 vs 3 classes)" in msg and len(msg.strip().splitlines()) == 1
    assert main(["ensemble", det.run_id]) == 2
    with pytest.raises(DltricksError, match="needs a model with dropout"):
        train(tiny("eval.mc_samples=4"), ledger=home_ledger, progress=False)


def test_one_line_errors_come_before_training(home_ledger):
    with pytest.raises(DltricksError, match="validation split.*data.val_fraction"):
        train(tiny("eval.temperature_scaling=true", "data.val_fraction=0"), ledger=home_ledger, progress=False)
    with pytest.raises(DltricksError, match="use one of them"):
        train(tiny("model.dropout=0.2", "eval.mc_samples=4", "eval.laplace='kron'"), ledger=home_ledger,
              progress=False)
    with pytest.raises(DltricksError, match="calibrates class probabilities"):
        train(Recipe.load("cubic1d-mlp", ["eval.temperature_scaling=true"]), ledger=home_ledger, progress=False)
    with pytest.raises(DltricksError, match=r"eval.ood = 'target' .* no \[data.target\]; add one"):
        train(tiny("eval.ood='target'"), ledger=home_ledger, progress=False)
    assert home_ledger.runs() == []  # refused before the first epoch: no run recorded (issue 20.5)


def test_a_shifted_target_domain_is_told_apart_the_more_the_further_it_shifts(home_ledger):
    """eval.ood = 'target': the [data.target] domain's test inputs are the OOD set. Noise that barely moves
    the signal cannot be told apart (AUROC ~0.5); noise that swamps it can, by the same model (the same
    seed: only the OOD set differs). A plain ReLU MLP tells it apart the wrong way round: it is *more*
    confident on the swamped inputs (large inputs, large logits: Hein et al. 2019), AUROC well below 0.5."""
    auroc = {}
    for noise in (0.05, 3.0):
        m = train(tiny("train.epochs=6", "eval.ood='target'", f"data.target.noise={noise}"), ledger=home_ledger,
                  progress=False).metrics
        auroc[noise] = m["test_ood_auroc"]
        assert "test_target_accuracy" in m
    assert abs(auroc[0.05] - 0.5) < 0.15 and abs(auroc[3.0] - 0.5) > 0.3, auroc


@pytest.mark.slow
def test_ensemble_and_gp_widen_intervals_in_the_gap_of_the_cubic_toy(home_ledger):
    def _ratio(result):
        from dltricks.methods.build import model_from_run
        from dltricks.methods.uncertainty.evaluate import build_predictive, predict
        from dltricks.runner.run import make_task

        recipe, bundle, model = model_from_run(home_ledger, result.run_id)
        task = make_task(recipe, bundle)
        pred = build_predictive(recipe, bundle, model, task, torch.device("cpu"))
        xs = torch.tensor([[-0.5], [0.0], [0.5]]), torch.tensor([[-3.0], [-2.5], [2.5], [3.0]])
        sd = [predict(pred, x, torch.device("cpu"), 64)[1].sqrt().mean() for x in xs]
        return float(sd[0] / sd[1])

    r = train(Recipe.load("cubic1d-mlp", ["eval.gp_head=true", "eval.plots=true", "eval.gp_epochs=6",
                                          "train.epochs=40"]), ledger=home_ledger, progress=False)
    for k in ("test_nll", "test_coverage_50", "test_coverage_90", "test_coverage_95", "test_width_90"):
        assert math.isfinite(r.metrics[k])
    assert r.metrics["test_width_50"] < r.metrics["test_width_90"] < r.metrics["test_width_95"]
    assert (r.run_dir / "intervals.png").stat().st_size > 1000
    assert _ratio(r) > 1.5
    e = train(Recipe.load("cubic1d-mlp", ["eval.ensemble=3", "train.epochs=20"]), ledger=home_ledger, progress=False)
    assert len(list((e.run_dir / "members").glob("member*.safetensors"))) == 2
    assert e.metrics["test_nll"] < 10


def test_catalogue_has_the_uncertainty_tricks_and_their_metrics_point_the_right_way():
    from dltricks import tricks
    from dltricks.loop.tasks import higher_is_better

    base = Recipe.load("mnist1d-mlp")
    for name in ("mc_dropout", "ensemble", "temperature_scaling", "laplace_last_layer", "gp_head"):
        t = tricks.get(name)
        assert t.family == "uncertainty" and t.reference
        assert base.patch(t.on).get(next(iter(t.on))) == next(iter(t.on.values()))
    assert not higher_is_better("test_ece") and not higher_is_better("test_brier")
    assert not higher_is_better("test_nll") and higher_is_better("test_ood_auroc")
    from dltricks.runner.run import metric_names

    names = metric_names(tiny("eval.ood='noise'", "eval.temperature_scaling=true"))
    assert {"test_nll", "test_brier", "test_ece_adaptive", "test_ood_auroc", "temperature"} <= set(names)
    assert "test_coverage_90" in metric_names(Recipe.load("cubic1d-mlp"))


def test_ctrl_c_in_an_ensemble_member_resumes_there_to_the_same_result(home_ledger, monkeypatch):
    """A real SIGINT while member 2 of 3 trains: the run is interrupted with its own curves, member 1 kept;
    resuming loads member 1, continues member 2 from its checkpoint, and ends where a run never stopped
    ends. Nothing of the members' checkpoints is left behind."""
    import os
    import signal

    from dltricks.loop import training as loop
    from dltricks.loop.training import TrainingInterrupted
    from dltricks.methods.uncertainty import ensemble

    recipe = tiny("train.epochs=3", "eval.ensemble=4")
    whole = train(recipe, ledger=home_ledger, progress=False)
    real_fit, calls = loop.fit, []

    def fit(*a, **kw):  # member 2's first epoch ends with a Ctrl-C
        calls.append(kw["seed"])
        if kw["seed"] == ensemble.member_seed(recipe.seed, 2) and not kw["resume"]:
            kw["on_epoch"] = lambda epoch, row: os.kill(os.getpid(), signal.SIGINT) if epoch == 1 else None
        return real_fit(*a, **kw)

    monkeypatch.setattr(loop, "fit", fit)  # the members' fit (the run's own was bound at import)
    with pytest.raises(TrainingInterrupted) as e:
        train(recipe, ledger=home_ledger, progress=False)
    assert e.value.where == "in ensemble member 2 of 3, after epoch 1 of 3"
    stopped = home_ledger.runs(status="interrupted")[0]
    assert stopped.curves["train_loss"] == whole.history.curves["train_loss"]  # the run's, not the member's
    members = home_ledger.run_dir(stopped.id) / "members"
    assert (members / "member1.safetensors").is_file() and (members / "member2" / "checkpoint").is_dir()
    calls.clear()
    resumed = train(recipe, ledger=home_ledger, progress=False, resume=stopped.id)
    assert calls == [ensemble.member_seed(recipe.seed, k) for k in (2, 3)]  # member 1 was not trained again
    for k in ("test_accuracy", "test_nll", "test_ece"):
        assert resumed.metrics[k] == whole.metrics[k]
    assert sorted(p.name for p in members.iterdir()) == [f"member{k}.safetensors" for k in (1, 2, 3)]
