"""One finite-value policy for every loader: NaN, infinite and out-of-float32-range values are reported and dropped
(CSV, NPZ, IDX, synthetic sets), an all-bad input is one DataError, and nothing non-finite reaches the engine."""

import gzip

import numpy as np
import pytest

from tuinet.data import Normalizer, load_dataset
from tuinet.data.finite import FLOAT32_MAX, bad_rows, drop_nonfinite
from tuinet.data.idx import write_idx
from tuinet.data.inputs import load_inputs
from tuinet.errors import DataError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUINET_CACHE", str(tmp_path / "cache"))


def _all_finite(ds) -> bool:
    arrays = [ds.x_train, ds.x_val, ds.x_test]
    if ds.task == "regression":
        arrays += [ds.y_train, ds.y_val, ds.y_test]
    return all(np.isfinite(a).all() for a in arrays)


def _table(tmp_path, bad_cells, n=60, name="t.csv", regression=False):
    """A CSV of ``n`` rows (a, b, label) with ``bad_cells`` {(row, column): text} written in."""
    rng = np.random.default_rng(0)
    rows = ["a,b,label"]
    for i in range(n):
        cells = [f"{rng.normal():.4f}", f"{rng.normal():.4f}", f"{rng.normal() * 10:.4f}" if regression else str(i % 2)]
        for (r, c), text in bad_cells.items():
            if r == i:
                cells[c] = text
        rows.append(",".join(cells))
    p = tmp_path / name
    p.write_text("\n".join(rows) + "\n")
    return p


def test_policy_function_flags_nan_inf_and_beyond_float32():
    x = np.array([[1.0, 2.0], [np.inf, 0.0], [1e39, 0.0], [np.nan, 1.0], [-1e300, 0.0], [FLOAT32_MAX, 0.0]])
    assert bad_rows(x).tolist() == [False, True, True, True, True, False]
    assert not bad_rows(np.array([[2**62, 1]], dtype=np.int64)).any()  # integers always fit float32's range
    msgs = []
    kept, y = drop_nonfinite(x, np.arange(6), "src", msgs.append, feature_names=["p", "q"])
    assert len(kept) == 2 and y.tolist() == [0, 5]
    assert msgs == ["src: dropped 4 of 6 rows with NaN, infinite or out-of-float32-range values (columns: p (4))"]


@pytest.mark.parametrize("text", ["inf", "-inf", "Infinity", "1e400", "1e39", "-3.5e38"])
def test_csv_infinite_or_out_of_float32_range_feature_rows_dropped_and_reported(tmp_path, text):
    p = _table(tmp_path, {(3, 0): text, (7, 0): text})
    msgs = []
    ds = load_dataset(str(p), log=msgs.append)
    assert sum(len(ds.split(s)[0]) for s in ("train", "val", "test")) == 58
    assert any("dropped 2 of 60 rows" in m and "out-of-float32-range" in m and "a (2)" in m for m in msgs), msgs
    assert _all_finite(ds)


def test_csv_infinite_regression_target_dropped(tmp_path):
    p = _table(tmp_path, {(5, 2): "inf", (9, 2): "1e39"}, regression=True)
    msgs = []
    ds = load_dataset(str(p), task="regression", log=msgs.append)
    assert sum(len(ds.split(s)[0]) for s in ("train", "val", "test")) == 58
    assert any("label (2)" in m for m in msgs), msgs
    assert _all_finite(ds)


def test_csv_every_row_bad_is_one_error(tmp_path):
    p = tmp_path / "allbad.csv"
    p.write_text("a,b,label\n" + "".join(f"inf,{i},{i % 2}\n" for i in range(10)))
    with pytest.raises(DataError) as e:
        load_dataset(str(p), log=lambda m: None)
    msg = str(e.value)
    assert "allbad.csv" in msg and "every one of the 10 rows" in msg and "a (10)" in msg and "\n" not in msg


def test_csv_gz_goes_through_the_same_policy(tmp_path):
    plain = _table(tmp_path, {(2, 1): "1e400"})
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    msgs = []
    ds = load_dataset(str(gz), log=msgs.append)
    assert any("b (1)" in m for m in msgs) and _all_finite(ds)


