"""Bounded resources: compression bombs, oversized files, FIFOs and devices, absurd class counts, image bombs,
over-long lines: each is one clear DataError (or a skipped file with a note), never a hang or an exhausted memory."""

import gzip
import os
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from tuinet.cli.datasets import datasets
from tuinet.data import load_dataset
from tuinet.data.idx import write_idx
from tuinet.data.inputs import load_inputs
from tuinet.data.limits import MAX_CLASSES, max_data_bytes
from tuinet.errors import DataError
from tuinet.training.evaluation import CONFUSION_MAX_CLASSES, confusion_event_fields


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUINET_CACHE", str(tmp_path / "cache"))


def _fails(source, *args) -> str:
    """`datasets show` fails with exactly one `Error:` line and no traceback; returns it."""
    result = CliRunner().invoke(datasets, ["show", str(source), "--samples", "0", *args])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_data_size_limit_from_the_environment(monkeypatch):
    assert max_data_bytes() == 2 * 1024**3
    monkeypatch.setenv("TUINET_MAX_DATA_SIZE", "500M")
    assert max_data_bytes() == 500 * 1024**2
    monkeypatch.setenv("TUINET_MAX_DATA_SIZE", "12345")
    assert max_data_bytes() == 12345
    monkeypatch.setenv("TUINET_MAX_DATA_SIZE", "lots")
    with pytest.raises(DataError, match="TUINET_MAX_DATA_SIZE"):
        max_data_bytes()


def test_csv_gz_bomb_stopped_at_the_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("TUINET_MAX_DATA_SIZE", "1M")
    p = tmp_path / "bomb.csv.gz"
    with gzip.open(p, "wb") as f:  # 8 MB of rows in about 20 KB
        f.write(b"a,b,label\n")
        f.write(b"1,2,x\n3,4,y\n" * 700_000)
    assert p.stat().st_size < 100_000
    line = _fails(p)
    assert "bomb.csv.gz" in line and "expands to more than the limit of 1.0 MiB" in line
    assert "TUINET_MAX_DATA_SIZE" in line


def test_gz_without_newlines_stopped(tmp_path):
    p = tmp_path / "zeros.csv.gz"
    with gzip.open(p, "wb") as f:  # one 20 MB "line": refused at 16 MiB, never read whole
        f.write(b"a,b,label\n")
        f.write(bytes(20 * 1024 * 1024))
    assert "line 2 is longer than" in _fails(p)


def test_plain_csv_over_the_limit(tmp_path, monkeypatch):
    p = tmp_path / "big.csv"
    p.write_text("a,b,label\n" + "1,2,x\n3,4,y\n" * 1000)
    monkeypatch.setenv("TUINET_MAX_DATA_SIZE", "1000")
    line = _fails(p)
    assert "big.csv" in line and "more than the limit of 1,000 bytes" in line


def test_npz_declaring_more_than_the_limit_is_refused_before_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("TUINET_MAX_DATA_SIZE", "10M")
    p = tmp_path / "bomb.npz"
    np.savez_compressed(p, x=np.zeros((4000, 1000), np.float32), y=np.zeros(4000))  # 16 MB in a few KB
    line = _fails(p)
    assert "bomb.npz" in line and "holds 15.3 MiB of data" in line


def test_idx_gzip_bomb_stopped(tmp_path, monkeypatch):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((3000, 28, 28), np.uint8))  # 2.4 MB expanded
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", (np.arange(3000) % 2).astype(np.uint8))
    monkeypatch.setenv("TUINET_MAX_DATA_SIZE", "1M")
    line = _fails(tmp_path / "train-images-idx3-ubyte.gz")
    assert "train-images-idx3-ubyte.gz" in line and "expands to more than the limit" in line


