"""User segmentation data: NIfTI folders (nibabel) and NumPy arrays, with one-line errors for bad files."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from dltricks.data import load_data
from dltricks.errors import DltricksError
from dltricks.recipe import Recipe


def _case(rng: np.random.Generator, shape=(12, 12, 8), lesion: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A volume with a bright cube and its label map."""
    label = np.zeros(shape, np.uint8)
    ext = [min(4, s) for s in shape]
    o = [int(rng.integers(0, s - e + 1)) for s, e in zip(shape, ext)]
    label[tuple(slice(a, a + e) for a, e in zip(o, ext))] = lesion
    image = 100 + 50 * label + rng.normal(0, 5, shape)
    return image.astype(np.float32), label


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


def _nifti_folder(root: Path, n: int = 6, shape=(12, 12, 8), test: int = 0) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        image, label = _case(rng, shape)
        _save(root / "imagesTr" / f"case{i:02d}.nii.gz", image)
        _save(root / "labelsTr" / f"case{i:02d}.nii.gz", label)
    for i in range(test):
        image, label = _case(rng, shape)
        _save(root / "imagesTs" / f"test{i:02d}.nii.gz", image)
        _save(root / "labelsTs" / f"test{i:02d}.nii.gz", label)
    return root


def _recipe(data: dict, **train) -> Recipe:
    return Recipe.from_dict({
        "name": "user-seg", "data": {"val_fraction": 0.2, **data},
        "model": {"name": "unet", "channels": [8, 16], "norm": "group"},
        "train": {"epochs": 2, "batch_size": 2, "lr": 3e-3, "loss": "ce_dice", "device": "cpu", **train},
        "eval": {"metric": "test_dice"},
    })


# ---- NIfTI ----------------------------------------------------------------------------------------

def test_nifti_folder_loads_with_split_and_normalisation(tmp_path: Path) -> None:
    root = _nifti_folder(tmp_path / "ds", n=6)
    bundle = load_data(_recipe({"name": "nifti", "root": str(root)}).data)
    x, y = bundle.train
    assert bundle.task == "segmentation" and bundle.num_classes == 2
    assert x.shape[1:] == (1, 12, 12, 8) and y.shape[1:] == (12, 12, 8) and y.dtype == torch.long
    assert len(y) + len(bundle.val[1]) + len(bundle.test[1]) == 6
    assert len(bundle.test[1]) == round(6 * 0.2)
    assert x[0].mean().abs() < 1e-4 and x[0].std() == pytest.approx(1, abs=1e-3)  # z-scored per case
    assert set(torch.unique(y).tolist()) == {0, 1}
    # a bright cube is where its label says it is
    assert x[y.unsqueeze(1).expand_as(x) == 1].mean() > x[y.unsqueeze(1).expand_as(x) == 0].mean() + 1


def test_nifti_folder_trains_end_to_end(tmp_path: Path, monkeypatch) -> None:
    from dltricks.runner import train

    monkeypatch.setenv("DLTRICKS_HOME", str(tmp_path / "runs"))
    root = _nifti_folder(tmp_path / "ds", n=6, test=2)
    result = train(_recipe({"name": "nifti", "root": str(root), "patch_size": [8, 8, 8]}), progress=False)
    assert result.status == "completed"
    assert math.isfinite(result.metrics["test_dice"]) and "test_dice_1" in result.metrics


def test_labelled_test_folder_is_used_as_the_test_set(tmp_path: Path) -> None:
    root = _nifti_folder(tmp_path / "ds", n=5, test=3)
    bundle = load_data(_recipe({"name": "nifti", "root": str(root)}).data)
    assert len(bundle.test[1]) == 3 and len(bundle.train[1]) + len(bundle.val[1]) == 5


