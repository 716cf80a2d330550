"""Bad input: one clear line naming the file (and row or field), a non-zero exit and no traceback."""

import gzip

import numpy as np
import pytest
from click.testing import CliRunner

from tuinet.cli.datasets import datasets
from tuinet.data import load_dataset
from tuinet.data.idx import write_idx
from tuinet.errors import DataError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUINET_CACHE", str(tmp_path / "cache"))


def fails(source, *args):
    """Run `datasets show` and return its error line, checking the exit code and the absence of a traceback."""
    result = CliRunner().invoke(datasets, ["show", str(source), "--samples", "0", *args])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, DataError)  # turned into a ClickException, not raised through
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_missing_path(tmp_path):
    line = fails(tmp_path / "nope.csv")
    assert "nope.csv" in line and "no such file" in line


def test_empty_csv(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    assert "empty.csv" in fails(p) and "empty" in fails(p)


def test_header_only_csv(tmp_path):
    p = tmp_path / "head.csv"
    p.write_text("a,b,label\n")
    assert "head.csv" in fails(p) and "no data rows" in fails(p)


def test_ragged_csv_names_the_row(tmp_path):
    p = tmp_path / "ragged.csv"
    p.write_text("a,b,label\n1,2,x\n3,4,y\n5,6\n7,8,x\n")
    line = fails(p)
    assert "ragged.csv" in line and "row 3" in line and "line 4" in line and "2 fields" in line


def test_unknown_target_lists_columns(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("alpha,beta,gamma\n1,2,x\n3,4,y\n")
    line = fails(p, "--target", "delta")
    assert "t.csv" in line and "'delta'" in line and "alpha, beta, gamma" in line


def test_text_feature_column_named(tmp_path):
    p = tmp_path / "txt.csv"
    p.write_text("a,color,label\n" + "".join(f"{i},red,{i % 2}\n" for i in range(10)))
    line = fails(p)
    assert "txt.csv" in line and "'color'" in line and "line 2" in line


def test_single_class_csv(tmp_path):
    p = tmp_path / "one.csv"
    p.write_text("a,b,label\n" + "".join(f"{i},{i},only\n" for i in range(10)))
    line = fails(p)
    assert "one.csv" in line and "single class" in line and "'only'" in line


def test_regression_on_text_target(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("a,label\n1,x\n2,y\n")
    assert "'label'" in fails(p, "--task", "regression")


def test_truncated_idx(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte"
    write_idx(p, np.zeros((10, 4, 4), np.uint8))
    p.write_bytes(p.read_bytes()[:-7])
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(10, np.uint8))
    line = fails(p)
    assert "train-images-idx3-ubyte" in line and "truncated" in line and "10x4x4" in line


def test_truncated_gzip_idx(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(b"\0\0\x08\x03" + b"\0" * 200)[:-30])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(10, np.uint8))
    line = fails(p)
    assert "train-images-idx3-ubyte.gz" in line and "truncated" in line


def test_idx_wrong_magic(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(b"\x12\x34\x56\x78" + b"\0" * 100)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    line = fails(p)
    assert "train-images-idx3-ubyte" in line and "magic number 0x12345678" in line


def test_empty_idx(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(b"")
    assert "empty" in fails(p)


def test_idx_labels_missing(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte"
    write_idx(p, np.zeros((3, 2, 2), np.uint8))
    line = fails(p)
    assert "labels file not found" in line and "train-labels-idx1-ubyte" in line


def test_idx_count_mismatch(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((10, 4, 4), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", (np.arange(9) % 2).astype(np.uint8))
    line = fails(tmp_path / "train-images-idx3-ubyte.gz")
    assert "10 images" in line and "9 labels" in line and "train-labels-idx1-ubyte.gz" in line


def test_idx_single_class(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((10, 4, 4), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(10, 7, np.uint8))
    assert "single class" in fails(tmp_path / "train-images-idx3-ubyte")


def test_image_folder_without_images(tmp_path):
    root = tmp_path / "imgs"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "notes.txt").write_text("hello")
    line = fails(root)
    assert "imgs" in line and "no images" in line


def test_image_folder_single_class(tmp_path):
    from PIL import Image
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    for i in range(3):
        Image.new("L", (4, 4), i * 40).save(tmp_path / "imgs" / "cat" / f"{i}.png")
    assert "single class" in fails(tmp_path / "imgs")


def test_image_folder_unreadable_file_skipped_with_warning(tmp_path):
    from PIL import Image
    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(5):
            Image.new("L", (4, 4), i * 40).save(root / c / f"{i}.png")
    (root / "b" / "broken.png").write_bytes(b"not a png at all")
    msgs = []
    ds = load_dataset(str(root), log=msgs.append)
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 10
    assert any("skipped unreadable image" in m and "broken.png" in m for m in msgs)
    result = CliRunner().invoke(datasets, ["show", str(root), "--samples", "0"])
    assert result.exit_code == 0 and "broken.png" in result.output  # the warning goes to stderr


def test_npz_missing_array(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, features=np.zeros((3, 2)), y=np.zeros(3))
    line = fails(p)
    assert "d.npz" in line and "'x'" in line and "features" in line


def test_npz_count_mismatch(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((5, 2)), y=np.arange(4) % 2)
    line = fails(p)
    assert "d.npz" in line and "5" in line and "4" in line


def test_unknown_format(tmp_path):
    p = tmp_path / "data.xlsx"
    p.write_bytes(b"PK")
    assert "unknown data format" in fails(p)
