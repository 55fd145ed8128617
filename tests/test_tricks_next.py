"""The tricks practitioners reach for next (issue 25, 1-4): EMA/SWA weight averaging, mixup/CutMix,
the LR range test and torch.compile. Each trains for real on small data."""

from __future__ import annotations

import copy

import pytest
import torch
from test_train import FAST, RESUME_KW, InterruptAt, blobs, mlp, weights_equal

from dltricks.loop.training import TrainingInterrupted, fit

# ---- weight averaging -----------------------------------------------------------------------------------


@pytest.mark.parametrize("keys, at", [({"ema": 0.9}, 11), ({"swa_start": 2, "swa_lr": 5e-3}, 19),
                                      ({"swa_start": 2, "swa_lr": 5e-3}, 16), ({"mixup": 0.4}, 11)])
def test_weight_averaging_and_mixing_resume_bit_identically(tmp_path, keys, at):
    # 8 steps an epoch: EMA stops mid-epoch 2; SWA mid-epoch 3 (averaging, SWALR annealing) and at its start;
    # mixup's draws (lam, partners) come from torch's RNG, checkpointed with the loop
    from dltricks.loop.mixing import Mixing

    x, y = blobs(120)
    val = blobs(40, seed=1)
    kw = {**RESUME_KW, **keys}
    if "mixup" in kw:
        kw["augment"] = Mixing(mixup_alpha=kw.pop("mixup"), num_classes=3)
    full = InterruptAt(mlp(dropout=0.3, norm=True))
    h_full = fit(full, (x, y), val, checkpoint_dir=tmp_path / "a", **kw)
    plain = InterruptAt(mlp(dropout=0.3, norm=True))
    fit(plain, (x, y), val, checkpoint_dir=tmp_path / "c", **RESUME_KW)
    assert not weights_equal(full, plain)  # the run ends on the average, not on the last weights

    with pytest.raises(TrainingInterrupted):
        fit(InterruptAt(mlp(dropout=0.3, norm=True), at=at), (x, y), val, checkpoint_dir=tmp_path / "b", **kw)
    fresh = InterruptAt(mlp(dropout=0.3, norm=True, seed=5))
    h = fit(fresh, (x, y), val, checkpoint_dir=tmp_path / "b", resume=True, **kw)
    assert h.curves == h_full.curves
    assert weights_equal(fresh, full)


def test_swa_anneals_to_its_rate_and_ends_on_the_average_with_fresh_batchnorm_statistics():
    x, y = blobs(128)
    val = blobs(40, seed=1)
    model = mlp(norm=True)
    h = fit(model, (x, y), val, epochs=4, batch_size=16, lr=1e-2, swa_start=2, swa_lr=1e-3, **FAST)
    assert h["lr"][:2] == [1e-2, 1e-2] and h["lr"][-1] == pytest.approx(1e-3)
    # update_bn: the running statistics are the final weights' own on the training batches (8 of 16, in order)
    bn = model[1]
    with torch.no_grad():
        batches = model[0](x).split(16)
    assert torch.allclose(bn.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, torch.stack([b.var(0) for b in batches]).mean(0), rtol=1e-4)


def test_ema_validates_the_average_and_it_learns():
    x, y = blobs(300)
    val = blobs(150, seed=1)
    h = fit(mlp(), (x, y), val, epochs=6, batch_size=32, lr=1e-2, ema=0.9, **FAST)
    assert h["val_accuracy"][-1] > 0.8


# ---- mixup and CutMix -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial", [(40,), (12, 10), (6, 8, 7)])
def test_cutmix_boxes_in_1d_2d_3d_keep_label_weights_equal_to_areas(spatial):
    from dltricks.loop.mixing import Mixing

    torch.manual_seed(0)
    n, classes = 6, 6
    x = torch.arange(n, dtype=torch.float32).view(n, 1, *[1] * len(spatial)).expand(n, 2, *spatial).clone()
    y = torch.arange(n)
    seen_partial = False
    for _ in range(20):
        xm, ym = Mixing(cutmix_alpha=1.0, num_classes=classes)(x, y)
        assert ym.shape == (n, classes) and torch.allclose(ym.sum(1), torch.ones(n))
        for i in range(n):
            own = (xm[i] == i).float().mean()  # the share of sample i still its own
            assert ym[i, i] == pytest.approx(float(own), abs=1e-6) or (ym[i, i] == 1 and own == 1)
            partners = [c for c in range(classes) if c != i and ym[i, c] > 0]
            assert len(partners) <= 1
            if partners:  # the rest of the input is the partner's, in the partner's share
                assert ym[i, partners[0]] == pytest.approx(float((xm[i] == partners[0]).float().mean()), abs=1e-6)
        seen_partial |= bool(((ym > 0) & (ym < 1)).any())
    assert seen_partial


