"""Data layer: built-in and synthetic sets, splits, normalization, user formats (CSV, NPZ, images, IDX)."""

import gzip
import json

import numpy as np
import pytest

from tuinet.data import Dataset, Normalizer, builtin_datasets, load_dataset, shuffled_batches
from tuinet.data.idx import read_idx, write_idx
from tuinet.data.splits import split_indices


def quiet(msgs=None):
    return (msgs.append if msgs is not None else (lambda m: None))


def assert_engine_ready(ds: Dataset):
    for name in ("train", "val", "test"):
        x, y = ds.split(name)
        assert x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable and x.flags.owndata
        assert x.shape[1:] == ds.input_shape
        assert len(x) == len(y)
        if ds.task == "classification":
            assert y.dtype == np.int64 and y.ndim == 1
        else:
            assert y.dtype == np.float32 and y.shape[1:] == (ds.num_outputs,)


# ---- built-in and synthetic -------------------------------------------------------------------------

def test_builtin_list_covers_required_sets():
    names = {d["name"] for d in builtin_datasets()}
    assert {"mnist", "digits", "iris", "wine", "spiral", "circles", "xor", "gaussian", "moons", "sine"} <= names
    for d in builtin_datasets():
        assert set(d) >= {"name", "task", "samples", "input_shape", "classes", "description"}
    json.dumps(builtin_datasets())


@pytest.mark.parametrize("name,shape,classes", [("iris", (4,), 3), ("wine", (13,), 3), ("digits", (8, 8, 1), 10)])
def test_tables_load(name, shape, classes):
    ds = load_dataset(name, log=quiet())
    assert ds.input_shape == shape and ds.num_outputs == classes and ds.task == "classification"
    assert_engine_ready(ds)
    n = len(ds.x_train) + len(ds.x_val) + len(ds.x_test)
    assert n == next(d["samples"] for d in builtin_datasets() if d["name"] == name)


def test_iris_class_names_kept():
    ds = load_dataset("iris", log=quiet())
    assert ds.class_names == ["setosa", "versicolor", "virginica"]
    assert ds.feature_names[0] == "sepal_length_cm"


@pytest.mark.parametrize("name", ["spiral", "circles", "xor", "gaussian", "moons"])
def test_synthetic_classification_shapes(name):
    ds = load_dataset(name, n_samples=200, noise=0.1, seed=3, log=quiet())
    assert ds.input_shape == (2,) and ds.class_names == ["0", "1"]
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (160, 20, 20)
    assert ds.class_counts("train") == [80, 80]
    assert_engine_ready(ds)


@pytest.mark.parametrize("name,dims", [("sine", 1), ("regression", 2)])
def test_synthetic_regression_shapes(name, dims):
    ds = load_dataset(name, n_samples=100, log=quiet())
    assert ds.task == "regression" and ds.input_shape == (dims,) and ds.num_outputs == 1
    assert ds.class_names == []
    assert_engine_ready(ds)


def test_synthetic_seeded():
    a = load_dataset("spiral", n_samples=100, seed=1, log=quiet())
    b = load_dataset("spiral", n_samples=100, seed=1, log=quiet())
    c = load_dataset("spiral", n_samples=100, seed=2, log=quiet())
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_train, c.x_train)


def test_mnist_shapes_and_scaling():
    ds = load_dataset("mnist", limit=300, log=quiet())
    assert ds.input_shape == (28, 28, 1) and ds.class_names == [str(i) for i in range(10)]
    assert ds.normalizer.kind == "minmax"
    assert ds.x_train.shape == (300, 28, 28, 1)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    # pixel / 255 exactly
    assert np.allclose(ds.x_train * 255, np.round(ds.x_train * 255), atol=1e-4)
    assert_engine_ready(ds)


def test_mnist_full_splits_keep_own_test_set():
    ds = load_dataset("mnist", log=quiet())
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (54000, 6000, 10000)
    counts = np.array(ds.class_counts("train")) + np.array(ds.class_counts("val"))
    assert counts.sum() == 60000
    # stratified: each class's share of val matches its share of train within one image
    val = np.array(ds.class_counts("val"))
    assert np.all(np.abs(val - counts * 0.1) <= 1)
    assert ds.describe()["sizes"] == {"train": 54000, "val": 6000, "test": 10000}


# ---- splits, batches, normalizer ------------------------------------------------------------------

