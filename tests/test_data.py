"""Datasets: MNIST-1D generated offline and cached, validation splits, digits, the user's npz and csv files."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from dltricks.data import DataBundle, datasets, load_data
from dltricks.data.splits import carve_val
from dltricks.errors import DltricksError
from dltricks.recipe import Recipe


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("DLTRICKS_CACHE", str(d))
    return d


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import mnist1d.data

    monkeypatch.setattr(mnist1d.data, "get_dataset", refuse)


def data_spec(**kw):
    model = {"name": "mlp"}
    return Recipe.from_dict({"data": kw, "model": model}).data


# ---- MNIST-1D ---------------------------------------------------------------------------------------------

def test_mnist1d_is_offline_cached_deterministic_and_canonical(cache, no_network, monkeypatch):
    from dltricks.data import mnist1d

    spec = data_spec(name="mnist1d", val_fraction=0.0)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    b = load_data(spec)
    assert np.array_equal(np.random.get_state()[1], before), "generation must leave numpy's global RNG alone"
    # the published dataset's shapes: 4000 train, 1000 test, length 40, 10 classes of 500
    assert b.train[0].shape == (4000, 1, 40) and b.test[0].shape == (1000, 1, 40)
    assert b.train[0].dtype == torch.float32 and b.train[1].dtype == torch.int64
    assert b.num_classes == 10 and b.in_shape == (1, 40)
    counts = torch.bincount(b.train[1], minlength=10) + torch.bincount(b.test[1], minlength=10)
    assert counts.tolist() == [500] * 10
    # pinned values of the canonical generator (seed 42), which reproduces the published pickle
    assert b.train[1][:12].tolist() == [2, 6, 4, 5, 6, 6, 6, 0, 3, 1, 6, 9]
    assert b.test[1][:12].tolist() == [2, 6, 3, 9, 4, 3, 1, 9, 5, 2, 0, 7]
    assert torch.allclose(b.train[0][0, 0, :3], torch.tensor([-0.33200567, -0.47191037, -0.77869708]))

    files = list(cache.glob("mnist1d-*.npz"))
    assert len(files) == 1
    # cached: a second load never calls the generator
    monkeypatch.setattr("mnist1d.data.make_dataset", lambda *a: (_ for _ in ()).throw(AssertionError("regen")))
    again = load_data(spec)
    assert torch.equal(again.train[0], b.train[0]) and torch.equal(again.test[1], b.test[1])
    monkeypatch.undo()

    # a corrupt cache file is regenerated, not trusted; the result is the same
    files[0].write_bytes(b"garbage")
    third = mnist1d.generate(spec)
    assert np.array_equal(third["x"].astype(np.float32), b.train[0][:, 0].numpy())


def test_mnist1d_small_variant_and_train_limit(cache):
    spec = data_spec(name="mnist1d", num_samples=600, train_limit=200, val_fraction=0.0)
    b = load_data(spec)
    assert b.train[0].shape == (200, 1, 40) and b.test[0].shape == (120, 1, 40)
    other = load_data(data_spec(name="mnist1d", num_samples=600, data_seed=7, val_fraction=0.0))
    assert not torch.equal(other.test[0], b.test[0])  # the generator seed is part of the cache key


# ---- validation splits --------------------------------------------------------------------------------

def test_val_split_is_stratified_fixed_by_seed_and_never_touches_test(cache):
    full = load_data(data_spec(name="mnist1d", num_samples=600, val_fraction=0.0))
    b = load_data(data_spec(name="mnist1d", num_samples=600, val_fraction=0.2), seed=0)
    assert torch.equal(b.test[0], full.test[0]) and torch.equal(b.test[1], full.test[1])
    n_train = len(full.train[1])
    assert len(b.train[1]) + len(b.val[1]) == n_train
    # train and val partition the original training rows
    rows = torch.cat([b.train[0], b.val[0]])[:, 0]
    orig = full.train[0][:, 0]
    assert torch.equal(torch.sort(rows.sum(1)).values, torch.sort(orig.sum(1)).values)
    # each class keeps its share in validation (to rounding)
    per_class = torch.bincount(full.train[1], minlength=10)
    in_val = torch.bincount(b.val[1], minlength=10)
    assert torch.all((in_val - 0.2 * per_class).abs() <= 0.5 + 1e-9)
    # fixed by seed
    same = load_data(data_spec(name="mnist1d", num_samples=600, val_fraction=0.2), seed=0)
    other = load_data(data_spec(name="mnist1d", num_samples=600, val_fraction=0.2), seed=1)
    assert torch.equal(same.val[0], b.val[0])
    assert not torch.equal(other.val[0], b.val[0])


def test_carve_val_errors_and_unstratified():
    x, y = torch.arange(10.0)[:, None], torch.tensor([0] * 5 + [1] * 5)
    with pytest.raises(DltricksError, match="data.val_fraction = 0.01"):
        carve_val((x, y), 0.01, 0)
    (xt, yt), (xv, yv) = carve_val((x, torch.zeros(10, 4, dtype=torch.long)), 0.3, 0)  # label maps
    assert len(xv) == 3 and len(xt) == 7


# ---- digits ---------------------------------------------------------------------------------------------

def test_digits_shapes_and_split():
    b = load_data(data_spec(name="digits", val_fraction=0.1))
    assert b.in_shape == (1, 8, 8) and b.num_classes == 10
    total = len(b.train[1]) + len(b.val[1]) + len(b.test[1])
    assert total == 1797 and len(b.test[1]) == 450
    assert float(b.train[0].min()) >= 0.0 and float(b.train[0].max()) <= 1.0
    again = load_data(data_spec(name="digits", val_fraction=0.1))
    assert torch.equal(again.test[0], b.test[0])  # split_seed fixes the test set


def test_registry_lists_datasets():
    assert {"mnist1d", "digits", "npz", "csv"} <= set(datasets())


# ---- npz ----------------------------------------------------------------------------------------------

def rand_xy(n=60, shape=(2, 8), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype(np.float32), np.arange(n) % classes


def npz(tmp_path, name="d.npz", **arrays):
    p = tmp_path / name
    np.savez(p, **arrays)
    return str(p)


def test_npz_keeps_shape_and_carves_a_stratified_test(tmp_path):
    x, y = rand_xy(60, (2, 8))
    spec = data_spec(name="npz", path=npz(tmp_path, x=x, y=y), test_fraction=0.2, val_fraction=0.0)
    b = load_data(spec)
    assert isinstance(b, DataBundle) and b.in_shape == (2, 8) and b.num_classes == 3
    assert torch.bincount(b.test[1]).tolist() == [4, 4, 4]
    assert len(b.train[1]) == 48
    # fixed by split_seed, not by the run's seed
    assert torch.equal(load_data(spec, seed=5).test[0], b.test[0])
    other = data_spec(name="npz", path=spec.path, test_fraction=0.2, val_fraction=0.0, split_seed=1)
    assert not torch.equal(load_data(other).test[0], b.test[0])


def test_npz_with_test_arrays_features_and_string_labels(tmp_path):
    x, y = rand_xy(30, ())  # 1D x: one feature per sample
    xt, yt = rand_xy(9, (), seed=1)
    names = np.array(["cat", "dog", "emu"])
    b = load_data(data_spec(name="npz", val_fraction=0.0,
                            path=npz(tmp_path, x=x, y=names[y], x_test=xt, y_test=names[yt])))
    assert b.train[0].shape == (30, 1) and b.test[0].shape == (9, 1)
    assert b.class_names == ["cat", "dog", "emu"] and b.num_classes == 3
    assert torch.equal(b.train[1], torch.from_numpy(y))
    # (N, F) features and integer labels stored as floats
    x2, y2 = rand_xy(20, (5,), classes=2)
    b2 = load_data(data_spec(name="npz", val_fraction=0.0, path=npz(tmp_path, "f.npz", x=x2, y=y2.astype(float))))
    assert b2.in_shape == (5,) and b2.train[1].dtype == torch.int64


def test_npz_segmentation_label_maps(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 1, 6, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    b = load_data(data_spec(name="npz", val_fraction=0.0, path=npz(tmp_path, x=x, y=y)))
    assert b.task == "segmentation" and b.train[1].shape[1:] == (6, 6) and b.num_classes == 2


def err(spec_kw) -> str:
    with pytest.raises(DltricksError) as e:
        load_data(data_spec(**spec_kw))
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_npz_errors(tmp_path):
    x, y = rand_xy(40, (2, 8))
    assert "no such file" in err(dict(name="npz", path=str(tmp_path / "missing.npz")))

    (tmp_path / "text.npz").write_text("not an archive at all")
    assert "not an .npz archive" in err(dict(name="npz", path=str(tmp_path / "text.npz")))

    good = (tmp_path / npz(tmp_path, "good.npz", x=x, y=y)).read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    assert "npz archive" in err(dict(name="npz", path=str(tmp_path / "cut.npz")))

    np.save(tmp_path / "one.npy", x)
    assert "single .npy array" in err(dict(name="npz", path=str(tmp_path / "one.npy")))

    msg = err(dict(name="npz", path=npz(tmp_path, "noy.npz", x=x, labels=y)))
    assert "no array y" in msg and "labels" in msg

    msg = err(dict(name="npz", path=npz(tmp_path, "len.npz", x=x, y=y[:30])))
    assert "40 samples" in msg and "30" in msg

    bad = x.copy()
    bad[3, 1, 4] = np.nan
    bad[7, 0, 0] = np.inf
    bad[7, 0, 1] = np.nan
    msg = err(dict(name="npz", path=npz(tmp_path, "nan.npz", x=bad, y=y)))
    assert "3 non-finite" in msg and "2 NaN" in msg and "1 infinite" in msg
    assert "2 of 40 samples" in msg and "sample 3" in msg and "(1, 4)" in msg

    msg = err(dict(name="npz", path=npz(tmp_path, "frac.npz", x=x, y=y + 0.5)))
    assert "non-integer labels" in msg and "0.5" in msg

    msg = err(dict(name="npz", path=npz(tmp_path, "neg.npz", x=x, y=y - 1)))
    assert "negative labels" in msg and "-1" in msg

    msg = err(dict(name="npz", path=npz(tmp_path, "one_class.npz", x=x, y=np.zeros(40, dtype=int))))
    assert "1 class" in msg and "at least 2" in msg

    msg = err(dict(name="npz", path=npz(tmp_path, "half.npz", x=x, y=y, x_test=x)))
    assert "x_test but no y_test" in msg

    msg = err(dict(name="npz", path=npz(tmp_path, "shape.npz", x=x, y=y, x_test=x[:, :1], y_test=y)))
    assert "x_test samples have shape" in msg

    msg = err(dict(name="npz", path=npz(tmp_path, "strx.npz", x=np.array(["a"] * 40), y=y)))
    assert "numeric" in msg


# ---- csv ----------------------------------------------------------------------------------------------

def csv_file(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def table(n=30, label=lambda i: ["setosa", "versicolor", "virginica"][i % 3], extra=""):
    rows = "".join(f"{i * 0.5},{(i * 7) % 5},{label(i)}{extra}\n" for i in range(n))
    return "sepal,petal,species\n" + rows


def test_csv_string_labels_sorted_with_names(tmp_path):
    p = csv_file(tmp_path, table(30, lambda i: ["virginica", "setosa", "versicolor"][i % 3]))
    # standardize off: this checks what the loader parses (standardisation has its own tests below)
    b = load_data(data_spec(name="csv", path=p, label_column="species", val_fraction=0.0, test_fraction=0.2,
                            standardize=False))
    assert b.class_names == ["setosa", "versicolor", "virginica"]
    assert b.in_shape == (2,) and b.train[0].dtype == torch.float32
    assert len(b.test[1]) == 6 and torch.bincount(b.test[1]).tolist() == [2, 2, 2]
    # row i has label virginica/setosa/versicolor -> 2/0/1, and its features are i*0.5 and (7i)%5
    x_all = torch.cat([b.train[0], b.test[0]])
    y_all = torch.cat([b.train[1], b.test[1]])
    i = (x_all[:, 0] * 2).round().long()
    assert torch.equal(y_all, torch.tensor([2, 0, 1])[i % 3])
    assert torch.equal(x_all[:, 1], ((i * 7) % 5).float())


def test_csv_integer_labels_and_test_file(tmp_path):
    p = csv_file(tmp_path, table(20, lambda i: i % 2))
    t = csv_file(tmp_path, table(6, lambda i: i % 2), "test.csv")
    b = load_data(data_spec(name="csv", path=p, test_path=t, label_column="species", val_fraction=0.0))
    assert len(b.train[1]) == 20 and len(b.test[1]) == 6 and b.class_names == ["0", "1"]
    # semicolon-separated with a default "label" column works too
    s = csv_file(tmp_path, "a;b;label\n" + "".join(f"{i};{i * 2};{i % 2}\n" for i in range(10)), "semi.csv")
    b2 = load_data(data_spec(name="csv", path=s, val_fraction=0.0, test_fraction=0.2))
    assert b2.in_shape == (2,)


def test_csv_errors(tmp_path):
    assert "no such file" in err(dict(name="csv", path=str(tmp_path / "nope.csv")))

    msg = err(dict(name="csv", path=csv_file(tmp_path, table()), label_column="label"))
    assert "no label column 'label'" in msg and "sepal, petal, species" in msg

    msg = err(dict(name="csv", path=csv_file(tmp_path, table(), "typo.csv"), label_column="specie"))
    assert "did you mean species" in msg

    # a word among numbers is a typo (a column of words is one-hot encoded: tests/test_user_data.py)
    text = "colour,size,label\nred,1,0\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(9))
    msg = err(dict(name="csv", path=csv_file(tmp_path, text, "nonnum.csv")))
    assert "column 'colour' is not numeric" in msg and "line 2" in msg and "'red'" in msg

    text = "a,b,label\n1,2,0\n3,,1\n4,nan,0\n5,inf,1\n"
    msg = err(dict(name="csv", path=csv_file(tmp_path, text, "nan.csv")))
    assert "3 non-finite" in msg and "line 3" in msg and "column 'b'" in msg

    text = "a,label\n1,0\n2,1.5\n3,1\n"
    msg = err(dict(name="csv", path=csv_file(tmp_path, text, "frac.csv")))
    assert "non-integer labels" in msg and "1.5" in msg and "line 3" in msg

    text = "a,label\n1,0\n2,-2\n3,1\n"
    msg = err(dict(name="csv", path=csv_file(tmp_path, text, "neg.csv")))
    assert "negative labels" in msg and "-2" in msg

    text = "a,label\n1,cat\n2,cat\n3,cat\n"
    msg = err(dict(name="csv", path=csv_file(tmp_path, text, "oneclass.csv")))
    assert "1 class (cat)" in msg

    text = "a,b,label\n1,2,0\n1,0\n"
    assert "2 fields but the header has 3" in err(dict(name="csv", path=csv_file(tmp_path, text, "ragged.csv")))

    assert "empty" in err(dict(name="csv", path=csv_file(tmp_path, "", "empty.csv")))

    p = csv_file(tmp_path, table(10), "train.csv")
    t = csv_file(tmp_path, "sepal,width,species\n1,2,setosa\n", "test.csv")
    msg = err(dict(name="csv", path=p, test_path=t, label_column="species"))
    assert "feature columns" in msg


def test_user_files_train_end_to_end(tmp_path, ledger_home):
    from dltricks.ledger import Ledger
    from dltricks.runner.run import train

    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = rng.normal(size=(90, 2, 12)).astype(np.float32) + y[:, None, None]
    path = npz(tmp_path, x=x, y=y)
    recipe = Recipe.from_dict({"name": "mine", "data": {"name": "npz", "path": path},
                               "model": {"name": "cnn", "channels": [4, 8]},
                               "train": {"epochs": 3, "batch_size": 16, "lr": 0.01}})
    result = train(recipe, ledger=Ledger(), progress=False)
    assert result.metrics["test_accuracy"] > 0.6 and result.status == "completed"
    flat = x.reshape(90, -1)[:, :8]
    rows = "".join(",".join(map(str, v)) + f",{'abc'[c]}\n" for v, c in zip(flat, y))
    rows = ",".join(f"f{i}" for i in range(8)) + ",label\n" + rows
    table_path = csv_file(tmp_path, rows, "t.csv")
    result = train(recipe.patch({"data.name": "csv", "data.path": table_path, "model.name": "mlp"}),
                   ledger=Ledger(), progress=False)
    assert result.metrics["test_accuracy"] > 0.6


def test_labels_that_skip_a_class_id_are_refused_with_the_fix(tmp_path):
    """Labels 1..4 would make a 5-class head whose class 0 never occurs: refused, with what to do."""
    x, y = rand_xy(40, (3,), classes=4)
    msg = err(dict(name="npz", path=npz(tmp_path, "offset.npz", x=x, y=y + 1)))
    assert "labels 1, 2, 3, 4" in msg and "class 0 never occurs" in msg and "5 outputs for 4 classes" in msg
    assert "subtract 1" in msg
    msg = err(dict(name="npz", path=npz(tmp_path, "gap.npz", x=x, y=np.where(y == 2, 5, y))))
    assert "class 2, 4 never occurs" in msg and "renumber" in msg
    p = csv_file(tmp_path, table(20, lambda i: 1 + i % 3), "one_based.csv")
    assert "subtract 1" in err(dict(name="csv", path=p, label_column="species"))
    # label maps (segmentation) may lack a class in a given file
    maps = np.zeros((6, 4, 4), dtype=np.int64)
    maps[:, 1, 1] = 2
    b = load_data(data_spec(name="npz", val_fraction=0.0, path=npz(tmp_path, "seg.npz", x=np.ones((6, 1, 4, 4)),
                                                                  y=maps)))
    assert b.task == "segmentation" and b.num_classes == 3


# ---- learning set-ups: class subsets, few labels, regression and multi-task targets ------------------------

def test_classes_keeps_and_relabels_in_every_split_with_their_names():
    b = load_data(data_spec(name="digits", classes=[7, 3, 9], val_fraction=0.2))
    assert b.num_classes == 3 and b.class_names == ["7", "3", "9"]
    full = load_data(data_spec(name="digits", val_fraction=0.0))
    for part in (b.train, b.val, b.test):
        assert set(part[1].unique().tolist()) == {0, 1, 2}
    # relabelled in the order given, and every test sample of those classes is kept
    keep = (full.test[1] == 7) | (full.test[1] == 3) | (full.test[1] == 9)
    assert torch.equal(b.test[0], full.test[0][keep])
    assert b.test[1].tolist() == [[7, 3, 9].index(int(c)) for c in full.test[1][keep]]
    assert "not classes of this dataset" in err(dict(name="digits", classes=[3, 10]))
    assert "at least 2" in err(dict(name="digits", classes=[3]))


def test_labels_per_class_keeps_n_per_class_by_seed_and_the_rest_unlabelled():
    spec = data_spec(name="digits", classes=[0, 1, 2], labels_per_class=5, val_fraction=0.0)
    b = load_data(spec, seed=0)
    assert torch.bincount(b.train[1]).tolist() == [5, 5, 5]
    full = load_data(data_spec(name="digits", classes=[0, 1, 2], val_fraction=0.0))
    assert len(b.unlabelled) == len(full.train[1]) - 15 and b.unlabelled.shape[1:] == b.in_shape
    again, other = load_data(spec, seed=0), load_data(spec, seed=1)
    assert torch.equal(again.train[0], b.train[0]) and not torch.equal(other.train[0], b.train[0])
    msg = err(dict(name="digits", classes=[0, 1], labels_per_class=1000))
    assert "labels_per_class = 1000" in msg and "has only" in msg


def test_mnist1d_tasks_has_three_targets_on_very_different_scales():
    b = load_data(data_spec(name="mnist1d_tasks", num_samples=200, val_fraction=0.0))
    assert [(t.name, t.kind) for t in b.targets] == [("digit", "classification"), ("peak", "regression"),
                                                     ("energy", "regression")]
    y = b.train[1]
    assert y.shape == (160, 3) and b.num_classes == 12 and b.task == "multitask"
    assert torch.equal(y[:, 1], b.train[0][:, 0].argmax(1).float())  # an exact function of the input
    assert y[:, 2].std() > 20 * y[:, 1].std()


def test_csv_regression_columns_and_non_numeric_target(tmp_path):
    rows = ["a,b,label,price"] + [f"{i},{i % 3},{'cat' if i % 2 else 'dog'},{10.5 * i}" for i in range(20)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    b = load_data(data_spec(name="csv", path=str(tmp_path / "t.csv"), regression_columns=["price"],
                            val_fraction=0.0, test_fraction=0.25, standardize=False))  # the raw features
    assert [(t.name, t.kind, t.outputs) for t in b.targets] == [("label", "classification", 2),
                                                                ("price", "regression", 1)]
    x, y = b.train
    assert x.shape == (15, 2) and y.shape == (15, 2)
    assert torch.allclose(y[:, 1], x[:, 0] * 10.5)
    (tmp_path / "r.csv").write_text("\n".join(r.rsplit(",", 2)[0] + "," + r.rsplit(",", 1)[1] for r in rows) + "\n")
    only = load_data(data_spec(name="csv", path=str(tmp_path / "r.csv"), regression_columns=["price", "b"],
                               val_fraction=0.0))  # no 'label' column: regression only
    assert only.task == "regression" and [t.name for t in only.targets] == ["price", "b"]
    rows[5] = "4,1,dog,cheap"
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    msg = err(dict(name="csv", path=str(tmp_path / "bad.csv"), regression_columns=["price"]))
    assert "'price'" in msg and "not numeric" in msg and "line 6" in msg and "'cheap'" in msg
    assert "no regression column 'prise'" in err(dict(name="csv", path=str(tmp_path / "t.csv"),
                                                      regression_columns=["prise"]))


def test_npz_regression_arrays(tmp_path):
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    np.savez(tmp_path / "r.npz", x=x, age=x[:, 0] * 100, y=(x[:, 1] > 0).astype(int))
    b = load_data(data_spec(name="npz", path=str(tmp_path / "r.npz"), regression=["age"], val_fraction=0.0))
    assert [t.name for t in b.targets] == ["y", "age"] and b.train[1].shape[1] == 2
    np.savez(tmp_path / "s.npz", x=x, age=np.array(["old"] * 30))
    assert "must be numeric" in err(dict(name="npz", path=str(tmp_path / "s.npz"), regression=["age"]))


# ---- data.standardize ----------------------------------------------------------------------------------

def wine_csv(tmp_path, name="wine.csv", rows=None) -> str:
    """scikit-learn's bundled wine data (178 x 13, feature std from 0.12 to 314) as a CSV table."""
    from sklearn.datasets import load_wine

    d = load_wine()
    head = ",".join([n.replace("/", "_") for n in d.feature_names] + ["label"])
    pick = range(len(d.target)) if rows is None else rows
    body = [",".join(f"{v:g}" for v in d.data[i]) + f",{int(d.target[i])}" for i in pick]
    return csv_file(tmp_path, "\n".join([head, *body]) + "\n", name)