def test_mixup_blends_inputs_and_labels_alike_and_cutmix_moves_masks_with_images():
    from dltricks.loop.mixing import Mixing

    torch.manual_seed(1)
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1).expand(4, 1, 5).clone()
    xm, ym = Mixing(mixup_alpha=0.4, num_classes=4)(x, torch.arange(4))
    # a sample's value is lam * i + (1 - lam) * j: its label weights give it back
    assert torch.allclose(xm[:, 0, 0], ym @ torch.arange(4.0), atol=1e-5)
    seg_x = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1).expand(3, 1, 8, 8).clone()
    seg_y = torch.arange(3).view(3, 1, 1).expand(3, 8, 8).clone()
    for _ in range(5):
        xm, ym = Mixing(cutmix_alpha=1.0, segmentation=True)(seg_x, seg_y)
        assert ym.dtype == torch.long and torch.equal(xm[:, 0].long(), ym)  # every pixel keeps its own label


def test_mixing_is_refused_with_its_reason_where_it_has_no_meaning():
    from dltricks.errors import DltricksError
    from dltricks.loop.mixing import mixing_for

    kw = dict(num_classes=3, in_shape=(1, 8, 8))
    with pytest.raises(DltricksError, match="mixup blends two images.*data.cutmix_alpha"):
        mixing_for(0.2, 0.0, task="segmentation", classifies=False, **kw)
    with pytest.raises(DltricksError, match="data.mixup_alpha mix class labels"):
        mixing_for(0.2, 0.0, task="classification", classifies=False, **kw)
    with pytest.raises(DltricksError, match="spatial axes"):
        mixing_for(0.0, 1.0, task="classification", classifies=True, num_classes=3, in_shape=(10,))
    assert mixing_for(0.0, 0.0, task="classification", classifies=True, **kw) is None


def test_fit_trains_on_mixed_batches_and_counts_accuracy():
    from dltricks.loop.mixing import Mixing

    x, y = blobs(300)
    val = blobs(150, seed=1)
    h = fit(mlp(), (x, y), val, epochs=6, batch_size=32, lr=1e-2, augment=Mixing(mixup_alpha=0.2, num_classes=3),
            **FAST)
    assert 0.5 < h["train_accuracy"][-1] <= 1.0 and h["val_accuracy"][-1] > 0.8


# ---- the LR range test ----------------------------------------------------------------------------------


