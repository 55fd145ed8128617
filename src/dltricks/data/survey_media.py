"""The survey of folders (:func:`dltricks.data.survey.survey`): images or WAV files in one sub-folder per class,
and NIfTI datasets (``imagesTr/``, ``labelsTr/``).

Every file's header is read (sizes, modes, rates, lengths) and every file's bytes hashed (duplicates); pixel and
sample values come from up to :data:`DECODE` files spread over the classes, so a survey of thousands of files
takes seconds. Images are read with Pillow, WAV files with :mod:`scipy.io.wavfile`, volumes with nibabel.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from dltricks.data.survey_checks import Survey, class_problems, content_key, duplicate_problems, examples, most_common
from dltricks.errors import DltricksError

__all__ = ["IMAGE_SUFFIXES", "SOUND_SUFFIXES", "survey_folder", "survey_nifti", "DECODE", "MAX_SIDE"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # those the images loader reads
SOUND_SUFFIXES = (".wav",)
_NIFTI = (".nii.gz", ".nii")
DECODE = 200  # files decoded for value ranges (all of them below this)
MAX_SIDE = 64  # a starter recipe's images: the longer side at most this (a small CNN trains on the CPU)
MAX_VOXELS_SIDE = 64  # and a volume's longest axis
_GREY = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
_TEST_NAMES = ("test", "testing", "val", "valid", "validation")
_TRAIN_NAMES = ("train", "training")


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(suffixes)
                  and not p.name.startswith("."))


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def survey_folder(root: Path) -> Survey:
    """A folder: NIfTI dataset, images or sounds in class folders (or train/ and test/ each holding them)."""
    if any((root / d).is_dir() for d in ("imagesTr", "labelsTr")) or root.name in ("imagesTr", "labelsTr"):
        return survey_nifti(root)
    subs = _subfolders(root)
    train = next((s for s in subs if s.name.lower() in _TRAIN_NAMES), None)
    test = next((s for s in subs if s.name.lower() in _TEST_NAMES), None)
    classes_root = train if train is not None and _subfolders(train) else root
    counts = Counter()
    for folder in [classes_root, *_subfolders(classes_root)]:
        for p in folder.iterdir():
            name = p.name.lower()
            if p.is_file():
                counts["images" if name.endswith(IMAGE_SUFFIXES) else "sounds" if name.endswith(SOUND_SUFFIXES)
                       else "nifti" if name.endswith(_NIFTI) else "other"] += 1
    counts.pop("other", None)
    if not counts:
        raise DltricksError(f"{root} holds no images (PNG, JPEG, BMP, TIFF), WAV files or NIfTI volumes here or "
                            "one folder down; dltricks init surveys a folder with one sub-folder per class")
    kind = counts.most_common(1)[0][0]
    if kind == "nifti":
        return survey_nifti(root)
    suffixes = IMAGE_SUFFIXES if kind == "images" else SOUND_SUFFIXES
    loose = _files(classes_root, suffixes)
    classes = {d.name: _files(d, suffixes) for d in _subfolders(classes_root)}
    if not any(classes.values()):
        raise DltricksError(f"{root} holds {len(loose)} {kind} but no class sub-folders: put each class's files in "
                            f"a sub-folder named after it ({root / 'cat' / 'x'}, {root / 'dog' / 'y'})")
    problems = []
    if loose:
        problems.append(f"{len(loose)} {kind} directly in {classes_root.name}/ belong to no class "
                        f"({examples([p.name for p in loose])}): move them into a class folder")
    empty = [c for c, fs in classes.items() if not fs]
    if empty:
        problems.append(f"{len(empty)} class folder{'s' if len(empty) > 1 else ''} without {kind} "
                        f"({examples(empty)}): remove or fill {'them' if len(empty) > 1 else 'it'}")
    classes = {c: fs for c, fs in classes.items() if fs}
    test_files = []
    if test is not None and classes_root is train:
        test_files = [f for d in _subfolders(test) for f in _files(d, suffixes)]
    reader = _survey_images if kind == "images" else _survey_sounds
    return reader(root, classes_root, classes, test if test_files else None, len(test_files), problems)


def _spread(files: list[Path], n: int) -> list[Path]:
    """Up to ``n`` files evenly spread over the list."""
    if len(files) <= n:
        return files
    step = len(files) / n
    return [files[int(i * step)] for i in range(n)]


def _read_all(classes: dict[str, list[Path]], root: Path):
    """(file, class, bytes) of every file; unreadable files are named, not raised."""
    for c, files in classes.items():
        for f in files:
            try:
                yield f, c, f.read_bytes()
            except OSError as e:
                yield f, c, e


def _readable(classes: dict[str, list[Path]], labels: list[str]) -> dict[str, int]:
    """Readable files per class, in the classes' order."""
    counts = Counter(labels)
    return {c: counts[c] for c in classes}


