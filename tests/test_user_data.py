"""The user's own data through the CLI, on files the tests make: a folder of images per class, a folder of WAV
files per class, a CSV with text columns and a regression target, a data function beside the recipe; and the
one-line refusals of bad files (nothing recorded in the ledger)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

DLTRICKS = [sys.executable, "-m", "dltricks.cli"]

IMAGES = """name = "shapes-images"
seed = 0

[data]
name = "images"
root = "shapes"
size = 24
channels = 1

[model]
name = "cnn"
channels = [16, 32]

[train]
epochs = 15
batch_size = 32
lr = 0.01
schedule = "one_cycle"
"""


class Env:
    def __init__(self, root: Path):
        self.root, self.cache = root, root / "cache"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DLTRICKS_")}
        self.env.update(DLTRICKS_HOME=str(root / "home"), DLTRICKS_CACHE=str(self.cache), OMP_NUM_THREADS="1",
                        COLUMNS="200", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([*DLTRICKS, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def metrics(self, done: subprocess.CompletedProcess) -> dict[str, float]:
        assert done.returncode == 0, done.stderr[-3000:]
        first = done.stdout.splitlines()[0]
        assert first.startswith("run ") and " completed: " in first, done.stdout
        words = first.split(" completed: ")[1].split()
        return {k: float(v) for k, v in zip(words[::2], words[1::2])}

    def runs(self) -> list:
        done = self.run("runs", "--format", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout or "[]")

    def refused(self, *args: str, needles: tuple[str, ...]) -> str:
        before = {r["id"] for r in self.runs()} if (self.root / "home").exists() else set()
        done = self.run(*args)
        assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
        err = done.stderr.strip()
        assert "Traceback" not in done.stderr and len(err.splitlines()) == 1, err
        for n in needles:
            assert n in err, err
        if (self.root / "home").exists():  # refused before the first step: the ledger gains no run
            new = [r for r in self.runs() if r["id"] not in before]
            assert not new, new
        return err


def make_shapes(root: Path, per_class: int = 80, size: int = 32, seed: int = 0) -> None:
    """Discs, squares and triangles of random size, place and brightness; grey and RGB PNGs mixed."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for cls in ("disc", "square", "triangle"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            im = Image.new("L" if i % 2 else "RGB", (size, size), 0)
            d = ImageDraw.Draw(im)
            r = rng.uniform(size * 0.2, size * 0.4)
            cx, cy = rng.uniform(r, size - r, 2)
            v = int(rng.integers(128, 256))
            fill = v if im.mode == "L" else (v, v, v)
            if cls == "disc":
                d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
            elif cls == "square":
                d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
            else:
                d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
            im.save(root / cls / f"{i}.png")


