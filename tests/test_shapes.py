"""Synthetic shapes: deterministic, imbalanced, 2D and 3D, with patches when asked; bundled recipes."""

from __future__ import annotations

import pytest
import torch

from dltricks.data import load_data
from dltricks.data.patches import PatchDataset
from dltricks.data.shapes import ShapesSpec, foreground_share, generate
from dltricks.errors import DltricksError
from dltricks.recipe import Recipe


@pytest.mark.parametrize("dims,size", [(2, 32), (3, 16)])
@pytest.mark.parametrize("classes", [2, 3])
def test_generate_shapes_classes_and_imbalance(dims: int, size: int, classes: int) -> None:
    spec = ShapesSpec(dims=dims, size=size, num_classes=classes, channels=2)
    x, y = generate(spec, 12, seed=0)
    assert x.shape == (12, 2, *[size] * dims) and x.dtype == torch.float32
    assert y.shape == (12, *[size] * dims) and y.dtype == torch.long
    assert set(torch.unique(y).tolist()) == set(range(classes))
    share = foreground_share(y)
    assert share[-1] < 0.05 and share[0] > 0.5  # lesions are rare: the imbalance Dice losses address
    # the image carries the labels: lesions differ from their surroundings, the organ from background
    lesion = (y == classes - 1).unsqueeze(1).expand_as(x)
    assert (x[lesion] - x[~lesion].mean()).abs().mean() > 0.3


def test_generation_is_deterministic_by_seed() -> None:
    spec = ShapesSpec(dims=2, size=24, num_classes=3)
    a, b = generate(spec, 5, seed=1), generate(spec, 5, seed=1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], generate(spec, 5, seed=2)[1])
    # chunked generation gives the same first samples whatever n is
    assert torch.equal(generate(spec, 3, seed=1)[1], a[1][:3])


def test_options_change_the_data() -> None:
    none = ShapesSpec(dims=2, size=24, lesions=(0, 0), num_classes=2)
    _, y = generate(none, 6, seed=0)
    assert (y == 0).all()
    _, y = generate(ShapesSpec(dims=2, size=24, lesions=(3, 3), lesion_radius=(0.1, 0.1)), 6, seed=0)
    assert (y == 1).flatten(1).any(1).all()
    quiet = generate(ShapesSpec(dims=2, size=24, noise=0.0, bias_field=0.0), 4, seed=0)[0]
    noisy = generate(ShapesSpec(dims=2, size=24, noise=1.0, bias_field=0.0), 4, seed=0)[0]
    assert (noisy - quiet).std() == pytest.approx(1.0, rel=0.1)


def _recipe(**data) -> Recipe:
    return Recipe.from_dict({"name": "t", "data": {"name": "shapes", "size": 24, "num_train": 20, "num_test": 5,
                                                   **data},
                             "model": {"name": "unet", "channels": [8, 16]}})


def test_load_shapes_bundle_and_val_split() -> None:
    bundle = load_data(_recipe(num_classes=3, val_fraction=0.2).data, seed=0)
    assert bundle.task == "segmentation" and bundle.num_classes == 3
    assert bundle.class_names == ["background", "organ", "lesion"]
    assert len(bundle.train[1]) == 16 and len(bundle.val[1]) == 4 and len(bundle.test[1]) == 5
    assert bundle.train_source is None and bundle.in_shape == (1, 24, 24)
    # the test set does not depend on num_train
    other = load_data(_recipe(num_classes=3, num_train=30).data, seed=0)
    assert torch.equal(bundle.test[1], other.test[1])


def test_patch_size_makes_a_patch_source_from_training_volumes_only() -> None:
    bundle = load_data(_recipe(dims=3, size=16, patch_size=[8, 8, 8], patches_per_epoch=40,
                               val_fraction=0.25).data, seed=0)
    src = bundle.train_source
    assert isinstance(src, PatchDataset) and len(src) == 40
    assert torch.equal(src.y, bundle.train[1])  # validation volumes never become training patches
    x, y = src[0]
    assert x.shape == (1, 8, 8, 8) and y.shape == (8, 8, 8)


def test_bad_shapes_keys_are_one_line_errors() -> None:
    with pytest.raises(DltricksError, match="lesions must be"):
        _recipe(lesions=[3, 1])
    with pytest.raises(DltricksError, match="num_classes = 3 labels the organ"):
        _recipe(num_classes=3, organ=False)
    with pytest.raises(DltricksError, match="data.dims"):
        _recipe(dims=4)
    with pytest.raises(DltricksError, match=r"data.patch_size = \[8\] must have 2 sizes"):
        load_data(_recipe(patch_size=[8]).data)


def test_large_volumes_are_cached(tmp_path, monkeypatch) -> None:
    from dltricks.data import shapes

    monkeypatch.setenv("DLTRICKS_CACHE", str(tmp_path))
    monkeypatch.setattr(shapes, "_CACHE_FROM", 1)
    spec = ShapesSpec(dims=3, size=12, num_classes=3)
    a = shapes.cached_generate(spec, 3, seed=0)
    assert len(list(tmp_path.glob("shapes-*.npz"))) == 1
    b = shapes.cached_generate(spec, 3, seed=0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and b[1].dtype == torch.long


@pytest.mark.parametrize("name", ["seg2d-unet", "seg3d-unet"])
def test_bundled_segmentation_recipes(name: str) -> None:
    from dltricks.recipe import bundled_recipes

    assert bundled_recipes()[name]  # has its one-line description
    r = Recipe.load(name)
    assert r.data.name == "shapes" and r.model.name == "unet" and r.eval.metric == "test_dice"
    if name == "seg3d-unet":
        assert r.data.dims == 3 and r.train.batch_size == 2 and r.model.norm == "group"