def test_csv_features_are_standardised_with_statistics_of_the_training_split_only(tmp_path):
    from dltricks.data.standardize import load_standardizer, save_standardizer

    path = wine_csv(tmp_path)
    raw = load_data(data_spec(name="csv", path=path, standardize=False))
    b = load_data(data_spec(name="csv", path=path))  # the default, "auto", is on for a CSV table
    assert raw.standardizer is None and b.standardizer is not None
    # the same samples in each split (the splits do not depend on standardisation)
    assert torch.equal(raw.train[1], b.train[1]) and torch.equal(raw.test[1], b.test[1])
    x = raw.train[0].double()
    assert torch.allclose(b.standardizer.mean.double(), x.mean(0), rtol=1e-5)
    assert torch.allclose(b.standardizer.std.double(), x.std(0, unbiased=False), rtol=1e-4)
    assert torch.allclose(b.train[0].mean(0), torch.zeros(13), atol=1e-5)
    assert torch.allclose(b.train[0].std(0, unbiased=False), torch.ones(13), atol=1e-4)
    # validation and test use the training split's numbers, so they are not exactly centred themselves
    for part in ("val", "test"):
        r, s = getattr(raw, part)[0], getattr(b, part)[0]
        assert torch.allclose(s, (r - b.standardizer.mean) / b.standardizer.std, atol=1e-5)
    assert b.val[0].mean(0).abs().max() > 0.01 and b.test[0].mean(0).abs().max() > 0.01
    # a test table far off the training data does not move the statistics
    test = wine_csv(tmp_path, "test.csv", rows=range(0, 178, 4))
    off = (tmp_path / "off.csv")
    lines = (tmp_path / "test.csv").read_text().splitlines()
    off.write_text("\n".join([lines[0]] + [",".join(str(float(v) * 50) for v in ln.split(",")[:-1]) + ","
                                           + ln.split(",")[-1] for ln in lines[1:]]) + "\n")
    one = load_data(data_spec(name="csv", path=path, test_path=test))
    other = load_data(data_spec(name="csv", path=path, test_path=str(off)))
    assert torch.equal(one.standardizer.mean, other.standardizer.mean)
    assert torch.equal(one.standardizer.std, other.standardizer.std)
    # written into a run folder as JSON, read back the same
    saved = save_standardizer(b, tmp_path / "run")
    assert saved.name == "standardize.json" and "mean" in saved.read_text()
    back = load_standardizer(tmp_path / "run")
    assert torch.equal(back.mean, b.standardizer.mean) and torch.equal(back.std, b.standardizer.std)
    assert torch.allclose(back.apply(raw.test[0]), b.test[0])
    assert save_standardizer(raw, tmp_path / "none") is None and load_standardizer(tmp_path / "none") is None


