"""Knowledge distillation: the KD loss (T^2, per pixel), a teacher run distilled into a smaller student with
cached logits, FitNets hints with a learned projector in the checkpoint, and the one-line errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_methods_transfer import SMALL
from test_train import RESUME_KW, InterruptAt, blobs, mlp, weights_equal

from dltricks.errors import DltricksError
from dltricks.loop.method import Batch
from dltricks.loop.tasks import Classification
from dltricks.loop.training import TrainingInterrupted, fit
from dltricks.methods.distill import Distill, kd_loss
from dltricks.recipe import Recipe
from dltricks.runner.run import train


def test_kd_loss_is_t_squared_kl_and_works_per_pixel():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    for temp in (1.0, 4.0):
        ref = F.kl_div(F.log_softmax(s / temp, 1), F.log_softmax(t / temp, 1), log_target=True,
                       reduction="batchmean") * temp ** 2
        assert torch.allclose(kd_loss(s, t, temp), ref, atol=1e-6)
    assert kd_loss(t, t, 4.0).abs() < 1e-6
    # segmentation: (N, K, H, W) is the mean over pixels of the per-pixel loss
    s4, t4 = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    flat = lambda z: z.permute(0, 2, 3, 1).reshape(-1, 3)  # noqa: E731
    assert torch.allclose(kd_loss(s4, t4, 2.0), kd_loss(flat(s4), flat(t4), 2.0), atol=1e-6)


@pytest.mark.slow
def test_distil_a_teacher_run_into_a_smaller_student(home_ledger):
    teacher = train(Recipe.load("mnist1d-cnn", SMALL + ["model.channels=[8, 16]"]), ledger=home_ledger, progress=False)
    student = Recipe.load("mnist1d-cnn", SMALL + ["model.channels=[4]", f"train.teacher={teacher.run_id}",
                                                  "train.distill_alpha=1.0"])
    res = train(student, ledger=home_ledger, progress=False)
    assert res.metrics["params"] < teacher.metrics["params"] / 4
    # with alpha = 1 the student learns the teacher's outputs only: the loss is the KD term, >= 0
    assert res.history["train_loss"][-1] >= 0
    plain = train(student.patch({"train.teacher": ""}), ledger=home_ledger, progress=False)
    assert plain.history["train_loss"] != res.history["train_loss"]

    # logits are cached once when the data are not augmented, computed per batch when they are
    from dltricks.runner.run import build

    bundle, model, task = build(student)
    cached = Distill.from_recipe(student, bundle, model, task, home_ledger, augmented=False)
    live = Distill.from_recipe(student, bundle, model, task, home_ledger, augmented=True)
    cached.to(torch.device("cpu"))
    idx = torch.tensor([3, 0, 7])
    batch = Batch(bundle.train[0][idx], bundle.train[1][idx], idx)
    assert torch.allclose(cached._teacher_logits(batch), live._teacher_logits(batch), atol=1e-5)
    assert cached.cache is not None and cached.cache.shape == (len(bundle.train[0]), 10)
    assert live.cache is None

    # errors: a teacher of other classes, an unfinished run
    with pytest.raises(DltricksError, match="trained on classification of classes .* distil from a teacher of"):
        train(student.patch({"data.classes": [5, 6, 7, 8, 9]}), ledger=home_ledger, progress=False)
    rid = home_ledger.start_run(name="x", recipe=student.to_dict(), seed=0, device="cpu")
    with pytest.raises(DltricksError, match="not completed: a teacher is distilled only from a finished run"):
        train(student.patch({"train.teacher": rid}), ledger=home_ledger, progress=False)


def test_hint_projector_trains_and_resumes_bit_identically(tmp_path):
    x, y = blobs(120)
    val = blobs(40, seed=1)
    teacher = mlp(hidden=48, seed=3).eval()

    def run(at=0, resume=False, seed=0, d="a"):
        student = InterruptAt(mlp(hidden=16, seed=seed), at)
        method = Distill(Classification(), teacher, 2.0, 0.5, student, hint_weight=1.0,
                         hint_layers=["inner.1=1"], sample=x[:2])
        h = fit(student, (x, y), val, checkpoint_dir=tmp_path / d, resume=resume, method=method, **RESUME_KW)
        return student, method, h

    full, m_full, h_full = run()
    proj = m_full.modules()["projectors"][0]
    assert isinstance(proj, torch.nn.Linear) and proj.weight.shape == (48, 16)  # student ReLU 16 -> teacher 48
    with pytest.raises(TrainingInterrupted):
        run(at=11, d="b")
    resumed, m, h = run(resume=True, seed=5, d="b")
    assert h.curves == h_full.curves and weights_equal(resumed, full)
    assert weights_equal(m.modules()["projectors"], m_full.modules()["projectors"])
    with pytest.raises(DltricksError, match="the student has no module 'nope'"):
        Distill(Classification(), teacher, 2.0, 0.5, mlp(), hint_weight=1.0, hint_layers=["nope=1"], sample=x[:2])


def test_segmentation_is_distilled_per_pixel_with_a_conv_hint(home_ledger):
    small = ["data.size=16", "data.num_train=24", "data.num_test=8", "train.epochs=1", "train.batch_size=8",
             "data.val_fraction=0.0"]
    teacher = train(Recipe.load("seg2d-unet", small + ["model.channels=[8, 16]"]), ledger=home_ledger, progress=False)
    student = Recipe.load("seg2d-unet", small + ["model.channels=[4, 8]", f"train.teacher={teacher.run_id}",
                                                 "train.hint_weight=1.0"])
    from dltricks.runner.run import build

    bundle, model, task = build(student)
    method = Distill.from_recipe(student, bundle, model, task, home_ledger, augmented=False)
    proj = method.modules()["projectors"][0]
    assert isinstance(proj, torch.nn.Conv2d) and proj.kernel_size == (1, 1)  # maps (N, 4, H, W) -> (N, 8, H, W)
    res = train(student, ledger=home_ledger, progress=False)
    assert "test_dice" in res.metrics and res.metrics["params"] < teacher.metrics["params"]