def _common_problems(keys, labels, names, classes, unreadable, what) -> list[str]:
    out = []
    if unreadable:
        out.append(f"{len(unreadable)} unreadable {what} ({examples(unreadable)}): remove or replace them "
                   "(the loader stops at the first)")
    out += duplicate_problems(keys, labels, names, what)
    out += class_problems({c: len(fs) for c, fs in classes.items()}, what.rstrip("s"))
    return out


# ---- images -------------------------------------------------------------------------------------------

def _survey_images(root: Path, classes_root: Path, classes: dict[str, list[Path]], test: Path | None,
                   n_test: int, problems: list[str]) -> Survey:
    from PIL import Image, UnidentifiedImageError

    sizes, modes, keys, labels, names, unreadable = Counter(), Counter(), [], [], [], []
    decode = {f for fs in classes.values() for f in _spread(fs, max(1, DECODE // len(classes)))}
    lo, hi, blank = math.inf, -math.inf, []
    for f, c, data in _read_all(classes, root):
        rel = f"{c}/{f.name}"
        if isinstance(data, OSError):
            unreadable.append(rel)
            continue
        try:
            with Image.open(io.BytesIO(data)) as im:
                size, mode = (im.height, im.width), im.mode
                if f in decode:
                    a = np.asarray(im.convert("L" if im.mode in _GREY else "RGB"))
                    lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
                    if a.min() == a.max():
                        blank.append(rel)
                else:
                    im.verify()  # a truncated or corrupt file fails here without decoding every pixel
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            unreadable.append(f"{rel}: {str(e)[:60]}")
            continue
        sizes[size] += 1
        modes[mode] += 1
        keys.append(content_key(data))
        labels.append(c)
        names.append(rel)
    problems += _common_problems(keys, labels, names, classes, unreadable, "images")
    if blank:
        problems.append(f"{len(blank)} blank images (one value everywhere, e.g. {examples(blank)}): check them")
    if not sizes:
        raise DltricksError(f"{root}: none of its {sum(map(len, classes.values()))} images could be read "
                            f"({examples(unreadable)})")
    grey = all(m in _GREY for m in modes)
    channels = 1 if grey else 3
    h, w = most_common(list(sizes.elements()))
    scale = min(1.0, MAX_SIDE / max(h, w))
    size = [max(1, round(h * scale)), max(1, round(w * scale))]
    (h0, w0), (h1, w1) = min(sizes), max(sizes)
    facts = [("sizes", f"{h}x{w} (height x width)" + (" for all" if len(sizes) == 1 else
                                                       f" most often; {len(sizes)} sizes from {h0}x{w0} to {h1}x{w1}")),
             ("colour", ", ".join(f"{m} {n}" for m, n in modes.most_common()) + (" (grey)" if grey else
                                                                                 " (read as RGB)"))]
    if math.isfinite(lo):
        facts.append(("values", f"{lo:.0f} .. {hi:.0f} (pixels of {len(decode)} images)"))
    n = sum(sizes.values())
    data: dict[str, Any] = {"name": "images", "root": classes_root, "size": size, "channels": channels}
    notes = {"root": "one sub-folder per class",
             "size": "height, width every image is resized to" + (f" (yours are {h}x{w}: smaller trains faster "
                                                                  "on a CPU)" if scale < 1 else ""),
             "channels": "1 = grey, 3 = RGB (other files are converted)"}
    if len(sizes) > 1:
        notes["size"] += "; other shapes are cropped to it (data.resize: crop, pad or stretch)"
    if unreadable:
        data["skip_corrupt"] = True
        notes["skip_corrupt"] = f"leave out the {len(unreadable)} unreadable files (and count them)"
    if test is not None:
        data["test_root"] = test
        notes["test_root"] = "the test images, in the same class folders"
    return Survey(root, "images", f"a folder of {n} images in {len(classes)} class folders",
                  "classification", n, (channels, *size), _readable(classes, labels), n_test, facts,
                  problems, data, notes)


# ---- sounds -------------------------------------------------------------------------------------------

def _read_wav(data: bytes) -> tuple[int, np.ndarray]:
    from scipy.io import wavfile

    return wavfile.read(io.BytesIO(data))


def _survey_sounds(root: Path, classes_root: Path, classes: dict[str, list[Path]], test: Path | None,
                   n_test: int, problems: list[str]) -> Survey:
    rates, chans, lengths, keys, labels, names, unreadable, silent = Counter(), Counter(), [], [], [], [], [], []
    lo, hi, dtypes = math.inf, -math.inf, Counter()
    for f, c, data in _read_all(classes, root):
        rel = f"{c}/{f.name}"
        if isinstance(data, OSError):
            unreadable.append(rel)
            continue
        try:
            rate, a = _read_wav(data)
        except (ValueError, OSError, EOFError, TypeError) as e:
            unreadable.append(f"{rel}: {str(e)[:60]}")
            continue
        rates[rate] += 1
        chans[1 if a.ndim == 1 else a.shape[1]] += 1
        lengths.append(len(a))
        dtypes[str(a.dtype)] += 1
        if a.size:
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
            if a.min() == a.max():
                silent.append(rel)
        keys.append(content_key(data))
        labels.append(c)
        names.append(rel)
    problems += _common_problems(keys, labels, names, classes, unreadable, "sound files")
    if not lengths:
        raise DltricksError(f"{root}: none of its {sum(map(len, classes.values()))} WAV files could be read "
                            f"({examples(unreadable)})")
    if silent:
        problems.append(f"{len(silent)} silent files (one value throughout, e.g. {examples(silent)}): check them")
    rate = most_common(list(rates.elements()))
    if len(rates) > 1:
        others = ", ".join(f"{r} Hz ({n})" for r, n in rates.most_common()[1:])
        problems.append(f"sample rates differ: {rate} Hz in {rates[rate]} files, {others}: the recipe reads "
                        f"{rate} Hz and the loader refuses the others (resample them, or data.skip_corrupt = true "
                        "leaves them out)")
    channels = most_common(list(chans.elements()))
    if len(chans) > 1:
        problems.append(f"channels differ: {', '.join(f'{n} files with {c}' for c, n in sorted(chans.items()))}; "
                        f"the recipe reads {channels} and the loader refuses the others (convert them)")
    length = int(np.median(lengths))
    facts = [("rate", ", ".join(f"{r} Hz ({n})" for r, n in rates.most_common())),
             ("lengths", f"{min(lengths)} .. {max(lengths)} samples, median {length} ({length / rate:.2f} s)"),
             ("values", f"{lo:.4g} .. {hi:.4g} ({', '.join(dtypes)})")]
    n = len(lengths)
    data: dict[str, Any] = {"name": "wav", "root": classes_root, "rate": rate, "length": length}
    notes = {"root": "one sub-folder per class", "rate": "Hz; a file at another rate is refused",
             "length": f"samples each file is cut or padded to ({length / rate:.2f} s: the median)"}
    if channels != 1:
        data["channels"] = channels
        notes["channels"] = "channels every file has"
    if unreadable:
        data["skip_corrupt"] = True
        notes["skip_corrupt"] = f"leave out the {len(unreadable)} unreadable files (and count them)"
    if test is not None:
        data["test_root"] = test
        notes["test_root"] = "the test files, in the same class folders"
    return Survey(root, "audio", f"a folder of {n} WAV files in {len(classes)} class folders", "classification",
                  n, (channels, length), _readable(classes, labels), n_test, facts, problems, data, notes)


# ---- volumes ------------------------------------------------------------------------------------------

def _stem(p: Path) -> str:
    return p.name[: -len(next(s for s in _NIFTI if p.name.endswith(s)))]


def _nifti_root(path: Path) -> Path:
    folder = path.parent if path.is_file() else path
    return folder.parent if folder.name in ("imagesTr", "labelsTr", "imagesTs", "labelsTs") else folder


def survey_nifti(path: Path) -> Survey:
    """A NIfTI dataset folder (``imagesTr/``, ``labelsTr/``, optionally ``imagesTs/``, ``labelsTs/``)."""
    import nibabel as nib

    root = _nifti_root(path)
    images, labels = root / "imagesTr", root / "labelsTr"
    if not images.is_dir() or not labels.is_dir():
        raise DltricksError(f"{root}: dltricks reads NIfTI from a dataset folder holding imagesTr/ and labelsTr/ "
                            "(one label map per image, matched by name); "
                            f"{'labelsTr' if images.is_dir() else 'imagesTr'}/ is missing")
    cases: dict[str, list[Path]] = {}
    for f in (p for p in sorted(images.iterdir()) if p.name.endswith(_NIFTI)):
        stem = _stem(f)
        case = stem[:-5] if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit() else stem
        cases.setdefault(case, []).append(f)
    label_files = {_stem(p): p for p in labels.iterdir() if p.name.endswith(_NIFTI)}
    if not cases:
        raise DltricksError(f"{images} holds no .nii or .nii.gz files")
    problems, shapes, unreadable, channels = [], Counter(), [], Counter()
    no_label = [c for c in cases if c not in label_files]
    no_image = [c for c in label_files if c not in cases]
    if no_label:
        problems.append(f"{len(no_label)} images without a label map ({examples(no_label)}): the loader refuses "
                        "them; add labelsTr/CASE.nii.gz")
    if no_image:
        problems.append(f"{len(no_image)} label maps without an image ({examples(no_image)})")
    voxels: Counter = Counter()
    keys, names = [], []
    lo, hi = math.inf, -math.inf
    for case, files in sorted(cases.items()):
        try:
            img = nib.load(str(files[0]))
            shape = tuple(int(s) for s in img.shape)
            keys.append(content_key(files[0].read_bytes()))
            names.append(case)
            if len(names) <= DECODE // 10:  # values and classes from the first cases: volumes are large
                a = np.asanyarray(img.dataobj)
                lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
                if case in label_files:
                    lab = np.asanyarray(nib.load(str(label_files[case])).dataobj)
                    vals, counts = np.unique(np.round(lab).astype(np.int64), return_counts=True)
                    voxels.update({str(v): int(n) for v, n in zip(vals, counts)})
        except Exception as e:  # nibabel raises many kinds on a corrupt file; each is named, none is fatal
            unreadable.append(f"{case}: {str(e)[:60]}")
            continue
        spatial = shape[:3] if len(shape) >= 3 else shape
        if len(shape) == 3 and shape[2] == 1:
            spatial = shape[:2]
        shapes[spatial] += 1
        channels[len(files) if len(files) > 1 else (shape[3] if len(shape) > 3 else 1)] += 1
    if unreadable:
        problems.append(f"{len(unreadable)} unreadable volumes ({examples(unreadable)})")
    if not shapes:
        raise DltricksError(f"{images}: none of its volumes could be read ({examples(unreadable)})")
    problems += duplicate_problems(keys, [""] * len(keys), names, "volumes")
    shape = most_common(list(shapes.elements()))
    scale = min(1.0, MAX_VOXELS_SIDE / max(shape))
    data: dict[str, Any] = {"name": "nifti", "root": root}
    notes = {"root": "holds imagesTr/ and labelsTr/ (imagesTs/, labelsTs/ to test; else 20% held out)"}
    size = list(shape)
    if len(shapes) > 1 or scale < 1:
        size = [max(8, round(s * scale)) for s in shape]
        data["size"] = size
        notes["size"] = ("every case is resampled to this" + (f" (cases differ: {len(shapes)} shapes)"
                                                              if len(shapes) > 1 else f" (yours are {shape})"))
    absent = [c for c in map(str, range(int(max(map(int, voxels), default=0)) + 1)) if c not in voxels]
    if absent:
        problems.append(f"class {', '.join(absent)} never occurs in the label maps read: class ids must be 0..K-1")
    n_test = len([p for p in (root / "imagesTs").iterdir() if p.name.endswith(_NIFTI)]) \
        if (root / "imagesTs").is_dir() and (root / "labelsTs").is_dir() else 0
    facts = [("shapes", ", ".join(f"{'x'.join(map(str, s))} ({n})" for s, n in shapes.most_common(4))),
             ("channels", ", ".join(f"{c} ({n})" for c, n in channels.items()))]
    if math.isfinite(lo):
        facts.append(("values", f"{lo:.4g} .. {hi:.4g} (images of the first cases; z-scored per case)"))
    c = most_common(list(channels.elements()))
    n = sum(shapes.values())
    return Survey(root, "volumes", f"a NIfTI dataset: {n} cases of {'x'.join(map(str, shape))} voxels",
                  "segmentation", n, (c, *size), dict(sorted(voxels.items(), key=lambda t: int(t[0]))), n_test,
                  facts, problems, data, notes)
