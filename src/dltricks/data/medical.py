"""Your own segmentation data: NIfTI image/label folders (``data.name = "nifti"``) and NumPy arrays
(``data.name = "arrays"``).

NIfTI folder layout (that of the Medical Segmentation Decathlon and nnU-Net)::

    root/
      imagesTr/case01.nii.gz        one image per case: (X, Y, Z), or (X, Y, Z, C) with channels last
      labelsTr/case01.nii.gz        its label map (X, Y, Z), integer classes 0 (background) .. K-1
      imagesTs/ labelsTs/           optional labelled test set; without it data.test_fraction of the
                                    training cases is held out (fixed by data.split_seed)

Multi-modal cases may instead be split over files ``case01_0000.nii.gz``, ``case01_0001.nii.gz`` (one
channel each, nnU-Net style) with the label ``labelsTr/case01.nii.gz``. 2D images are ``(X, Y)`` or
``(X, Y, 1)``. Labels are matched to images by file name.

Arrays: ``data.images`` and ``data.labels`` each name a ``.npy`` file holding a stack (images
(N, *spatial) or (N, C, *spatial), labels (N, *spatial)), or a folder of per-case ``.npy``/``.npz`` files
matched by name (image (*spatial) or (C, *spatial)); or ``data.images`` names one ``.npz`` holding
``images`` and ``labels`` (also ``x``/``y``) and ``data.labels`` stays empty.

Cases of different shapes need ``data.size`` (resampled: image linearly, label by nearest neighbour).
Images are normalised per case and channel (``data.normalize``, z-score by default, as nnU-Net does
for MR).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from dltricks.data.bundle import DataBundle
from dltricks.data.patches import SegDataSpec, check_labels, segmentation_bundle
from dltricks.data.registry import register_dataset
from dltricks.errors import DltricksError
from dltricks.recipe import PATH

__all__ = ["ArraysSpec", "NiftiSpec", "load_arrays", "load_nifti", "read_arrays", "read_nifti_folder"]

Case = tuple[np.ndarray, np.ndarray, str]  # image (C, *spatial), label (*spatial), name for messages
_NIFTI = (".nii.gz", ".nii")
_CHANNEL = re.compile(r"^(.*)_(\d{4})$")  # nnU-Net's case_0000 channel suffix


class _UserSegSpec(SegDataSpec):
    num_classes: int = Field(0, ge=0, description="classes incl. background; 0 = largest label + 1")
    class_names: list[str] = Field(default_factory=list)
    size: list[int] = Field(default_factory=list, description="resample every case to this spatial size; "
                                                              "[] = keep (all cases must then match)")
    normalize: Literal["zscore", "minmax", "none"] = "zscore"
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="cases held out for test when there is "
                                                                  "no labelled test set")
    split_seed: int = Field(0, ge=0, description="fixes the train/test split across runs")


class NiftiSpec(_UserSegSpec):
    name: str = "nifti"
    root: str = Field(description="folder holding imagesTr/ and labelsTr/", json_schema_extra=PATH)
    images: str = "imagesTr"
    labels: str = "labelsTr"
    test_images: str = "imagesTs"
    test_labels: str = "labelsTs"


class ArraysSpec(_UserSegSpec):
    name: str = "arrays"
    images: str = Field(description=".npy stack, .npz with images and labels, or a folder of per-case files",
                        json_schema_extra=PATH)
    labels: str = Field("", description=".npy stack or folder; empty when images is an .npz holding both",
                        json_schema_extra=PATH)
    test_images: str = Field("", json_schema_extra=PATH)
    test_labels: str = Field("", json_schema_extra=PATH)


# ---- reading ------------------------------------------------------------------------------------

def _as_labels(a: np.ndarray, where: str) -> np.ndarray:
    """Integer label map; floats are accepted only when they hold whole numbers (NIfTI often stores
    labels as float)."""
    if a.dtype.kind == "b":
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
            bad = a[~np.isfinite(a) | (a != np.round(a))].flat[0]
            raise DltricksError(f"{where}: label values must be whole class numbers, found {bad!r}; "
                                "is this an image in the labels folder?")
    elif a.dtype.kind not in "iu":
        raise DltricksError(f"{where}: labels must be integer class numbers, got dtype {a.dtype}")
    return a.astype(np.int64)


def _pair(image: np.ndarray, label: np.ndarray, where: str, channels_last: bool) -> Case:
    """Bring one case to image (C, *spatial), label (*spatial), or say why the shapes do not fit."""
    if image.ndim == 5 and image.shape[3] == 1:  # some tools write (X, Y, Z, 1, C)
        image = image[:, :, :, 0]
    if image.shape == label.shape:
        image = image[None]
    elif image.ndim == label.ndim + 1 and channels_last and image.shape[:-1] == label.shape:
        image = np.moveaxis(image, -1, 0)
    elif image.ndim == label.ndim + 1 and not channels_last and image.shape[1:] == label.shape:
        pass
    else:
        layout = "(*spatial) or (*spatial, C)" if channels_last else "(*spatial) or (C, *spatial)"
        raise DltricksError(f"{where}: image shape {image.shape} does not match label shape {label.shape}; "
                            f"expected image {layout} with the label's spatial shape")
    if label.ndim == 3 and label.shape[-1] == 1:  # a 2D image stored as one slice
        image, label = image[..., 0], label[..., 0]
    if label.ndim not in (1, 2, 3):
        raise DltricksError(f"{where}: labels must have 1-3 spatial dims, got shape {label.shape}")
    return image.astype(np.float32), label, where


def _load_nifti(path: Path) -> np.ndarray:
    import zlib

    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        return np.asanyarray(nib.load(str(path)).dataobj)
    except (ImageFileError, OSError, ValueError, EOFError, zlib.error) as e:  # not NIfTI, truncated, bad gzip
        raise DltricksError(f"cannot read NIfTI file {path}: {e}") from None


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".npy", ".npz"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _files(folder: Path, exts: tuple[str, ...], what: str) -> list[Path]:
    if not folder.is_dir():
        raise DltricksError(f"{what}: folder {folder} not found")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(exts) and not p.name.startswith("."))
    if not files:
        raise DltricksError(f"{what}: no {' or '.join(exts)} files in {folder}")
    return files


def read_nifti_folder(images: Path, labels: Path) -> list[Case]:
    """Every case of an images/labels folder pair, matched by name (``case_0000`` = channel 0 of ``case``)."""
    groups: dict[str, dict[int, Path]] = {}
    for f in _files(images, _NIFTI, "nifti images"):
        stem = _stem(f)
        m = _CHANNEL.match(stem)
        case, channel = (m.group(1), int(m.group(2))) if m else (stem, -1)
        groups.setdefault(case, {})[channel] = f
    cases = []
    for case, channels in sorted(groups.items()):
        first = channels[min(channels)]
        label_path = next((labels / f"{case}{ext}" for ext in _NIFTI if (labels / f"{case}{ext}").exists()), None)
        if label_path is None:
            raise DltricksError(f"nifti: no label for image {first}: expected {labels / (case + '.nii.gz')} "
                                "(labels are matched to images by file name)")
        if -1 in channels and len(channels) > 1:
            raise DltricksError(f"nifti: case {case} has both {channels[-1].name} and per-channel files "
                                f"{case}_NNNN; use one layout")
        if -1 in channels:
            image = _load_nifti(channels[-1])
        else:
            order = sorted(channels)
            if order != list(range(len(order))):
                raise DltricksError(f"nifti: case {case} has channels {order}; expected _0000 to "
                                    f"_{len(order) - 1:04d} with none missing")
            arrays = [_load_nifti(channels[c]) for c in order]
            for c, a in zip(order, arrays):
                if a.shape != arrays[0].shape:
                    raise DltricksError(f"nifti: {channels[c]} has shape {a.shape} but {channels[0].name} has "
                                        f"{arrays[0].shape}; channels of a case must match")
            image = np.stack(arrays, axis=-1) if len(arrays) > 1 else arrays[0]
        where = f"{first} / {label_path}"
        label = _as_labels(_load_nifti(label_path), str(label_path))
        cases.append(_pair(np.asarray(image), label, where, channels_last=True))
    return cases


def _load_array(path: Path, keys: tuple[str, ...], what: str) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DltricksError(f"cannot read {what} {path}: {e}") from None
    if isinstance(data, np.ndarray):
        return data
    with data:
        names = list(data.keys())
        if len(names) == 1:
            return data[names[0]]
        for k in keys:
            if k in names:
                return data[k]
    raise DltricksError(f"{path}: no {what} array; the .npz holds {', '.join(names)}, expected one of "
                        f"{', '.join(keys)}")


_IMAGE_KEYS = ("images", "image", "x")
_LABEL_KEYS = ("labels", "label", "y", "masks", "mask")


def read_arrays(images: str, labels: str, what: str) -> list[Case]:
    """Cases from a stacked .npy/.npz pair, one .npz holding both, or two folders of per-case files."""
    img_path, lab_path = Path(images).expanduser(), Path(labels).expanduser() if labels else None
    if img_path.is_dir():
        if lab_path is None or not lab_path.is_dir():
            raise DltricksError(f"arrays: {what} images {img_path} is a folder, so labels must be one too "
                                f"(got {labels!r})")
        by_name = {_stem(f): f for f in _files(lab_path, (".npy", ".npz"), f"arrays {what} labels")}
        cases = []
        for f in _files(img_path, (".npy", ".npz"), f"arrays {what} images"):
            lf = by_name.get(_stem(f))
            if lf is None:
                raise DltricksError(f"arrays: no label for image {f}: expected {lab_path / _stem(f)}.npy or .npz "
                                    "(labels are matched to images by file name)")
            label = _as_labels(_load_array(lf, _LABEL_KEYS, "label"), str(lf))
            cases.append(_pair(_load_array(f, _IMAGE_KEYS, "image"), label, f"{f} / {lf}", channels_last=False))
        return cases
    if not img_path.is_file():
        raise DltricksError(f"arrays: {what} images file {img_path} not found")
    x = _load_array(img_path, _IMAGE_KEYS, "image")
    if lab_path is None:
        if img_path.suffix != ".npz":
            raise DltricksError(f"arrays: {img_path} holds images only; set data.labels to the labels .npy, "
                                "or give one .npz holding images and labels")
        y, where = _load_array(img_path, _LABEL_KEYS, "label"), str(img_path)
    else:
        if not lab_path.is_file():
            raise DltricksError(f"arrays: {what} labels file {lab_path} not found")
        y, where = _load_array(lab_path, _LABEL_KEYS, "label"), f"{img_path} / {lab_path}"
    y = _as_labels(y, where)
    if len(x) != len(y):
        raise DltricksError(f"{where}: {len(x)} images but {len(y)} labels; each image needs its label map")
    return [_pair(x[i], y[i], f"{where} (case {i})", channels_last=False) for i in range(len(y))]


# ---- from cases to tensors ----------------------------------------------------------------------

def _normalise(x: torch.Tensor, how: str) -> torch.Tensor:
    """Per case and channel: ``x`` (C, *spatial)."""
    if how == "none":
        return x
    flat = x.flatten(1)
    if how == "zscore":
        mean, std = flat.mean(1), flat.std(1).clamp_min(1e-8)
        return (x - mean.view(-1, *[1] * (x.dim() - 1))) / std.view(-1, *[1] * (x.dim() - 1))
    lo, hi = flat.amin(1), flat.amax(1)
    view = (-1, *[1] * (x.dim() - 1))
    return (x - lo.view(view)) / (hi - lo).clamp_min(1e-8).view(view)


def stack_cases(cases: list[Case], spec: _UserSegSpec, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, *spatial) float images and (N, *spatial) long labels, resampled to ``spec.size`` if set."""
    dims = {c[1].ndim for c in cases}
    if len(dims) > 1:
        raise DltricksError(f"{what}: cases mix 2D and 3D ({', '.join(c[2] for c in cases[:2])} ...)")
    chans = {c[0].shape[0]: c[2] for c in cases}
    if len(chans) > 1:
        raise DltricksError(f"{what}: cases have different channel counts: "
                            + ", ".join(f"{n} in {w}" for n, w in chans.items()))
    d = dims.pop()
    if spec.size and len(spec.size) != d:
        raise DltricksError(f"data.size = {spec.size} must have {d} sizes for {d}D images")
    xs, ys = [], []
    for image, label, _where in cases:
        x = _normalise(torch.from_numpy(image), spec.normalize)
        y = torch.from_numpy(label)
        if spec.size and list(y.shape) != list(spec.size):
            mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[d]
            x = F.interpolate(x[None], size=spec.size, mode=mode, align_corners=False)[0]
            y = F.interpolate(y[None, None].float(), size=spec.size, mode="nearest-exact")[0, 0].long()
        xs.append(x)
        ys.append(y)
    _same_shape([(tuple(y.shape), w) for y, (_, _, w) in zip(ys, cases)], what)
    return torch.stack(xs), torch.stack(ys)


