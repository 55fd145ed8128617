"""Segmentation task: losses, Dice/IoU/HD95, sliding-window inference and patch sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dltricks.data.patches import PatchDataset
from dltricks.errors import DltricksError
from dltricks.loop.segmentation import (
    Segmentation,
    SegmentationMeter,
    confusion,
    dice_loss,
    hausdorff95,
    make_segmentation_task,
    sliding_window,
)


def _logits_for(y: torch.Tensor, k: int, scale: float = 20.0) -> torch.Tensor:
    """Confident logits (N, K, *spatial) that predict exactly ``y``."""
    return F.one_hot(y, k).movedim(-1, 1).float() * scale


def _two_blobs() -> torch.Tensor:
    y = torch.zeros(2, 16, 16, dtype=torch.long)
    y[0, 2:8, 2:8] = 1
    y[0, 10:14, 10:14] = 2
    y[1, 4:12, 4:12] = 1
    return y


# ---- metrics --------------------------------------------------------------------------------------

def test_perfect_prediction_scores_one() -> None:
    y = _two_blobs()
    meter = SegmentationMeter(3, hd95=True)
    meter.update(_logits_for(y, 3), y, torch.tensor(0.0))
    m = meter.compute()
    assert m["dice"] == 1.0 and m["iou"] == 1.0 and m["dice_1"] == 1.0 and m["dice_2"] == 1.0
    assert m["hd95"] == 0.0


def test_empty_prediction_scores_zero_and_absent_classes_are_skipped() -> None:
    y = _two_blobs()
    meter = SegmentationMeter(3)
    meter.update(_logits_for(torch.zeros_like(y), 3), y, torch.tensor(1.0))
    m = meter.compute()
    assert m["dice"] == 0.0 and m["iou"] == 0.0
    # case 1 has no class 2 and predicts none: skipped, so dice_2 is case 0's score only (0), not 0.5
    meter = SegmentationMeter(3)
    pred = y.clone()
    pred[0][pred[0] == 2] = 0
    meter.update(_logits_for(pred, 3), y, torch.tensor(1.0))
    m = meter.compute()
    assert m["dice_1"] == 1.0 and m["dice_2"] == 0.0 and m["dice"] == 0.5


def test_partial_overlap_dice_and_iou_values() -> None:
    y = torch.zeros(1, 10, 10, dtype=torch.long)
    y[0, :, :4] = 1                                   # 40 pixels
    pred = torch.zeros_like(y)
    pred[0, :, 2:6] = 1                               # 40 pixels, 20 shared
    meter = SegmentationMeter(2)
    meter.update(_logits_for(pred, 2), y, torch.tensor(0.5))
    m = meter.compute()
    assert m["dice"] == pytest.approx(2 * 20 / 80) and m["iou"] == pytest.approx(20 / 60)
    assert m["loss"] == pytest.approx(0.5)


def test_confusion_matches_a_count_by_hand() -> None:
    y = torch.randint(0, 3, (4, 7, 5))
    p = torch.randint(0, 3, (4, 7, 5))
    c = confusion(p, y, 3)
    for n in range(4):
        for t in range(3):
            for q in range(3):
                assert c[n, t, q] == ((y[n] == t) & (p[n] == q)).sum()


def test_hausdorff95_known_distances() -> None:
    a = np.zeros((20, 20), bool)
    a[5:10, 5:10] = True
    b = np.roll(a, 3, axis=1)
    assert hausdorff95(a, a) == 0.0
    assert hausdorff95(a, b) == pytest.approx(3.0)
    assert hausdorff95(a, np.zeros_like(a)) == pytest.approx(math.hypot(20, 20))
    assert math.isnan(hausdorff95(np.zeros_like(a), np.zeros_like(a)))
    cube = np.zeros((12, 12, 12), bool)
    cube[3:7, 3:7, 3:7] = True
    assert hausdorff95(cube, np.roll(cube, 2, axis=0)) == pytest.approx(2.0)


# ---- losses ---------------------------------------------------------------------------------------

def test_dice_loss_is_low_for_the_answer_and_its_gradient_points_there() -> None:
    y = _two_blobs()
    assert dice_loss(_logits_for(y, 3), y) < 1e-3
    logits = torch.zeros(2, 3, 16, 16, requires_grad=True)
    loss = dice_loss(logits, y)
    loss.backward()
    g = logits.grad
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # descending the gradient raises the true class's logit inside the blobs
    inside = y == 1
    assert (g[:, 1][inside] < 0).float().mean() > 0.99
    with torch.no_grad():
        assert dice_loss(logits - 50 * g, y) < loss


def test_ce_dice_and_class_weights() -> None:
    y = _two_blobs()
    logits = torch.randn(2, 3, 16, 16)
    w = [0.2, 1.0, 3.0]
    ce = Segmentation(3, objective="ce", class_weights=w).loss(logits, y)
    assert ce == pytest.approx(F.cross_entropy(logits, y, weight=torch.tensor(w)).item())
    both = Segmentation(3, objective="ce_dice", class_weights=w).loss(logits, y)
    dice = Segmentation(3, objective="dice", class_weights=w).loss(logits, y)
    assert both == pytest.approx((ce + dice).item(), rel=1e-5)
    assert dice != pytest.approx(Segmentation(3, objective="dice").loss(logits, y).item())
    with pytest.raises(DltricksError, match="train.class_weights has 2 values for 3 classes"):
        Segmentation(3, class_weights=[1.0, 2.0])


# ---- sliding window -------------------------------------------------------------------------------

def _pointwise_net(c_in: int, k: int, dims: int) -> nn.Module:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    torch.manual_seed(0)
    return nn.Sequential(conv(c_in, 8, 1), nn.ReLU(), conv(8, k, 1))


@pytest.mark.parametrize("dims,size,patch", [(2, (37, 50), (16, 16)), (3, (13, 20, 9), (8, 8, 8))])
def test_sliding_window_equals_full_prediction_for_a_pointwise_net(dims, size, patch) -> None:
    net = _pointwise_net(2, 3, dims).eval()
    x = torch.randn(2, 2, *size)
    with torch.no_grad():
        full = net(x)
        for blend in ("gaussian", "constant"):
            sw = sliding_window(net, x, patch, overlap=0.5, blend=blend, batch_size=3)
            assert sw.shape == full.shape
            assert torch.allclose(sw, full, atol=1e-5)


def test_sliding_window_pads_inputs_smaller_than_the_patch() -> None:
    net = _pointwise_net(1, 2, 2).eval()
    x = torch.randn(1, 1, 10, 30)
    with torch.no_grad():
        assert torch.allclose(sliding_window(net, x, (16, 16)), net(x), atol=1e-5)


def test_sliding_window_with_context_is_close_to_full_inference() -> None:
    """A 3x3 net sees zero padding at window borders; blending overlapping windows keeps that small."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 3, padding=1)).eval()
    x = torch.randn(1, 1, 48, 48)
    with torch.no_grad():
        full, sw = net(x), sliding_window(net, x, (24, 24), overlap=0.5)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    assert (sw - full)[inner].abs().mean() < 0.1 * full.abs().mean()


