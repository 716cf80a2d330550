"""Crafted NPZ files meet one `Error:` line from `tuinet datasets show` (no traceback), naming the file and array."""

import numpy as np
import pytest
from click.testing import CliRunner

from tuinet.cli.datasets import datasets


def _show(path):
    result = CliRunner().invoke(datasets, ["show", str(path), "--samples", "1"])
    assert "Traceback" not in result.output
    return result


CASES = {
    "object_x": (dict(x=np.array([[1, 2], [3, 4]], dtype=object), y=np.array([0, 1])), ["'x'", "Python objects"]),
    "object_y": (dict(x=np.zeros((10, 2)), y=np.array([0, 1] * 5, dtype=object)), ["'y'", "Python objects"]),
    "scalar_x": (dict(x=np.float64(3), y=np.array([0, 1])), ["'x'", "single value"]),
    "scalar_y": (dict(x=np.zeros((10, 2)), y=np.int64(3)), ["'y'", "single value"]),
    "five_dims": (dict(x=np.zeros((10, 1, 1, 1, 1)), y=np.arange(10) % 2), ["'x'", "(10, 1, 1, 1, 1)"]),
    "zero_rows": (dict(x=np.zeros((0, 3)), y=np.zeros(0)), ["'x'", "0 samples"]),
    "zero_features": (dict(x=np.zeros((10, 0)), y=np.arange(10) % 2), ["'x'", "hold no values"]),
    "lengths": (dict(x=np.zeros((10, 3)), y=np.arange(8) % 2), ["10 samples", "'y' has 8"]),
    "test_lengths": (dict(x=np.random.rand(10, 3), y=np.arange(10) % 2, x_test=np.random.rand(4, 3),
                          y_test=np.array([0, 1, 1])), ["'x_test' has 4", "'y_test' has 3"]),
    "test_without_labels": (dict(x=np.random.rand(10, 3), y=np.arange(10) % 2, x_test=np.random.rand(4, 3)),
                            ["'x_test'", "no 'y_test'"]),
    "complex": (dict(x=np.zeros((10, 2)) + 1j, y=np.arange(10) % 2), ["'x'", "complex128"]),
    "no_y": (dict(x=np.zeros((10, 2))), ["no array 'y'"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_crafted_npz_is_one_error_line(tmp_path, case):
    arrays, words = CASES[case]
    p = tmp_path / f"{case}.npz"
    np.savez(p, **arrays)
    result = _show(p)
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and f"{case}.npz" in lines[0], result.output
    for w in words:
        assert w in lines[0], lines[0]


def test_not_a_zip_and_truncated_zip(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(tmp_path / "whole.npz", x=np.random.rand(50, 3), y=np.arange(50) % 2)
    data = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    for name in ("junk.npz", "cut.npz"):
        result = _show(tmp_path / name)
        assert result.exit_code == 1 and f"{name}: not a readable .npz file" in result.output


def test_byte_string_labels_become_text_class_names(tmp_path):
    np.savez(tmp_path / "b.npz", x=np.random.rand(20, 2), y=np.array([b"cat", b"dog"] * 10))
    result = _show(tmp_path / "b.npz")
    assert result.exit_code == 0 and "cat" in result.output and "b'cat'" not in result.output