def _same_shape(shapes: list[tuple[tuple[int, ...], str]], what: str) -> None:
    first = {}
    for shape, where in shapes:
        first.setdefault(shape, where)
    if len(first) > 1:
        (s1, w1), (s2, w2) = list(first.items())[:2]
        raise DltricksError(f"{what}: cases have different shapes ({s1} in {w1}, {s2} in {w2}); set data.size "
                            f"= [{', '.join(map(str, s1))}] (say) to resample them to one size")


def _finish(spec: _UserSegSpec, train_cases: list[Case], test_cases: list[Case] | None, seed: int,
            what: str) -> DataBundle:
    if not spec.size:  # one message for every case, before any split hides which set a case went to
        _same_shape([(c[1].shape, c[2]) for c in train_cases + (test_cases or [])], what)
    if test_cases is None:
        if len(train_cases) < 2:
            raise DltricksError(f"{what}: {len(train_cases)} case(s) found; need at least 2 to hold out a test set")
        g = torch.Generator().manual_seed(spec.split_seed)
        order = torch.randperm(len(train_cases), generator=g).tolist()
        n_test = min(len(order) - 1, max(1, round(len(order) * spec.test_fraction)))
        test_cases = [train_cases[i] for i in sorted(order[:n_test])]
        train_cases = [train_cases[i] for i in sorted(order[n_test:])]
    train = stack_cases(train_cases, spec, what)
    test = stack_cases(test_cases, spec, what)
    if train[0].shape[1] != test[0].shape[1]:
        raise DltricksError(f"{what}: test images have {test[0].shape[1]} channels but training images have "
                            f"{train[0].shape[1]}")
    num_classes = spec.num_classes or max(2, int(max(train[1].max(), test[1].max())) + 1)
    for (_, label, where) in train_cases + test_cases:
        check_labels(torch.from_numpy(label), num_classes, where)
    names = spec.class_names or None
    if names is not None and len(names) != num_classes:
        raise DltricksError(f"data.class_names has {len(names)} names for {num_classes} classes")
    return segmentation_bundle(spec, train, test, seed, num_classes, names)


@register_dataset("nifti", NiftiSpec)
def load_nifti(spec: NiftiSpec, seed: int) -> DataBundle:
    root = Path(spec.root).expanduser()
    if not root.is_dir():
        raise DltricksError(f"data.root = {spec.root!r}: folder not found")
    train = read_nifti_folder(root / spec.images, root / spec.labels)
    test = None
    ti, tl = root / spec.test_images, root / spec.test_labels
    if ti.is_dir() and tl.is_dir() and any(tl.iterdir()):
        test = read_nifti_folder(ti, tl)
    return _finish(spec, train, test, seed, f"nifti {root}")


@register_dataset("arrays", ArraysSpec)
def load_arrays(spec: ArraysSpec, seed: int) -> DataBundle:
    train = read_arrays(spec.images, spec.labels, "train")
    test = None
    if spec.test_images:
        test = read_arrays(spec.test_images, spec.test_labels, "test")
    elif spec.test_labels:
        raise DltricksError("data.test_labels is set but data.test_images is not")
    return _finish(spec, train, test, seed, f"arrays {spec.images}")
