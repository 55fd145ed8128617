"""Transfer learning: init_from by run id, file and recipe:NAME; frozen layers and norms; layer-wise rates;
gradual unfreezing; its checkpoint resumes bit for bit; and the one-line errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_train import RESUME_KW, InterruptAt, blobs, weights_equal

from dltricks.errors import DltricksError
from dltricks.loop.method import Method
from dltricks.loop.tasks import Classification
from dltricks.loop.training import TrainingInterrupted, fit
from dltricks.methods.transfer import FineTune, head_name, layer_groups, load_matching
from dltricks.recipe import Recipe, TrainSpec
from dltricks.runner.run import train

SMALL = ["data.num_samples=300", "model.channels=[4, 8]", "train.epochs=1", "train.batch_size=32"]


def cnn(classes: int, seed: int = 0, channels=(4, 8)):
    from dltricks.nn import build_model

    torch.manual_seed(seed)
    spec = Recipe.from_dict({"data": {"name": "mnist1d"}, "model": {"name": "cnn", "channels": list(channels)}}).model
    return build_model(spec, (1, 40), classes)


def test_layer_groups_and_head():
    m = cnn(5)
    groups = layer_groups(m)
    assert head_name(m) == "1.3" and groups[-1] == ["1.3"]
    # each conv unit is a group with its norm: conv weights first
    assert all(isinstance(dict(m.named_modules())[g[0]], torch.nn.Conv1d) for g in groups[:-1])
    assert all(len(g) == 2 for g in groups[:-1])


def test_load_matching_reinitialises_a_head_of_other_classes_and_refuses_other_shapes(tmp_path):
    source, target = cnn(10, seed=1), cnn(5, seed=2)
    head_before = target.state_dict()["1.3.weight"].clone()
    loaded, fresh = load_matching(target, source.state_dict(), "test")
    assert fresh == ["1.3.weight", "1.3.bias"] and "0.0.0.0.weight" in loaded
    assert torch.equal(target.state_dict()["1.3.weight"], head_before)
    assert all(torch.equal(target.state_dict()[k], source.state_dict()[k]) for k in loaded)
    with pytest.raises(DltricksError, match=r"tensor 0\.0\.0\.0\.weight has shape .*only the head may differ"):
        load_matching(cnn(5, channels=(6, 8)), source.state_dict(), "test")
    with pytest.raises(DltricksError, match="no tensor matches"):
        load_matching(cnn(5), {"other.weight": torch.zeros(3)}, "test")


def test_init_from_run_file_and_recipe_reference(home_ledger, tmp_path, capsys):
    pre = train(Recipe.load("mnist1d-cnn", SMALL + ["data.classes=[0, 1, 2, 3, 4]"]), ledger=home_ledger,
                progress=False)
    src = pre.run_dir / "model.safetensors"
    weights = load_file(str(src))
    ft = Recipe.load("mnist1d-cnn", SMALL + ["data.classes=[5, 6, 7, 8, 9]", "data.labels_per_class=10",
                                             f"model.init_from={pre.run_id}", "train.freeze=['backbone']"])
    capsys.readouterr()
    res = train(ft, ledger=home_ledger, progress=False)
    assert "loaded" not in capsys.readouterr().err  # quiet runs say nothing
    out = load_file(str(res.run_dir / "model.safetensors"))
    # backbone frozen: identical to the pretrained one, BatchNorm statistics included; the new head trained
    body = [k for k in weights if not k.startswith("1.3.")]
    assert any("running_mean" in k for k in body)
    assert all(torch.equal(out[k], weights[k]) for k in body)
    assert out["1.3.weight"].shape == (5, 8)
    # a .safetensors path works the same
    save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp_path / "w.safetensors"))
    again = train(ft.patch({"model.init_from": str(tmp_path / "w.safetensors")}), ledger=home_ledger, progress=True)
    assert again.metrics["test_accuracy"] == res.metrics["test_accuracy"]
    assert "w.safetensors': loaded 14 tensors" in capsys.readouterr().err  # others say what they loaded
    # recipe:NAME trains the named recipe once, then finds it in the ledger
    path = tmp_path / "pre.toml"
    path.write_text(Recipe.load("mnist1d-cnn", SMALL + ["data.classes=[0, 1, 2, 3, 4]", "name=pre"]).to_toml())
    ref = ft.patch({"model.init_from": f"recipe:{path}"})
    train(ref, ledger=home_ledger, progress=False)
    train(ref, ledger=home_ledger, progress=False)
    assert len(home_ledger.runs(name="pre", status="completed")) == 1


def test_init_from_errors_are_one_line(home_ledger):
    bad = Recipe.load("mnist1d-cnn", SMALL + ["model.init_from=abcdef123456"])
    with pytest.raises(DltricksError, match="no run 'abcdef123456'"):
        train(bad, ledger=home_ledger, progress=False)
    rid = home_ledger.start_run(name="x", recipe=bad.to_dict(), seed=0, device="cpu")
    with pytest.raises(DltricksError, match=f"run {rid} is running, not completed"):
        train(bad.patch({"model.init_from": rid}), ledger=home_ledger, progress=False)
    with pytest.raises(DltricksError, match="pickled"):
        train(bad.patch({"model.init_from": "w.pt"}), ledger=home_ledger, progress=False)
    with pytest.raises(DltricksError, match="train.freeze: no module 'head'"):
        train(bad.patch({"model.init_from": "", "train.freeze": ["head"]}), ledger=home_ledger, progress=False)


def _fine_tune(model, **cfg):
    spec = TrainSpec(**{"epochs": 4, "lr": 0.01, **cfg})
    return FineTune(Method(Classification()), model, spec), spec


def test_layer_lr_decay_gives_each_group_its_rate_and_one_cycle_keeps_them():
    model = cnn(3)
    method, spec = _fine_tune(model, layer_lr_decay=0.5, schedule="one_cycle")
    from dltricks.loop.optim import build_optimizer
    from dltricks.loop.schedules import build_scheduler

    opt = build_optimizer(model, spec, method.param_groups(model, spec))
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.005, 0.0025]  # head, conv 2, conv 1
    sched = build_scheduler(opt, spec, 10)
    for _ in range(12):  # past one-cycle's peak (30% of 40 steps)
        opt.step()
        sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[0] > lrs[1] > lrs[2] and abs(lrs[0] / lrs[1] - 2) < 1e-6


def test_gradual_unfreezing_trains_top_down_and_resumes_bit_identically(tmp_path):
    x, y = blobs(120)
    x = x[:, None, :]  # (N, 1, 8) signals for the CNN
    kw = {**RESUME_KW, "epochs": 3}

    def run(at=0, resume=False, seed=0, d="a"):
        model = InterruptAt(cnn(3, seed=seed), at)
        method = FineTune(Method(Classification()), model, TrainSpec(unfreeze_every=1, epochs=3, lr=1e-2))
        h = fit(model, (x, y), None, checkpoint_dir=tmp_path / d, resume=resume, method=method, **kw)
        return model, h

    start = cnn(3).state_dict()
    full, h_full = run()
    after = full.inner.state_dict()
    # 3 groups (conv 1, conv 2, head), one more each epoch: after 3 epochs all changed, but conv 1 trained
    # only in the last one; check the middle of the schedule with a 2-epoch run
    two_model = cnn(3)
    m2 = FineTune(Method(Classification()), two_model, TrainSpec(unfreeze_every=2, epochs=2, lr=1e-2))
    fit(two_model, (x, y), None, method=m2, **{**kw, "epochs": 2})
    moved = {k: not torch.equal(two_model.state_dict()[k], start[k]) for k in start}
    assert moved["1.3.weight"] and not moved["0.2.0.0.weight"] and not moved["0.0.0.0.weight"]
    assert not moved["0.0.0.1.running_mean"]  # frozen norm: its statistics are kept
    assert all(not torch.equal(after[k], start[k]) for k in ("1.3.weight", "0.2.0.0.weight", "0.0.0.0.weight"))
    with pytest.raises(TrainingInterrupted):
        run(at=11, d="b")
    resumed, h = run(resume=True, seed=7, d="b")
    assert h.curves == h_full.curves and weights_equal(resumed, full)


@pytest.mark.parametrize("recipe, tricks", [
    ("mnist1d-finetune", ["fine_tune", "freeze_backbone", "discriminative_lr", "gradual_unfreeze"]),
    ("mnist1d-distill", ["distill", "distill_features"]),
    ("mnist1d-multitask", ["target_normalization", "uncertainty_weighting", "pcgrad"]),
])
def test_learning_setup_tricks_are_catalogued_and_patch_their_study_recipe(recipe, tricks):
    from dltricks.tricks import get

    base = Recipe.load(recipe)
    for name in tricks:
        t = get(name)
        on, off = base.patch(t.on), base.patch(t.off)
        assert all(on.get(k) == v for k, v in t.on.items()) and on.digest() != off.digest()
    assert base.ablate.tricks == tricks[:1]


def test_two_workers_that_need_the_same_recipe_run_at_once_train_it_once(ledger_home, tmp_path):
    """`recipe:NAME` started in two processes at the same moment (the workers of a sweep, at its start):
    one trains it while the other waits, then both use that one run."""
    import os
    import subprocess
    import sys

    path = tmp_path / "pre.toml"
    path.write_text(Recipe.load("mnist1d-cnn", SMALL + ["train.epochs=3", "name=pre"]).to_toml())
    code = ("from dltricks.ledger import Ledger; from dltricks.runner.references import resolve_run_ref; "
            f"from dltricks.runner import train; print(resolve_run_ref(Ledger(), 'recipe:{path}', train))")
    env = {**os.environ, "DLTRICKS_HOME": str(ledger_home)}
    env.pop("DLTRICKS_LEDGER", None)
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ledger_home, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    from dltricks.ledger import Ledger

    runs = Ledger().runs(name="pre")
    assert len(runs) == 1 and runs[0].status == "completed"
    assert {out.strip() for out, _ in outs} == {runs[0].id}