@pytest.mark.parametrize("name", ["data.csv", "data.npz", "train-images-idx3-ubyte"])
def test_fifo_as_a_dataset_is_refused_at_once(tmp_path, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    line = _fails(fifo)  # would block forever if opened
    assert name in line and "not a regular file" in line


def test_fifo_labels_file_is_refused(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((10, 4, 4), np.uint8))
    os.mkfifo(tmp_path / "train-labels-idx1-ubyte")
    line = _fails(tmp_path / "train-images-idx3-ubyte")
    assert "train-labels-idx1-ubyte" in line and "FIFO" in line


def test_device_and_broken_link_are_refused(tmp_path):
    assert "/dev/zero: not a regular file but a device" in _fails("/dev/zero")
    (tmp_path / "gone.csv").symlink_to(tmp_path / "nowhere.csv")
    assert "gone.csv" in _fails(tmp_path / "gone.csv")


def test_prediction_input_fifo_refused(tmp_path):
    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    done = []
    t = threading.Thread(target=lambda: done.append(pytest.raises(DataError, load_inputs, (str(fifo),), (2,), None)))
    t.start()
    t.join(10)
    assert done and "not a regular file" in str(done[0].value)


def test_ten_thousand_text_classes_refused(tmp_path):
    p = tmp_path / "names.csv"
    p.write_text("a,b,label\n" + "".join(f"{i},{i * 2},name{i}\n" for i in range(10_000)))
    line = _fails(p)
    assert "names.csv" in line and f"more than {MAX_CLASSES:,} distinct text values" in line


def test_numeric_target_forced_to_too_many_classes_refused(tmp_path):
    p = tmp_path / "ids.csv"
    p.write_text("a,id\n" + "".join(f"{i % 7},{i}\n" for i in range(1500)))
    line = _fails(p, "--task", "classification")
    assert "ids.csv" in line and "1,500 distinct classes" in line and "1,000" in line


def test_id_like_column_with_fewer_than_two_samples_per_class_refused(tmp_path):
    p = tmp_path / "few.csv"
    p.write_text("a,b,label\n" + "".join(f"{i},{i},c{i % 60}\n" for i in range(100)))
    line = _fails(p)
    assert "60 distinct classes for 100 samples" in line


def test_npz_labels_with_too_many_classes_refused(tmp_path):
    np.savez(tmp_path / "many.npz", x=np.zeros((3000, 2)), y=np.arange(3000))
    assert "3,000 distinct classes" in _fails(tmp_path / "many.npz", "--task", "classification")


def test_image_decompression_bomb_skipped_with_a_note(tmp_path, monkeypatch):
    from PIL import Image

    for c in ("cats", "dogs"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (8, 8), 40 * i).save(tmp_path / "imgs" / c / f"{i}.png")
    Image.new("L", (100, 100)).save(tmp_path / "imgs" / "cats" / "huge.png")  # 10,000 pixels
    Image.new("L", (40, 40)).save(tmp_path / "imgs" / "dogs" / "big.png")  # 1,600: only a warning in Pillow
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # huge.png is now over 2x the limit: an error
    msgs = []
    ds = load_dataset(str(tmp_path / "imgs"), log=msgs.append)
    assert sum(len(ds.split(s)[0]) for s in ("train", "val", "test")) == 8
    assert any("huge.png" in m and "decompression bomb" in m for m in msgs), msgs
    assert any("big.png" in m and "decompression bomb" in m for m in msgs), msgs


def test_prediction_image_bomb_refused(tmp_path, monkeypatch):
    from PIL import Image

    Image.new("L", (100, 100)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match="huge.png: image too large, a possible decompression bomb"):
        load_inputs((str(tmp_path / "huge.png"),), (8, 8, 1), None)


def test_confusion_event_is_bounded():
    k = 1000
    rng = np.random.default_rng(0)
    labels = rng.integers(0, k, 20_000)
    preds = np.where(rng.random(20_000) < 0.5, labels, rng.integers(0, k, 20_000))
    labels[:3000] = 7  # class 7 has the most samples: it must be kept
    ev = confusion_event_fields(labels, preds, [f"c{i}" for i in range(k)])
    m = np.array(ev["matrix"])
    assert m.shape == (CONFUSION_MAX_CLASSES, CONFUSION_MAX_CLASSES) and ev["truncated"]
    assert ev["num_classes"] == k and 7 in ev["class_indices"] and ev["class_names"][0].startswith("c")
    assert ev["samples"] == 20_000 and ev["correct"] == int((labels == preds).sum())
    small = confusion_event_fields(np.array([0, 1, 1]), np.array([0, 1, 0]), ["a", "b"])
    assert small["matrix"] == [[1, 0], [1, 1]] and not small["truncated"] and small["class_names"] == ["a", "b"]