def test_standardize_auto_is_off_for_signals_and_bundled_data_and_true_scales_channels(tmp_path, cache):
    x, y = rand_xy(60, (2, 8))
    x[:, 1] *= 100
    path = npz(tmp_path, x=x, y=y)
    assert load_data(data_spec(name="npz", path=path)).standardizer is None  # (N, C, L): auto is off
    b = load_data(data_spec(name="npz", path=path, standardize=True))
    per_channel = b.train[0].transpose(0, 1).reshape(2, -1)
    assert torch.allclose(per_channel.std(1, unbiased=False), torch.ones(2), atol=1e-4)
    assert b.standardizer.mean.shape == (2,)
    flat = npz(tmp_path, "flat.npz", x=x[:, 0], y=y)  # (N, F) features: auto is on
    assert load_data(data_spec(name="npz", path=flat)).standardizer is not None
    small = {"name": "mnist1d", "num_samples": 600, "train_limit": 200}
    assert load_data(data_spec(**small)).standardizer is None
    assert load_data(data_spec(**small, standardize=True)).standardizer is not None
    const = x[:, 0].copy()
    const[:, 3] = 5.0  # a constant column is centred, not divided by zero
    b = load_data(data_spec(name="npz", path=npz(tmp_path, "c.npz", x=const, y=y), val_fraction=0.0))
    assert torch.isfinite(b.train[0]).all() and torch.equal(b.train[0][:, 3], torch.zeros(len(b.train[0])))


def test_wine_with_the_default_csv_recipe_reaches_090(tmp_path, ledger_home):
    from dltricks.ledger import Ledger
    from dltricks.runner.run import train

    recipe = Recipe.from_dict({"name": "wine", "data": {"name": "csv", "path": wine_csv(tmp_path)},
                               "model": {"name": "mlp"}})
    result = train(recipe, ledger=Ledger(), progress=False)
    assert result.status == "completed" and result.metrics["test_accuracy"] >= 0.9
    # read as it is (the 0.36): the same recipe without standardisation is far worse
    raw = train(recipe.patch({"data.standardize": False}), ledger=Ledger(), progress=False)
    assert raw.metrics["test_accuracy"] < result.metrics["test_accuracy"] - 0.2