def test_column_spanning_all_of_float32_is_refused_not_normalized_to_nan(tmp_path):
    # each value fits float32, but max - min does not: normalization would produce inf and NaN
    cells = {(i, 0): ("3e38" if i % 2 else "-3e38") for i in range(60)}
    p = _table(tmp_path, cells)
    with pytest.raises(DataError, match="column 'a' cannot be normalized in float32"):
        load_dataset(str(p), normalize="minmax", log=lambda m: None)


def test_npz_float64_beyond_float32_dropped(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    x[4, 1] = 1e300
    x[8, 0] = -np.inf
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(50) % 2)
    msgs = []
    ds = load_dataset(str(tmp_path / "d.npz"), log=msgs.append)
    assert sum(len(ds.split(s)[0]) for s in ("train", "val", "test")) == 48
    assert any("dropped 2 of 50 samples" in m and "x[0] (1)" in m and "x[1] (1)" in m for m in msgs), msgs
    assert _all_finite(ds)


def test_npz_regression_target_beyond_float32_dropped(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.normal(size=50) * 3
    y[10] = 1e300
    np.savez(tmp_path / "r.npz", x=rng.normal(size=(50, 2)), y=y)
    msgs = []
    ds = load_dataset(str(tmp_path / "r.npz"), task="regression", log=msgs.append)
    assert ds.task == "regression" and any("dropped 1 of 50" in m for m in msgs) and _all_finite(ds)


def test_npz_all_bad_is_one_error(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.full((6, 2), np.inf), y=np.arange(6) % 2)
    with pytest.raises(DataError, match="every one of the 6 samples"):
        load_dataset(str(tmp_path / "bad.npz"), log=lambda m: None)


def test_float_idx_images_with_inf_dropped(tmp_path):
    x = np.random.default_rng(0).random((20, 4, 4)).astype(np.float32)
    x[3, 0, 0] = np.inf
    x[5, 1, 1] = np.nan
    write_idx(tmp_path / "train-images-idx3-ubyte", x)
    write_idx(tmp_path / "train-labels-idx1-ubyte", (np.arange(20) % 2).astype(np.uint8))
    msgs = []
    ds = load_dataset(str(tmp_path), log=msgs.append)
    assert sum(len(ds.split(s)[0]) for s in ("train", "val", "test")) == 18
    assert any("dropped 2 of 20 images" in m for m in msgs) and _all_finite(ds)


def test_synthetic_noise_overflowing_float32_is_one_error():
    with pytest.raises(DataError, match="spiral: every one of the 100 samples"):
        load_dataset("spiral", n_samples=100, noise=1e300, log=lambda m: None)
    with pytest.raises(DataError, match="noise must be a finite number"):
        load_dataset("moons", noise=float("nan"))


def test_prediction_csv_row_with_infinite_value_refused(tmp_path):
    p = tmp_path / "in.csv"
    p.write_text("a,b\n1,2\n3,1e39\n")
    with pytest.raises(DataError) as e:
        load_inputs((str(p),), (2,), ["a", "b"])
    assert "in.csv" in str(e.value) and "line 3" in str(e.value) and "b is '1e39'" in str(e.value)


@pytest.mark.parametrize("record, words", [
    ("x", "expected an object"),
    ({"kind": "bogus"}, "kind must be one of"),
    ({"kind": "minmax", "shift": "abc", "scale": [1.0]}, "shift must be a list"),
    ({"kind": "minmax", "shift": [0.0], "scale": [float("nan")]}, "NaN, infinite"),
    ({"kind": "minmax", "shift": [0.0], "scale": [0.0]}, "scale must be > 0"),
    ({"kind": "minmax", "shift": [0.0, 1.0], "scale": [1.0]}, "differ in length"),
    ({"kind": "standard"}, "needs shift and scale"),
])
def test_saved_normalizer_record_checked(record, words):
    with pytest.raises(DataError, match=words):
        Normalizer.from_dict(record)