def test_lr_range_test_ramps_exponentially_and_suggests_a_tenth_of_the_minimum(tmp_path):
    from dltricks.loop.lr_find import RULE, lr_range_test, plot_lr_range
    from dltricks.loop.tasks import Classification
    from dltricks.recipe import TrainSpec

    x, y = blobs(256)
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    found = lr_range_test(model, (x, y), spec=TrainSpec(batch_size=16, optimizer="sgd", device="cpu"),
                          task=Classification(), start=1e-5, end=100.0, steps=60)
    ratios = [b / a for a, b in zip(found.lrs, found.lrs[1:])]
    assert found.lrs[0] == pytest.approx(1e-5) and max(ratios) == pytest.approx(min(ratios))
    assert found.stopped.startswith("the smoothed loss passed") or found.stopped.startswith("the loss became")
    best = min(range(len(found.smoothed)), key=found.smoothed.__getitem__)
    assert found.suggestion == pytest.approx(found.lrs[best] / 10) and found.rule == RULE
    assert 1e-4 < found.suggestion < 10  # between the flat start and the blow-up
    assert weights_equal_dict(model.state_dict(), before) and torch.equal(torch.get_rng_state(), rng)
    png = plot_lr_range(found, tmp_path / "lr.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def weights_equal_dict(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class InterruptAtNotItsCopy(InterruptAt):
    """The range test trains a deep copy of the model: only the run's own forwards count towards the SIGINT."""

    def __deepcopy__(self, memo):
        return InterruptAt(copy.deepcopy(self.inner, memo))


def test_lr_find_in_fit_records_the_rate_chosen_and_resume_reuses_it(tmp_path):
    x, y = blobs(120)
    val = blobs(40, seed=1)
    kw = {**RESUME_KW, "lr": "find", "schedule": "constant"}
    full = InterruptAt(mlp())
    h_full = fit(full, (x, y), val, checkpoint_dir=tmp_path / "a", **kw)
    lr = h_full.notes["lr_found"]
    assert h_full["lr"] == [lr] * 4 and 1e-6 < lr < 10
    with pytest.raises(TrainingInterrupted):
        fit(InterruptAtNotItsCopy(mlp(), at=11), (x, y), val, checkpoint_dir=tmp_path / "b", **kw)
    fresh = InterruptAt(mlp(seed=5))  # another init would find another rate: the checkpoint's must win
    h = fit(fresh, (x, y), val, checkpoint_dir=tmp_path / "b", resume=True, **kw)
    assert h.notes == h_full.notes and h.curves == h_full.curves and weights_equal(fresh, full)


# ---- torch.compile --------------------------------------------------------------------------------------


def test_compile_trains_the_same_weights_and_a_backend_that_cannot_compile_refuses(monkeypatch):
    from dltricks.errors import DltricksError

    x, y = blobs(120)
    kw = dict(epochs=2, batch_size=16, lr=1e-2, **FAST)
    from torch._dynamo.utils import counters

    eager, compiled = mlp(norm=True), mlp(norm=True)
    h0 = fit(eager, (x, y), (x, y), **kw)
    graphs = counters["stats"]["unique_graphs"]
    h1 = fit(compiled, (x, y), (x, y), compile="aot_eager", **kw)
    assert counters["stats"]["unique_graphs"] > graphs  # dynamo really captured the model
    assert h1["val_accuracy"] == h0["val_accuracy"]
    for k, v in eager.state_dict().items():
        assert torch.allclose(v.float(), compiled.state_dict()[k].float(), atol=1e-5)
    import torch._inductor.compile_fx as inductor

    def no_compiler(*args, **kwargs):  # what inductor raises on a machine without a working C++ compiler
        raise RuntimeError("Compiler: g++ is not found")

    torch._dynamo.reset()
    monkeypatch.setattr(inductor, "compile_fx", no_compiler)
    model = mlp()
    with pytest.raises(DltricksError, match="train.compile = 'inductor': the inductor backend cannot compile"):
        fit(model, (x, y), epochs=1, batch_size=16, compile="inductor", **FAST)
    torch._dynamo.reset()


# ---- recipes and the command line -----------------------------------------------------------------------


def test_recipes_record_lr_found_train_with_cutmix_and_refuse_mixup_for_segmentation(home_ledger):
    import dltricks
    from dltricks.errors import DltricksError
    from dltricks.recipe import Recipe

    small = {"train.epochs": 1, "model.hidden": [32], "train.threads": 1}
    found = dltricks.train(Recipe.load("mnist1d-mlp").patch({**small, "train.lr": "find"}), ledger=home_ledger,
                           progress=False)
    assert 1e-7 < found.metrics["lr_found"] < 10 and found.history["lr"][0] <= found.metrics["lr_found"]
    assert home_ledger.get(found.run_id).recipe["train"]["lr"] == "find"  # rerunnable as it was asked for
    mixed = dltricks.train(Recipe.load("mnist1d-cnn").patch({"train.epochs": 1, "model.channels": [8],
                                                             "data.cutmix_alpha": 1.0, "train.threads": 1}),
                           ledger=home_ledger, progress=False)
    assert mixed.metrics["test_accuracy"] > 0.15  # it trained on mixed batches and predicts above chance
    seg = Recipe.load("seg2d-unet").patch({"data.num_train": 8, "data.num_test": 4, "data.size": 16,
                                           "data.mixup_alpha": 0.2, "train.epochs": 1})
    with pytest.raises(DltricksError, match="mixup blends two images") as e:
        dltricks.train(seg, ledger=home_ledger, progress=False)
    assert "\n" not in str(e.value)


def test_lr_find_command_writes_a_png_and_says_its_rule_and_refuses_bad_input_in_one_line(tmp_path,
                                                                                          shared_data_cache):
    import os
    import subprocess
    import sys

    env = {**os.environ, "DLTRICKS_HOME": str(tmp_path), "DLTRICKS_CACHE": str(shared_data_cache),
           "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    cli = [sys.executable, "-m", "dltricks.cli", "lr-find", "mnist1d-mlp", "-o", "model.hidden=[32]"]
    done = subprocess.run([*cli, "--steps", "30", "--out", str(tmp_path / "lr.png")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("mnist1d-mlp: ") and "steps from lr 1e-07" in lines[0]
    assert lines[1].startswith("suggestion: train.lr = ") and "smoothed loss's minimum, divided by 10" in lines[1]
    assert float(lines[1].split()[3]) > 0
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    for bad, what in [(["--out", "/nonexistent/lr.png"], "not a writable directory"),
                      (["--steps", "2"], "too few to see a minimum"), (["--start", "1", "--end", "0.1"], "below")]:
        done = subprocess.run([*cli, *bad], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and what in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_recipes_refuse_what_would_silently_do_nothing_in_one_line():
    from dltricks.errors import DltricksError
    from dltricks.recipe import Recipe

    base = Recipe.load("mnist1d-cnn")
    for patch, what in [({"train.ema": 0.99, "train.swa_start": 0.75}, "set one of them"),
                        ({"train.swa_start": 15}, "below train.epochs = 15"),
                        ({"train.swa_start": 2.5}, "a whole epoch"),
                        ({"train.lr": "fast"}, "a number > 0 or 'find'"),
                        ({"train.lr": -1.0}, "a number > 0 or 'find'"),
                        ({"train.compile": "tensorrt"}, "train.compile"),
                        ({"train.meta": "maml", "train.ema": 0.9}, "train.ema acts on the training loop's steps")]:
        with pytest.raises(DltricksError, match=what) as e:
            base.patch(patch)
        assert "\n" not in str(e.value)
    assert base.patch({"train.compile": True}).train.compile == "inductor"
    assert base.patch({"train.swa_start": 0.75}).train.swa_epoch == 11