def write_wavs(root: Path, per_class: int = 40, rate: int = 8000, seed: int = 0) -> None:
    """Low and high tones of varying length (cropped or padded to data.length), with noise."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    for cls, f in (("low", 200.0), ("high", 1200.0)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            t = np.arange(int(rng.integers(400, 700))) / rate
            sig = 0.5 * np.sin(2 * np.pi * f * (1 + 0.1 * rng.uniform(-1, 1)) * t + rng.uniform(0, 6.28))
            sf.write(root / cls / f"{i}.wav", (sig + 0.05 * rng.normal(size=len(t))).astype("float32"), rate)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Env:
    e = Env(tmp_path_factory.mktemp("images"))
    make_shapes(e.root / "shapes")
    (e.root / "images.toml").write_text(IMAGES)
    return e


def test_an_image_folder_trains_from_a_decoded_once_cache(images):
    m = images.metrics(images.run("train", "images.toml", "-q"))
    assert m["test_accuracy"] >= 0.9, m
    arrays = sorted(images.cache.glob("*.npy"))
    assert len(arrays) == 1  # train | val | test in one array
    stamp = arrays[0].stat().st_mtime_ns
    again = images.metrics(images.run("train", "images.toml", "-q", "-o", "seed=1", "-o", "train.epochs=1"))
    assert "test_accuracy" in again
    assert sorted(images.cache.glob("*.npy")) == arrays and arrays[0].stat().st_mtime_ns == stamp  # reused


def test_the_splits_are_slices_of_one_memory_map_and_a_changed_file_is_decoded_anew(images, monkeypatch):
    from dltricks.data import load_data
    from dltricks.data.cache import cached_array
    from dltricks.data.images import decode_image
    from dltricks.recipe import Recipe

    monkeypatch.setenv("DLTRICKS_CACHE", str(images.root / "cache-here"))
    recipe = Recipe.load(str(images.root / "images.toml"))
    b = load_data(recipe.data, 0)
    assert b.in_shape == (1, 24, 24) and b.class_names == ["disc", "square", "triangle"]
    assert len(b.train[1]) + len(b.val[1]) + len(b.test[1]) == 240
    assert float(b.train[0].min()) >= 0.0 and float(b.train[0].max()) <= 1.0
    ptr = b.train[0].untyped_storage().data_ptr()
    assert b.val[0].untyped_storage().data_ptr() == ptr == b.test[0].untyped_storage().data_ptr()
    assert torch.bincount(b.test[1]).tolist() == [16, 16, 16]  # stratified
    import shutil

    own = images.root / "five"  # copies: the folder itself stays as the other tests decoded it
    own.mkdir()
    files = [Path(shutil.copy(f, own / f"{i}.png")) for i, f in
             enumerate(sorted((images.root / "shapes").rglob("*.png"))[:5])]
    c = cached_array(files, (1, 8, 8), decode_image, dict(height=8, width=8, channels=1, resize="pad"), "t")
    assert isinstance(c.array, np.memmap) and c.array.shape == (5, 1, 8, 8)
    same = cached_array(files, (1, 8, 8), decode_image, dict(height=8, width=8, channels=1, resize="pad"), "t")
    assert same.path == c.path
    from PIL import Image

    Image.new("L", (32, 32), 255).save(files[0])  # an edited file: new size and mtime
    fresh = cached_array(files, (1, 8, 8), decode_image, dict(height=8, width=8, channels=1, resize="pad"), "t")
    assert fresh.path != c.path and float(fresh.array[0].min()) == 1.0


def test_bad_image_folders_are_refused_in_one_line(tmp_path):
    e = Env(tmp_path)
    make_shapes(tmp_path / "shapes", per_class=12, size=16)
    (tmp_path / "images.toml").write_text(IMAGES.replace("epochs = 15", "epochs = 1"))
    good = (tmp_path / "shapes" / "disc" / "0.png").read_bytes()
    (tmp_path / "shapes" / "disc" / "broken.png").write_bytes(good[: len(good) // 2])  # truncated
    e.refused("train", "images.toml", needles=("broken.png", "not a readable image", "data.skip_corrupt"))
    done = e.run("train", "images.toml", "-q", "-o", "data.skip_corrupt=true")
    e.metrics(done)
    assert "skipped 1 of" in done.stderr and "broken.png" in done.stderr
    (tmp_path / "shapes" / "disc" / "broken.png").unlink()
    (tmp_path / "shapes" / "circle").mkdir()
    e.refused("train", "images.toml", needles=("class folder 'circle'", "no image files"))
    (tmp_path / "shapes" / "circle").rmdir()
    (tmp_path / "none" / "a").mkdir(parents=True)
    (tmp_path / "none" / "a" / "notes.txt").write_text("x")
    e.refused("train", "images.toml", "-o", "data.root=none", needles=("holds no image files",))
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.png").write_bytes(good)
    e.refused("train", "images.toml", "-o", "data.root=flat", needles=("no class folders",))


def test_a_wav_folder_trains_and_other_rates_or_channels_are_refused(tmp_path):
    import soundfile as sf

    e = Env(tmp_path)
    write_wavs(tmp_path / "wav")
    (tmp_path / "wav.toml").write_text('name = "tones"\n[data]\nname = "wav"\nroot = "wav"\nlength = 512\n'
                                       '[model]\nname = "cnn"\nchannels = [8, 16]\n'
                                       '[train]\nepochs = 10\nbatch_size = 16\nlr = 0.01\n')
    m = e.metrics(e.run("train", "wav.toml", "-q"))
    assert m["test_accuracy"] >= 0.8, m
    sf.write(tmp_path / "wav" / "low" / "fast.wav", np.zeros(600, dtype="float32"), 16000)
    e.refused("train", "wav.toml", needles=("fast.wav", "16000 Hz", "8000 Hz"))
    (tmp_path / "wav" / "low" / "fast.wav").unlink()
    sf.write(tmp_path / "wav" / "high" / "stereo.wav", np.zeros((600, 2), dtype="float32"), 8000)
    e.refused("train", "wav.toml", needles=("stereo.wav", "2 channel(s)", "data.channels is 1"))


def test_a_csv_with_text_columns_and_a_regression_target_trains(tmp_path):
    rng = np.random.default_rng(0)
    shift = {"red": 0.0, "blue": 2.0, "green": -2.0}
    rows = ["a,colour,size,y"]
    for _ in range(300):
        a, c = rng.normal(), str(rng.choice(list(shift)))
        rows.append(f"{a:.4f},{c},{rng.choice(['S', 'M', 'L'])},{3 * a + shift[c] + 0.1 * rng.normal():.4f}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "test.csv").write_text("a,colour,size,y\n0.5,red,S,1.5\n0.1,purple,M,0.3\n-1,blue,XL,-1\n")
    recipe = ('name = "tab"\n[data]\nname = "csv"\npath = "t.csv"\nlabel_column = "y"\ntask = "regression"\n'
              '[model]\nname = "mlp"\nhidden = [32]\n[train]\nepochs = 30\nlr = 0.01\n')
    (tmp_path / "tab.toml").write_text(recipe)
    e = Env(tmp_path)
    m = e.metrics(e.run("train", "tab.toml", "-q"))
    assert m["test_r2"] >= 0.9, m  # the colour's shift is learnt through its one-hot columns

    from dltricks.data import load_data
    from dltricks.recipe import Recipe

    spec = Recipe.load(str(tmp_path / "tab.toml"), [f"data.test_path={tmp_path / 'test.csv'}"]).data
    b = load_data(spec, 0)
    assert b.feature_names == ["a", "colour=blue", "colour=green", "colour=red", "size=L", "size=M", "size=S"]
    assert b.task == "regression" and b.train[1].shape[1] == 1 and b.unseen_categories == 2
    assert b.standardizer is not None
    raw = b.standardizer.invert(b.test[0])
    assert torch.allclose(raw[1, 1:4], torch.zeros(3), atol=1e-5)  # purple: all zeros

    (tmp_path / "gap.csv").write_text("\n".join(rows[:5] + ["0.3,,M,1.0", ",red,S,0.2"] + rows[5:]) + "\n")
    e.refused("train", "tab.toml", "-o", "data.path=gap.csv", needles=("line 6", "'colour'", "data.impute"))
    imputed = load_data(Recipe.load(str(tmp_path / "tab.toml"), [f"data.path={tmp_path / 'gap.csv'}",
                                                                 "data.impute=median", "data.standardize=false"]).data)
    x = torch.cat([imputed.train[0], imputed.val[0], imputed.test[0]])
    assert torch.isfinite(x).all() and len(x) == 302


def test_a_data_function_beside_the_recipe_trains_and_wrong_returns_are_refused(tmp_path):
    (tmp_path / "my_data.py").write_text(
        "import numpy as np, torch\n"
        "from torch.utils.data import TensorDataset\n"
        "def load(n=200, seed=0):\n"
        "    g = np.random.default_rng(0)\n"
        "    x = g.normal(size=(n, 1, 16)).astype('float32')\n"
        "    y = (x[:, 0, :8].sum(1) > 0).astype('int64')\n"
        "    test = TensorDataset(torch.tensor(x[150:]), torch.tensor(y[150:]))\n"
        "    return {'train': (x[:150], y[:150]), 'test': test, 'classes': ['neg', 'pos']}\n"
        "def wrong():\n"
        "    return [1, 2]\n"
        "def strings():\n"
        "    return (np.array(['a', 'b']), np.array([0, 1])), (np.zeros((2, 3)), np.array([0, 1]))\n")
    (tmp_path / "fn.toml").write_text('name = "fn"\n[data]\nname = "my_data:load"\nn = 300\n'
                                      '[model]\nname = "mlp"\nhidden = [32]\n'
                                      '[train]\nepochs = 15\nbatch_size = 32\nlr = 0.01\n')
    e = Env(tmp_path)
    e.env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and Path(p).resolve() != tmp_path.resolve())
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    # run from another folder: the module is found beside the recipe
    done = subprocess.run([*DLTRICKS, "train", str(tmp_path / "fn.toml"), "-q"], cwd=sub, env=e.env,
                          capture_output=True, text=True, timeout=300)
    assert e.metrics(done)["test_accuracy"] >= 0.7
    e.refused("train", "fn.toml", "-o", "data.name=my_data:wrong", needles=("returned a list", "(train, test)"))
    e.refused("train", "fn.toml", "-o", "data.name=my_data:strings", needles=("train: x", "numeric"))
    e.refused("train", "fn.toml", "-o", "data.name=my_data:nope", needles=("has no 'nope'", "load"))
    e.refused("train", "fn.toml", "-o", "data.name=nomodule:load", needles=("no module 'nomodule'",))
    e.refused("train", "fn.toml", "-o", "data.m=3", needles=("takes no keyword 'm'", "n, seed"))


def test_an_image_ablation_with_two_workers_maps_the_same_cache(images):
    """Both workers' cells (with the 2D flip augmentation) read the array the first test decoded."""
    arrays = sorted(images.cache.glob("*.npy"))
    done = images.run("ablate", "images.toml", "--trick", "ls:train.label_smoothing=0.1", "--seeds", "1",
                      "--workers", "2", "--study", "img", "-q", "-o", "train.epochs=2", "-o", "data.augment.flip=0.5")
    assert done.returncode == 0, done.stderr[-3000:]
    cells = [r for r in images.runs() if r.get("study") == "img"]
    assert len(cells) == 2 and {r["status"] for r in cells} == {"completed"}
    assert sorted(images.cache.glob("*.npy")) == arrays  # decoded once, by the first run