def test_multichannel_layouts(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    root = tmp_path / "nnunet"
    for i in range(4):  # nnU-Net: one file per channel
        image, label = _case(rng)
        _save(root / "imagesTr" / f"c{i}_0000.nii.gz", image)
        _save(root / "imagesTr" / f"c{i}_0001.nii.gz", -image)
        _save(root / "labelsTr" / f"c{i}.nii.gz", label)
    bundle = load_data(_recipe({"name": "nifti", "root": str(root), "val_fraction": 0.0}).data)
    assert bundle.train[0].shape[1] == 2
    x = bundle.train[0]
    assert torch.allclose(x[:, 0], -x[:, 1], atol=1e-4)  # channel order kept
    root = tmp_path / "decathlon"
    for i in range(3):  # Decathlon: one 4D file, channels last
        image, label = _case(rng)
        _save(root / "imagesTr" / f"c{i}.nii.gz", np.stack([image, image * 2, image * 3], -1))
        _save(root / "labelsTr" / f"c{i}.nii.gz", label)
    bundle = load_data(_recipe({"name": "nifti", "root": str(root), "val_fraction": 0.0}).data)
    assert bundle.train[0].shape[1:] == (3, 12, 12, 8)


def test_2d_nifti_slices(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for i in range(4):
        image, label = _case(rng, (16, 16, 1))
        _save(tmp_path / "imagesTr" / f"s{i}.nii", image)
        _save(tmp_path / "labelsTr" / f"s{i}.nii", label)
    bundle = load_data(_recipe({"name": "nifti", "root": str(tmp_path), "val_fraction": 0.0}).data)
    assert bundle.train[0].shape[1:] == (1, 16, 16) and bundle.train[1].shape[1:] == (16, 16)


def test_nifti_missing_label_names_the_file(tmp_path: Path) -> None:
    root = _nifti_folder(tmp_path / "ds", n=3)
    (root / "labelsTr" / "case01.nii.gz").unlink()
    with pytest.raises(DltricksError, match=r"no label for image .*case01\.nii\.gz.*labelsTr"):
        load_data(_recipe({"name": "nifti", "root": str(root)}).data)


def test_nifti_mismatched_shapes_name_the_case(tmp_path: Path) -> None:
    root = _nifti_folder(tmp_path / "ds", n=3)
    _save(root / "labelsTr" / "case02.nii.gz", np.zeros((12, 12, 7), np.uint8))
    with pytest.raises(DltricksError, match=r"case02.*image shape \(12, 12, 8\) does not match label shape"):
        load_data(_recipe({"name": "nifti", "root": str(root)}).data)


def test_nifti_label_values_outside_range(tmp_path: Path) -> None:
    root = _nifti_folder(tmp_path / "ds", n=3)
    bad = np.zeros((12, 12, 8), np.int16)
    bad[0, 0, 0] = 5
    _save(root / "labelsTr" / "case01.nii.gz", bad)
    with pytest.raises(DltricksError, match=r"case01.*label values \[5\] outside 0\.\.1"):
        load_data(_recipe({"name": "nifti", "root": str(root), "num_classes": 2}).data)
    bad[0, 0, 0] = -1
    _save(root / "labelsTr" / "case01.nii.gz", bad)
    with pytest.raises(DltricksError, match=r"label values \[-1\]"):
        load_data(_recipe({"name": "nifti", "root": str(root)}).data)
    _save(root / "labelsTr" / "case01.nii.gz", np.full((12, 12, 8), 0.5, np.float32))
    with pytest.raises(DltricksError, match="whole class numbers"):
        load_data(_recipe({"name": "nifti", "root": str(root)}).data)


def test_nifti_cases_of_different_sizes_need_data_size(tmp_path: Path) -> None:
    root = _nifti_folder(tmp_path / "ds", n=3)
    image, label = _case(np.random.default_rng(3), (16, 14, 8))
    _save(root / "imagesTr" / "big.nii.gz", image)
    _save(root / "labelsTr" / "big.nii.gz", label)
    with pytest.raises(DltricksError, match="different shapes.*set data.size"):
        load_data(_recipe({"name": "nifti", "root": str(root), "val_fraction": 0.0}).data)
    bundle = load_data(_recipe({"name": "nifti", "root": str(root), "size": [12, 12, 8],
                                "val_fraction": 0.0}).data)
    assert bundle.train[1].shape[1:] == (12, 12, 8)
    assert set(torch.unique(bundle.train[1]).tolist()) == {0, 1}  # nearest resampling keeps labels


def test_nifti_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DltricksError, match="data.root.*not found"):
        load_data(_recipe({"name": "nifti", "root": str(tmp_path / "nope")}).data)
    (tmp_path / "imagesTr").mkdir()
    with pytest.raises(DltricksError, match="no .nii.gz or .nii files"):
        load_data(_recipe({"name": "nifti", "root": str(tmp_path)}).data)


# ---- arrays ---------------------------------------------------------------------------------------

def _arrays(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    pairs = [_case(rng, (10, 10, 6), lesion=1 + i % 2) for i in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def test_arrays_npy_pair_and_npz(tmp_path: Path) -> None:
    x, y = _arrays()
    np.save(tmp_path / "x.npy", x[:, None])       # (N, C, *spatial)
    np.save(tmp_path / "y.npy", y)
    bundle = load_data(_recipe({"name": "arrays", "images": str(tmp_path / "x.npy"),
                                "labels": str(tmp_path / "y.npy"), "normalize": "none"}).data)
    assert bundle.num_classes == 3 and bundle.train[0].shape[1:] == (1, 10, 10, 6)
    np.savez(tmp_path / "d.npz", images=x, labels=y, other=y)  # (N, *spatial): channel added
    bundle2 = load_data(_recipe({"name": "arrays", "images": str(tmp_path / "d.npz"), "normalize": "none"}).data)
    assert torch.equal(bundle.test[0], bundle2.test[0]) and torch.equal(bundle.train[1], bundle2.train[1])


def test_arrays_folder_of_cases(tmp_path: Path) -> None:
    x, y = _arrays(4)
    for i in range(4):
        (tmp_path / "img").mkdir(exist_ok=True)
        (tmp_path / "lab").mkdir(exist_ok=True)
        np.save(tmp_path / "img" / f"p{i}.npy", x[i])
        np.savez(tmp_path / "lab" / f"p{i}.npz", label=y[i])
    bundle = load_data(_recipe({"name": "arrays", "images": str(tmp_path / "img"),
                                "labels": str(tmp_path / "lab"), "val_fraction": 0.0}).data)
    assert len(bundle.train[1]) + len(bundle.test[1]) == 4
    (tmp_path / "lab" / "p2.npz").unlink()
    with pytest.raises(DltricksError, match=r"no label for image .*p2\.npy"):
        load_data(_recipe({"name": "arrays", "images": str(tmp_path / "img"),
                           "labels": str(tmp_path / "lab")}).data)


def test_arrays_errors(tmp_path: Path) -> None:
    x, y = _arrays()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y5.npy", y[:5])
    with pytest.raises(DltricksError, match="6 images but 5 labels"):
        load_data(_recipe({"name": "arrays", "images": str(tmp_path / "x.npy"),
                           "labels": str(tmp_path / "y5.npy")}).data)
    np.save(tmp_path / "ybad.npy", y[:, :9])
    with pytest.raises(DltricksError, match=r"image shape \(10, 10, 6\) does not match label shape \(9, 10, 6\)"):
        load_data(_recipe({"name": "arrays", "images": str(tmp_path / "x.npy"),
                           "labels": str(tmp_path / "ybad.npy")}).data)
    with pytest.raises(DltricksError, match="set data.labels"):
        load_data(_recipe({"name": "arrays", "images": str(tmp_path / "x.npy")}).data)
    with pytest.raises(DltricksError, match="not found"):
        load_data(_recipe({"name": "arrays", "images": str(tmp_path / "missing.npy"),
                           "labels": str(tmp_path / "y5.npy")}).data)
    np.save(tmp_path / "y.npy", y)
    with pytest.raises(DltricksError, match=r"outside 0\.\.1"):
        load_data(_recipe({"name": "arrays", "images": str(tmp_path / "x.npy"),
                           "labels": str(tmp_path / "y.npy"), "num_classes": 2}).data)


def test_missing_root_key_is_a_recipe_error() -> None:
    with pytest.raises(DltricksError, match="missing key data.root"):
        _recipe({"name": "nifti"})
