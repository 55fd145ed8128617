"""``dltricks init PATH`` end to end on data the tests make: what the survey reports, the recipe it writes, and
that recipe training; bad paths are one line."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

DLTRICKS = [sys.executable, "-m", "dltricks.cli"]


def run(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLTRICKS_")}
    env.update(DLTRICKS_HOME=str(cwd / ".home"), OMP_NUM_THREADS="1", COLUMNS="200")
    return subprocess.run([*DLTRICKS, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stdout


def one_line_error(done: subprocess.CompletedProcess, *needles: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    err = done.stderr.strip()
    assert "Traceback" not in done.stderr and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def trained(done: subprocess.CompletedProcess) -> dict[str, float]:
    first = ok(done).splitlines()[0]
    assert first.startswith("run ") and " completed: " in first, done.stdout
    words = first.split(": ", 1)[1].split()
    return {k: float(v) for k, v in zip(words[::2], words[1::2])}


def write_wine(path: Path) -> None:
    from sklearn.datasets import load_wine

    d = load_wine()
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*d.feature_names, "cultivar"])
        for x, y in zip(d.data, d.target):
            w.writerow([*x, d.target_names[y]])


def test_a_csv_table_gets_a_recipe_that_trains(tmp_path):
    write_wine(tmp_path / "wine.csv")
    shown = ok(run("init", "wine.csv", cwd=tmp_path))
    assert "178 rows, 13 feature columns" in shown and "classes   3: class_0 59, class_1 71, class_2 48" in shown
    assert "'cultivar' (the last column" in shown  # no column named label: the last one, said so
    assert "feature scales far apart" in shown and "'proline'" in shown
    assert "wrote wine.toml" in shown and "next: dltricks train wine.toml" in shown
    text = (tmp_path / "wine.toml").read_text()
    recipe = tomllib.loads(text)
    assert recipe["data"] == {"name": "csv", "path": "wine.csv", "label_column": "cultivar"}
    assert recipe["model"]["name"] == "mlp"
    assert "# Problem: feature scales far apart" in text and "advisor's notes" in text
    metrics = trained(run("train", "wine.toml", "-q", cwd=tmp_path))
    assert metrics["test_accuracy"] >= 0.9, metrics
    # never over a file that is there; --force does; -o writes elsewhere, its data path relative to it
    (tmp_path / "wine.toml").write_text("# mine\n")
    one_line_error(run("init", "wine.csv", "--no-advice", cwd=tmp_path), "wine.toml exists", "--force")
    assert (tmp_path / "wine.toml").read_text() == "# mine\n"
    ok(run("init", "wine.csv", "--no-advice", "--force", cwd=tmp_path))
    assert tomllib.loads((tmp_path / "wine.toml").read_text())["data"]["path"] == "wine.csv"
    (tmp_path / "recipes").mkdir()
    ok(run("init", "wine.csv", "--no-advice", "-o", "recipes/w.toml", "--label", "cultivar", cwd=tmp_path))
    assert tomllib.loads((tmp_path / "recipes" / "w.toml").read_text())["data"]["path"] == "../wine.csv"
    assert not [p for p in tmp_path.glob(".*") if p.name != ".home"]  # no draft left behind


def test_the_problems_of_a_table_are_named(tmp_path):
    rows = [["a", "b", "same", "label"]]
    rng = np.random.default_rng(0)
    for i in range(40):
        rows.append([f"{rng.normal():.4f}", f"{rng.normal() * 1000:.1f}", "7", "x" if i % 2 else "y"])
    rows.append(rows[1][:3] + [rows[1][3]])  # the same row again
    rows.append(rows[2][:3] + ["y" if rows[2][3] == "x" else "x"])  # the same features, the other label
    rows.append(["0.5", "", "7", "lonely"])  # a missing value, and a class of one
    with open(tmp_path / "t.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    shown = ok(run("init", "t.csv", cwd=tmp_path))
    assert "1 duplicate rows" in shown and "line 42 = line 2" in shown
    assert "1 rows repeat with a different label" in shown and "line 43 = line 3" in shown
    assert "1 class with one sample (lonely)" in shown
    assert "1 constant column ('same')" in shown
    assert "missing or non-finite values in 1 column: 'b' (1, first at line 44)" in shown
    # the loader refuses the missing value: said now, before any training, and in the recipe
    assert "dltricks cannot read the data as the recipe says" in shown
    assert "cannot read the data" in (tmp_path / "t.toml").read_text()


def test_a_regression_target_is_recognised_and_trains(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    y = x @ np.array([1.5, -2.0, 0.5]) + 0.1 * rng.normal(size=200)
    with open(tmp_path / "house.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "c", "price"])
        w.writerows([[*map(float, r), float(t)] for r, t in zip(x, y)])
    shown = ok(run("init", "house.csv", "--label", "price", cwd=tmp_path))
    assert "task      regression" in shown and "a regression target" in shown
    recipe = tomllib.loads((tmp_path / "house.toml").read_text())
    assert recipe["data"].get("task") == "regression" or recipe["data"]["regression_columns"] == ["price"]
    assert recipe["train"]["normalize_targets"] is True
    assert recipe["eval"]["metric"] == "test_mae"
    metrics = trained(run("train", "house.toml", "-q", cwd=tmp_path))
    assert "test_accuracy" not in metrics and metrics["test_r2"] > 0.9, metrics  # a target, no class


def test_npz_signals_get_a_1d_cnn(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    t = np.linspace(0, 1, 64)
    x = (np.sin(2 * np.pi * (3 + 4 * y[:, None]) * t) + 0.3 * rng.normal(size=(120, 64)))[:, None].astype("f4")
    np.savez(tmp_path / "sig.npz", x=x, y=y)
    shown = ok(run("init", "sig.npz", cwd=tmp_path))
    assert "x (120, 1, 64) (signals)" in shown and "input     1x64" in shown and "balanced" in shown
    recipe = tomllib.loads((tmp_path / "sig.toml").read_text())
    assert recipe["data"] == {"name": "npz", "path": "sig.npz"} and recipe["model"]["name"] == "cnn"
    metrics = trained(run("train", "sig.toml", "-q", "-o", "train.epochs=4", cwd=tmp_path))
    assert metrics["test_accuracy"] >= 0.9, metrics


def _shape_image(kind: str, rng, size: int = 24):
    from PIL import Image, ImageDraw

    im = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(im)
    fill = int(rng.integers(120, 256))  # no two files alike by chance
    c, r = rng.integers(8, size - 8, 2), int(rng.integers(4, 7))
    box = [c[0] - r, c[1] - r, c[0] + r, c[1] + r]
    if kind == "disc":
        d.ellipse(box, fill=fill)
    elif kind == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([(c[0], c[1] - r), (c[0] - r, c[1] + r), (c[0] + r, c[1] + r)], fill=fill)
    return im


def test_an_image_folder_is_surveyed(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "shapes"
    for kind in ("disc", "square", "triangle"):
        (root / kind).mkdir(parents=True)
        for i in range(30):
            _shape_image(kind, rng).save(root / kind / f"{i}.png")
    (root / "disc" / "copy.png").write_bytes((root / "disc" / "0.png").read_bytes())
    (root / "square" / "broken.png").write_bytes((root / "square" / "1.png").read_bytes()[:60])
    (root / "empty").mkdir()
    (root / "odd").mkdir()
    _shape_image("disc", rng).convert("RGB").resize((40, 30)).save(root / "odd" / "only.jpg")
    shown = ok(run("init", "shapes", "--no-advice", cwd=tmp_path))
    assert "a folder of 92 images in 4 class folders" in shown
    assert "classes   4: disc 31, odd 1, square 30, triangle 30" in shown  # square/broken.png left out
    assert "1 duplicate images" in shown and "disc/copy.png = disc/0.png" in shown
    assert "1 unreadable images (square/broken.png" in shown
    assert "1 class folder without images (empty)" in shown and "1 class with one image (odd)" in shown
    assert "24x24 (height x width) most often" in shown and "(read as RGB)" in shown
    recipe = tomllib.loads((tmp_path / "shapes.toml").read_text())
    assert recipe["data"] == {"name": "images", "root": "shapes", "size": [24, 24], "channels": 3,
                              "skip_corrupt": True}  # square/broken.png is left out, and counted
    assert recipe["model"]["name"] == "cnn"


def _loader(name: str) -> bool:
    import dltricks.data  # noqa: F401  (the loaders register on import)
    from dltricks.data.registry import datasets

    return name in datasets()


@pytest.mark.skipif(not _loader("images"), reason="the images loader (data.name = 'images') is not in this tree")
def test_an_image_folder_trains_from_its_starter_recipe(tmp_path):
    rng = np.random.default_rng(1)
    for kind in ("disc", "square", "triangle"):
        (tmp_path / "pics" / kind).mkdir(parents=True)
        for i in range(60):
            _shape_image(kind, rng).save(tmp_path / "pics" / kind / f"{i}.png")
    shown = ok(run("init", "pics", cwd=tmp_path))
    assert "cannot read the data" not in shown and "channels" in (tmp_path / "pics.toml").read_text()
    done = run("train", "pics.toml", "-q", cwd=tmp_path, timeout=600)
    metrics = trained(done)
    assert metrics["test_accuracy"] >= 0.9, metrics
    # the rest of the way: an ablation with two workers, the layer table, a compressed copy of the run
    studied = ok(run("ablate", "pics.toml", "--trick", "augment_shift", "--seeds", "2", "--workers", "2", "-q",
                     "-o", "train.epochs=3", cwd=tmp_path, timeout=600))
    report = next(line.split(": ", 1)[1] for line in studied.splitlines() if line.startswith("report: "))
    assert Path(report).is_file() and "+augment_shift" in studied
    assert "on input 1x24x24" in ok(run("inspect", "pics.toml", "--no-latency", cwd=tmp_path))
    run_id = done.stdout.split()[1]
    squeezed = ok(run("compress", run_id, "--quantize", "dynamic", "-q", cwd=tmp_path, timeout=600))
    assert "dynamic" in squeezed and "source" in squeezed


def test_a_wav_folder_is_surveyed(tmp_path):
    from scipy.io import wavfile

    rng = np.random.default_rng(0)
    for label, hz in (("low", 220), ("high", 880)):
        (tmp_path / "sounds" / label).mkdir(parents=True)
        for i in range(12):
            n = 8000 + 400 * (i % 3)
            tone = np.sin(2 * np.pi * hz * np.arange(n) / 8000) + 0.05 * rng.normal(size=n)
            wavfile.write(tmp_path / "sounds" / label / f"{i}.wav", 8000, (tone * 8000).astype(np.int16))
    wavfile.write(tmp_path / "sounds" / "low" / "other.wav", 16000, np.zeros(16000, dtype=np.int16))
    shown = ok(run("init", "sounds", "--no-advice", cwd=tmp_path))
    assert "a folder of 25 WAV files in 2 class folders" in shown and "high 12, low 13" in shown
    assert "sample rates differ: 8000 Hz in 24 files, 16000 Hz (1)" in shown
    assert "1 silent files" in shown and "low/other.wav" in shown
    recipe = tomllib.loads((tmp_path / "sounds.toml").read_text())
    assert recipe["data"] == {"name": "wav", "root": "sounds", "rate": 8000, "length": 8400}
    assert recipe["model"]["name"] == "cnn" and recipe["model"]["kernel_size"] == 9


def _tones(root: Path, per_class: int, rng) -> None:
    from scipy.io import wavfile

    for label, hz in (("low", 220), ("high", 880)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            n = 2000 + 200 * (i % 3)
            tone = np.sin(2 * np.pi * hz * np.arange(n) / 8000 + rng.uniform(0, 6)) + 0.3 * rng.normal(size=n)
            wavfile.write(root / label / f"{i}.wav", 8000, (tone * 8000).astype(np.int16))


@pytest.mark.skipif(not _loader("wav"), reason="the WAV loader (data.name = 'wav') is not in this tree")
def test_a_wav_folder_trains_from_its_starter_recipe(tmp_path):
    _tones(tmp_path / "tones", 40, np.random.default_rng(2))
    shown = ok(run("init", "tones", cwd=tmp_path))
    assert "cannot read the data" not in shown and "input     1x2200" in shown
    metrics = trained(run("train", "tones.toml", "-q", cwd=tmp_path, timeout=600))
    assert metrics["test_accuracy"] >= 0.9, metrics


def test_a_nifti_folder_gets_a_unet_and_its_data_loads(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    for d in ("imagesTr", "labelsTr"):
        (tmp_path / "vols" / d).mkdir(parents=True)
    for i in range(5):
        label = np.zeros((12, 12, 12), dtype=np.uint8)
        label[3:8, 3:8, 3:8] = 1
        image = label + 0.2 * rng.normal(size=label.shape)
        nib.save(nib.Nifti1Image(image.astype("f4"), np.eye(4)), tmp_path / "vols" / "imagesTr" / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "vols" / "labelsTr" / f"c{i}.nii.gz")
    shown = ok(run("init", "vols", cwd=tmp_path))
    assert "a NIfTI dataset: 5 cases of 12x12x12 voxels" in shown and "task      segmentation" in shown
    assert "cannot read the data" not in shown  # the advisor loaded it through the nifti loader
    recipe = tomllib.loads((tmp_path / "vols.toml").read_text())
    assert recipe["data"] == {"name": "nifti", "root": "vols", "val_fraction": 0.38}  # 4 cases train: 1 validates
    assert recipe["model"]["name"] == "unet"
    assert recipe["eval"]["metric"] == "test_dice"


def test_bad_paths_are_one_line(tmp_path):
    one_line_error(run("init", "nope.csv", cwd=tmp_path), "nope.csv: no such file or folder")
    (tmp_path / "notes.txt").write_text("hello\n")
    one_line_error(run("init", "notes.txt", cwd=tmp_path), "notes.txt is a file of no data kind",
                   "a CSV table, an .npz")
    (tmp_path / "empty").mkdir()
    one_line_error(run("init", "empty", cwd=tmp_path), "empty holds no images")
    (tmp_path / "flat").mkdir()
    _shape_image("disc", np.random.default_rng(0)).save(tmp_path / "flat" / "a.png")
    one_line_error(run("init", "flat", cwd=tmp_path), "flat holds 1 images but no class sub-folders")
    np.savez(tmp_path / "xy.npz", a=np.zeros(3))
    one_line_error(run("init", "xy.npz", cwd=tmp_path), "has no array x or y; it holds a")
    write_wine(tmp_path / "wine.csv")
    one_line_error(run("init", "wine.csv", "--label", "colour", cwd=tmp_path), "no column 'colour'")
    one_line_error(run("init", "wine.csv", "-o", "nowhere/w.toml", cwd=tmp_path), "no folder")
    assert not (tmp_path / "wine.toml").exists()


def test_a_table_with_text_columns_and_a_regression_target(tmp_path):
    from dltricks.data.files import CsvSpec

    rng = np.random.default_rng(3)
    colours = rng.choice(["red", "green", "blue"], 240)
    x = rng.normal(size=(240, 2))
    y = x @ np.array([2.0, -1.0]) + np.where(colours == "red", 3.0, 0.0) + 0.1 * rng.normal(size=240)
    with open(tmp_path / "cars.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "colour", "b", "price"])
        w.writerows([[f"{a:.4f}", c, f"{b:.4f}", f"{t:.4f}"] for (a, b), c, t in zip(x, colours, y)])
    shown = ok(run("init", "cars.csv", cwd=tmp_path))
    assert "'price' (the last column" in shown and "task      regression" in shown
    assert "2 numeric, 1 text: colour (3 categories)" in shown
    if "impute" not in CsvSpec.model_fields:  # a csv loader that reads numbers only: init says so before training
        assert "dltricks cannot read the data as the recipe says" in shown and "'colour'" in shown
        return
    assert "cannot read the data" not in shown  # text columns are one-hot encoded by the loader
    metrics = trained(run("train", "cars.toml", "-q", cwd=tmp_path))
    assert metrics["test_r2"] > 0.9, metrics
