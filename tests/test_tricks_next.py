"""The tricks practitioners reach for next (issue 25, 1-4): EMA/SWA weight averaging, mixup/CutMix,
the LR range test and torch.compile. Each trains for real on small data."""

from __future__ import annotations

import pytest
import torch
from test_train import FAST, RESUME_KW, InterruptAt, blobs, mlp, weights_equal

from dltricks.loop.training import TrainingInterrupted, fit

# ---- weight averaging -----------------------------------------------------------------------------------


@pytest.mark.parametrize("keys, at", [({"ema": 0.9}, 11), ({"swa_start": 2, "swa_lr": 5e-3}, 19),
                                      ({"swa_start": 2, "swa_lr": 5e-3}, 16)])
def test_weight_averaging_resumes_bit_identically(tmp_path, keys, at):
    # 8 steps an epoch: EMA stops mid-epoch 2; SWA mid-epoch 3 (averaging, SWALR annealing) and at its start
    x, y = blobs(120)
    val = blobs(40, seed=1)
    kw = {**RESUME_KW, **keys}
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