def test_images_from_a_csv_of_paths_with_a_test_folder(tmp_path, monkeypatch):
    from dltricks.data import load_data
    from dltricks.recipe import Recipe

    monkeypatch.setenv("DLTRICKS_CACHE", str(tmp_path / "cache"))
    make_shapes(tmp_path / "train", per_class=10, size=20)
    make_shapes(tmp_path / "test", per_class=4, size=28, seed=1)
    lines = ["path,label"] + [f"{p.relative_to(tmp_path)},{p.parent.name}" for p in sorted(tmp_path.glob("train/*/*"))]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    data = {"name": "images", "root": str(tmp_path / "list.csv"), "test_root": str(tmp_path / "test"),
            "size": [12, 16], "channels": 3, "resize": "pad", "val_fraction": 0.2}
    b = load_data(Recipe.from_dict({"name": "t", "data": data, "model": {"name": "cnn"}}).data, 0)
    assert b.in_shape == (3, 12, 16) and len(b.test[1]) == 12 and len(b.train[1]) + len(b.val[1]) == 30
    assert float(b.train[0][..., :2].abs().max()) == 0.0  # padded (black bars) to keep the aspect ratio
    (tmp_path / "test" / "star").mkdir()
    (tmp_path / "test" / "star" / "a.png").write_bytes((tmp_path / "test" / "disc" / "0.png").read_bytes())
    from dltricks.errors import DltricksError

    with pytest.raises(DltricksError, match="class folder.*'star'"):
        load_data(Recipe.from_dict({"name": "t", "data": data, "model": {"name": "cnn"}}).data, 0)


def test_regression_columns_take_text_features_and_impute(tmp_path):
    from dltricks.data import load_data
    from dltricks.recipe import Recipe

    rows = ["a,city,price,label"] + [f"{i},{['x', 'y', ''][i % 3]},{i * 2},{i % 2}" for i in range(30)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    data = {"name": "csv", "path": str(tmp_path / "t.csv"), "regression_columns": ["price"], "impute": "most_frequent",
            "val_fraction": 0.0, "standardize": False}
    b = load_data(Recipe.from_dict({"name": "t", "data": data, "model": {"name": "mlp"}}).data, 0)
    assert b.feature_names == ["a", "city=x", "city=y"] and b.task == "multitask"
    x = torch.cat([b.train[0], b.test[0]])
    assert torch.equal(x[:, 1:].sum(1), torch.ones(30))  # every row one category, the empty ones imputed
    from dltricks.errors import DltricksError

    with pytest.raises(DltricksError, match="line 4: column 'city' is empty"):
        load_data(Recipe.from_dict({"name": "t", "data": {**data, "impute": "none"}, "model": {"name": "mlp"}}).data)