def test_stratified_split_sizes_and_proportions():
    y = np.repeat([0, 1, 2], [500, 300, 200])
    rest, val, test = split_indices(1000, (0.1, 0.1), np.random.default_rng(0), y)
    assert (len(rest), len(val), len(test)) == (800, 100, 100)
    assert np.bincount(y[val]).tolist() == [50, 30, 20]
    assert np.bincount(y[test]).tolist() == [50, 30, 20]
    assert len(np.unique(np.concatenate([rest, val, test]))) == 1000


def test_split_seeded():
    y = np.arange(100) % 4
    a = split_indices(100, (0.2,), np.random.default_rng(5), y)
    b = split_indices(100, (0.2,), np.random.default_rng(5), y)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))


def test_shuffled_batches_cover_epoch_and_are_seeded():
    batches = list(shuffled_batches(10, 4, np.random.default_rng(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    again = list(shuffled_batches(10, 4, np.random.default_rng(0)))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    rng = np.random.default_rng(0)
    e1, e2 = (np.concatenate(list(shuffled_batches(50, 8, rng))) for _ in range(2))
    assert not np.array_equal(e1, e2)  # a fresh order each epoch


def test_normalizer_fitted_on_train_only():
    ds = load_dataset("wine", log=quiet())
    x_train_raw = ds.normalizer.inverse_transform(ds.x_train)
    ref = Normalizer("standard").fit(x_train_raw)
    assert np.allclose(ref.shift, ds.normalizer.shift, rtol=1e-4)
    assert np.allclose(ds.x_train.mean(axis=0), 0, atol=1e-4)
    assert np.allclose(ds.x_train.std(axis=0), 1, atol=1e-3)
    # the other splits are transformed with the train statistics, so they are not exactly standardized
    assert not np.allclose(ds.x_val.mean(axis=0), 0, atol=1e-4)


@pytest.mark.parametrize("kind", ["minmax", "standard", "none"])
def test_normalizer_round_trip(kind):
    rng = np.random.default_rng(0)
    x = rng.normal(5, 3, (50, 4))
    x[:, 2] = 7.0  # a constant column must not divide by zero
    n = Normalizer(kind).fit(x)
    d = json.loads(json.dumps(n.to_dict()))
    m = Normalizer.from_dict(d)
    assert m == n
    out = m.transform(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.flags.writeable
    assert np.array_equal(out, n.transform(x)) and np.all(np.isfinite(out))
    assert np.allclose(m.inverse_transform(out), x, atol=1e-4)
    if kind == "minmax":
        assert out[:, [0, 1, 3]].min() == 0 and np.isclose(out[:, [0, 1, 3]].max(), 1)


def test_images_normalized_per_channel():
    x = np.random.default_rng(0).integers(0, 256, (20, 4, 4, 3), dtype=np.uint8)
    x[..., 0] = x[..., 0] // 2
    n = Normalizer("minmax").fit(x)
    assert n.shift.shape == (3,)
    out = n.transform(x)
    assert out.shape == x.shape and np.allclose(out.reshape(-1, 3).max(axis=0), 1)


def test_limit_takes_stratified_seeded_subset():
    a = load_dataset("digits", limit=100, log=quiet())
    b = load_dataset("digits", limit=100, log=quiet())
    assert len(a.x_train) == 100 and np.array_equal(a.x_train, b.x_train)
    assert min(a.class_counts("train")) >= 9


def test_invalid_splits_rejected():
    from tuinet.errors import DataError
    with pytest.raises(DataError, match="invalid splits"):
        load_dataset("iris", val_split=0.6, test_split=0.5)


# ---- CSV -----------------------------------------------------------------------------------------

def test_csv_text_labels_and_default_last_column(tmp_path):
    p = tmp_path / "pets.csv"
    rows = ["weight,height,kind"] + [f"{i},{i % 7},{'cat' if i % 2 else 'dog'}" for i in range(40)]
    p.write_text("\n".join(rows) + "\n")
    ds = load_dataset(str(p), log=quiet())
    assert ds.name == str(p) and ds.task == "classification"
    assert ds.class_names == ["cat", "dog"] and ds.feature_names == ["weight", "height"]
    assert_engine_ready(ds)


def test_csv_gz_and_target_option(tmp_path):
    p = tmp_path / "t.csv.gz"
    rows = ["label,a,b"] + [f"{i % 3},{i},{i * 2}" for i in range(30)]
    p.write_bytes(gzip.compress(("\n".join(rows)).encode()))
    msgs = []
    ds = load_dataset(str(p), target="label", log=msgs.append)
    assert ds.task == "classification" and ds.class_names == ["0", "1", "2"]
    assert ds.feature_names == ["a", "b"]
    assert any("treating as classification" in m for m in msgs)


def test_csv_continuous_target_is_regression(tmp_path):
    p = tmp_path / "r.csv"
    rng = np.random.default_rng(0)
    rows = ["x,y"] + [f"{v:.4f},{2 * v + 0.1:.4f}" for v in rng.normal(size=60)]
    p.write_text("\n".join(rows))
    msgs = []
    ds = load_dataset(str(p), log=msgs.append)
    assert ds.task == "regression" and ds.y_train.shape[1:] == (1,) and ds.y_train.dtype == np.float32
    assert any("target 'y' is continuous" in m and "regression" in m for m in msgs)
    # raw targets: not normalized
    assert np.allclose(ds.y_train[:, 0], 2 * ds.normalizer.inverse_transform(ds.x_train)[:, 0] + 0.1, atol=1e-3)


def test_csv_task_override(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("x,y\n" + "".join(f"{i},{i % 3}\n" for i in range(30)))
    assert load_dataset(str(p), task="regression", log=quiet()).task == "regression"


def test_csv_missing_and_non_numeric_rows_dropped(tmp_path):
    p = tmp_path / "m.csv"
    rows = ["a,b,c,label"] + [f"{i},{i * 2},{i % 5},{'x' if i % 2 else 'y'}" for i in range(40)]
    rows[3] = "2,,2,y"        # missing b
    rows[5] = "4,8,oops,y"    # non-numeric c
    rows[7] = "6,NA,1,y"      # missing b
    p.write_text("\n".join(rows))
    msgs = []
    ds = load_dataset(str(p), log=msgs.append)
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 37
    note = next(m for m in msgs if "dropped" in m)
    assert "dropped 3 of 40 rows" in note and "(columns: b (2), c (1))" in note


def test_csv_constant_columns_reported(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("a,k,label\n" + "".join(f"{i},5,{i % 2}\n" for i in range(20)))
    msgs = []
    ds = load_dataset(str(p), log=msgs.append)
    assert any("constant columns" in m and "k" in m for m in msgs)
    assert np.all(np.isfinite(ds.x_train))


def test_csv_several_regression_targets(tmp_path):
    p = tmp_path / "multi.csv"
    rng = np.random.default_rng(1)
    p.write_text("x,u,v\n" + "".join(f"{a:.3f},{a * 2:.3f},{a - 1:.3f}\n" for a in rng.normal(size=30)))
    ds = load_dataset(str(p), target="u,v", log=quiet())
    assert ds.task == "regression" and ds.num_outputs == 2 and ds.y_train.shape[1] == 2


# ---- NPZ ------------------------------------------------------------------------------------------

def test_npz_table(tmp_path):
    p = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(p, x=rng.normal(size=(50, 3)), y=np.arange(50) % 2)
    ds = load_dataset(str(p), log=quiet())
    assert ds.input_shape == (3,) and ds.task == "classification" and ds.num_outputs == 2
    assert_engine_ready(ds)


def test_npz_images_with_own_test_set(tmp_path):
    p = tmp_path / "img.npz"
    rng = np.random.default_rng(0)
    np.savez(p, x=rng.integers(0, 256, (40, 6, 6), dtype=np.uint8), y=np.arange(40) % 4,
             x_test=rng.integers(0, 256, (8, 6, 6), dtype=np.uint8), y_test=np.arange(8) % 4)
    ds = load_dataset(str(p), log=quiet())
    assert ds.input_shape == (6, 6, 1) and ds.normalizer.kind == "minmax"
    assert len(ds.x_test) == 8 and len(ds.x_train) + len(ds.x_val) == 40
    assert_engine_ready(ds)


def test_npz_regression_and_nan_rows(tmp_path):
    p = tmp_path / "r.npz"
    x = np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32)
    x[4, 1] = np.nan
    np.savez(p, x=x, y=x[:, :1] * 0.37)
    msgs = []
    ds = load_dataset(str(p), log=msgs.append)
    assert ds.task == "regression" and any("dropped 1 of 30" in m for m in msgs)


# ---- image folders --------------------------------------------------------------------------------

def make_image_folder(root, classes=("cat", "dog"), per_class=6, size=(10, 8)):
    from PIL import Image
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_image_folder_gray_and_rgb(tmp_path):
    root = make_image_folder(tmp_path / "pets")
    ds = load_dataset(str(root), log=quiet())
    assert ds.class_names == ["cat", "dog"] and ds.input_shape == (8, 10, 1)
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 12
    assert_engine_ready(ds)
    rgb = load_dataset(str(root), color="rgb", image_size=(5, 4), log=quiet())
    assert rgb.input_shape == (5, 4, 3)
    assert 0 <= rgb.x_train.min() and rgb.x_train.max() <= 1


# ---- IDX ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, monkeypatch, suffix):
    monkeypatch.setenv("TUINET_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 5, 4), dtype=np.uint8)
    write_idx(tmp_path / f"a{suffix}", x)
    for _ in range(2):  # the second read of a .gz comes from the cache
        back = read_idx(tmp_path / f"a{suffix}")
        assert back.dtype == np.uint8 and np.array_equal(back, x) and back.flags.writeable
    f = rng.normal(size=(3, 2)).astype(np.float32)
    write_idx(tmp_path / "f.idx", f)
    assert np.array_equal(read_idx(tmp_path / "f.idx"), f)


def write_pair(folder, prefix, n, classes=3, hw=(6, 5), gz=True):
    rng = np.random.default_rng(len(prefix) + n)
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n,) + hw, dtype=np.uint8))
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", (np.arange(n) % classes).astype(np.uint8))


def test_idx_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TUINET_CACHE", str(tmp_path / "cache"))
    write_pair(tmp_path, "train", 40)
    write_pair(tmp_path, "t10k", 9, gz=False)
    single = load_dataset(str(tmp_path / "train-images-idx3-ubyte.gz"), log=quiet())
    assert single.input_shape == (6, 5, 1) and len(single.x_train) == 32
    folder = load_dataset(str(tmp_path), log=quiet())
    assert len(folder.x_test) == 9 and len(folder.x_train) + len(folder.x_val) == 40
    assert folder.class_names == ["0", "1", "2"]
    assert_engine_ready(folder)


def test_idx_cache_invalidated_when_file_changes(tmp_path, monkeypatch):
    import os
    monkeypatch.setenv("TUINET_CACHE", str(tmp_path / "cache"))
    p = tmp_path / "x-images-idx3-ubyte.gz"
    write_idx(p, np.zeros((2, 2, 2), np.uint8))
    read_idx(p)
    write_idx(p, np.ones((3, 2, 2), np.uint8))
    os.utime(p, ns=(1, 10**18))  # a different mtime even on coarse file systems
    assert read_idx(p).shape == (3, 2, 2)


def test_describe_is_json():
    d = load_dataset("iris", log=quiet()).describe()
    json.dumps(d)
    assert d["sizes"] == {"train": 120, "val": 15, "test": 15} and d["class_counts"]["train"] == [40, 40, 40]


def test_summary_mentions_sizes_and_classes():
    s = load_dataset("iris", log=quiet()).summary()
    assert "train 120" in s and "setosa" in s and "petal_width_cm" in s


def test_csv_numeric_target_with_a_stray_text_value(tmp_path):
    p = tmp_path / "s.csv"
    rng = np.random.default_rng(2)
    rows = ["x,y"] + [f"{v:.3f},{v * 3:.3f}" for v in rng.normal(size=30)]
    rows[4] = "0.5,oops"
    p.write_text("\n".join(rows))
    msgs = []
    ds = load_dataset(str(p), log=msgs.append)
    assert ds.task == "regression" and any("dropped 1 of 30 rows" in m and "y (1)" in m for m in msgs)


def test_gathered_float32_equals_fancy_indexing_and_leaves_numpy_page_setting_alone():
    """MNIST-sized splits are allocated without NumPy's huge-page hint (see loader._empty_float32): same values, and
    the process-wide setting is as it was afterwards."""
    from tuinet.data.loader import _gather_float32

    toggle = (getattr(np, "_core", None) or np.core).multiarray._set_madvise_hugepage
    before = toggle(True)
    try:
        x = np.random.default_rng(0).integers(0, 256, (3000, 28, 28, 1), dtype=np.uint8)
        idx = np.random.default_rng(1).permutation(3000)[:2500]
        out = _gather_float32(x, idx, chunk=1000)
        assert out.dtype == np.float32 and out.flags.c_contiguous and out.flags.writeable
        assert np.array_equal(out, x[idx].astype(np.float32))
        assert toggle(True) is True  # still on after the gather
    finally:
        toggle(before)