def test_predict_uses_the_window_only_with_a_patch_size() -> None:
    net = _pointwise_net(1, 2, 2).eval()
    calls = []
    net.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        Segmentation(2).predict(net, x)
        assert calls == [(1, 1, 32, 32)]
        calls.clear()
        Segmentation(2, patch_size=(16, 16), sw_batch_size=100).predict(net, x)
    assert calls and all(c[2:] == (16, 16) for c in calls)


# ---- patches --------------------------------------------------------------------------------------

def _sparse_volumes(n: int = 4, size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.zeros(n, size, size, size, dtype=torch.long)
    for i in range(n):
        y[i, 3 + i:6 + i, 15:18, 4:7] = 1     # one small lesion per volume
    y[0, 20:22, 20:22, 20:22] = 2              # a rarer second class in one volume
    x = y.float().unsqueeze(1) + 0.1 * torch.randn(n, 1, size, size, size)
    return x, y


def test_patch_sampling_is_a_pure_function_of_seed_epoch_index() -> None:
    x, y = _sparse_volumes()
    a = PatchDataset(x, y, (8, 8, 8), 0.5, length=20, seed=3)
    b = PatchDataset(x, y, (8, 8, 8), 0.5, length=20, seed=3)
    first = [a.location(i) for i in range(20)]
    assert [b.location(i) for i in reversed(range(20))] == first[::-1]
    xa, ya = a[5]
    xb, yb = b[5]
    assert xa.shape == (1, 8, 8, 8) and ya.shape == (8, 8, 8)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    a.set_epoch(1)
    assert [a.location(i) for i in range(20)] != first
    a.set_epoch(0)
    assert [a.location(i) for i in range(20)] == first
    assert [PatchDataset(x, y, (8, 8, 8), 0.5, 20, seed=4).location(i) for i in range(20)] != first


@pytest.mark.parametrize("rate", [0.0, 0.33, 1.0])
def test_patch_sampler_oversamples_foreground_at_the_requested_rate(rate: float) -> None:
    x, y = _sparse_volumes()
    ds = PatchDataset(x, y, (8, 8, 8), rate, length=600, seed=0)
    forced = np.mean([ds.location(i)[2] for i in range(600)])
    has_fg = np.mean([bool((ds[i][1] > 0).any()) for i in range(600)])
    assert forced == pytest.approx(rate, abs=0.06)
    assert has_fg >= forced - 1e-9  # every forced patch holds foreground
    if rate == 1.0:
        assert has_fg == 1.0
    if rate == 0.0:
        assert has_fg < 0.3  # the lesions are small: uniform patches rarely hit them
    # the rare class gets its share too: volume 0 draws its two classes equally often
    if rate == 1.0:
        hits2 = np.mean([bool((ds[i][1] == 2).any()) for i in range(0, 600, 4)])
        assert hits2 > 0.3


def test_patches_pad_small_volumes_and_reject_bad_sizes() -> None:
    y = torch.zeros(2, 6, 6, 6, dtype=torch.long)
    y[:, 2:4, 2:4, 2:4] = 1
    x = y.float().unsqueeze(1)
    ds = PatchDataset(x, y, (8, 8, 8), 1.0, seed=0)
    px, py = ds[0]
    assert px.shape == (1, 8, 8, 8) and py.shape == (8, 8, 8) and (py > 0).any()
    with pytest.raises(DltricksError, match="patch_size"):
        PatchDataset(x, y, (8, 8), 0.5)


# ---- from a recipe, end to end ----------------------------------------------------------------------

def _tiny_recipe(**data):
    from dltricks.recipe import Recipe

    return Recipe.from_dict({
        "name": "tiny-seg", "seed": 0,
        "data": {"name": "shapes", "dims": 2, "size": 24, "num_train": 24, "num_test": 6, "num_classes": 3,
                 "lesion_radius": [0.08, 0.15], "val_fraction": 0.25, **data},
        "model": {"name": "unet", "channels": [8, 16], "norm": "group"},
        "train": {"epochs": 2, "batch_size": 4, "lr": 3e-3, "loss": "ce_dice", "class_weights": [0.5, 1, 1],
                  "device": "cpu", "monitor": "val_dice"},
        "eval": {"metric": "test_dice"},
    })


def test_make_segmentation_task_reads_the_recipe() -> None:
    from dltricks.data import load_data

    recipe = _tiny_recipe(patch_size=[16, 16], sw_overlap=0.25)
    bundle = load_data(recipe.data, recipe.seed)
    task = make_segmentation_task(recipe, bundle)
    assert task.num_classes == 3 and task.objective == "ce_dice" and task.class_weights == [0.5, 1, 1]
    assert task.patch_size == (16, 16) and task.overlap == 0.25 and task.hd95
    assert isinstance(bundle.train_source, PatchDataset) and len(bundle.train_source.y) == len(bundle.train[1])
    with pytest.raises(DltricksError, match="class_weights"):
        make_segmentation_task(recipe.patch({"train.class_weights": [1.0, 1.0]}), bundle)


def test_train_a_tiny_patch_recipe_end_to_end(tmp_path, monkeypatch) -> None:
    """Patches for training, a sliding window for evaluation, augmentation on both image and mask."""
    from dltricks.runner import train

    monkeypatch.setenv("DLTRICKS_HOME", str(tmp_path))
    recipe = _tiny_recipe(patch_size=[16, 16], patches_per_epoch=32)
    recipe = recipe.patch({"data.augment.flip": 0.5, "data.augment.rotate": 10.0})
    result = train(recipe, progress=False)
    m = result.metrics
    for key in ("test_dice", "test_iou", "test_dice_1", "test_dice_2", "test_hd95", "val_dice"):
        assert key in m and math.isfinite(m[key])
    assert 0.0 <= m["test_dice"] <= 1.0
    assert len(result.history["val_dice"]) == 2


def test_edge_dice_scores_only_the_border_band():
    from dltricks.loop.segmentation import SegmentationMeter, edge_band

    assert int(edge_band((8, 8), torch.device("cpu")).sum()) == 64 - 36  # a ring one pixel wide
    y = torch.zeros(1, 16, 16, dtype=torch.long)
    y[0, :, :4] = 1  # class 1 along the left border, class 2 in the middle
    y[0, 6:10, 6:10] = 2
    wrong = y.clone()
    wrong[0, 6:10, 6:10] = 0  # the interior object missed: the whole image's Dice drops, the border's not
    meter = SegmentationMeter(3)
    meter.update(torch.nn.functional.one_hot(wrong, 3).movedim(-1, 1).float(), y, torch.tensor(0.0))
    m = meter.compute()
    assert m["edge_dice"] == 1.0 and m["dice"] < 0.6


def test_padding_mode_reaches_every_convolution_and_changes_the_border():
    from dltricks.nn.blocks.conv import set_padding_mode
    from dltricks.nn.layers import BuildError

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    x = torch.randn(1, 1, 6, 6)
    zeros = conv(x)
    reflect = set_padding_mode(conv, "reflect")(x)
    assert torch.allclose(zeros[..., 1:-1, 1:-1], reflect[..., 1:-1, 1:-1])  # the interior is the same
    assert not torch.allclose(zeros[..., 0, :], reflect[..., 0, :])  # the border is not
    with pytest.raises(BuildError, match="padding_mode must be one of"):
        set_padding_mode(conv, "mirror")
