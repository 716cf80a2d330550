"""The `--fit` benchmark's code path runs (its figures are printed by ``python -m benchmarks.predict_fit``)."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from benchmarks import predict_fit
from tuinet.cli import main


def test_a_photographed_digit_is_dark_ink_on_a_grainy_page_off_centre():
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 12:16] = 255  # a "1"
    pages = [predict_fit.photographed(digit, np.random.default_rng(s)) for s in range(4)]
    for page in pages:
        assert page.shape == predict_fit.PAGE and page.dtype == np.uint8
        ink = page < 120
        rows, cols = np.nonzero(ink)
        assert rows.max() - rows.min() + 1 == 60 and cols.max() - cols.min() + 1 == 12  # 3x the stroke
        assert 200 < np.median(page[~ink]) < 240  # grey paper, with grain
    assert len({tuple(np.argwhere(p < 120).min(axis=0)) for p in pages}) > 1  # placed at random


def test_measure_reads_both_sets_with_every_fit(tmp_path):
    r = CliRunner().invoke(main, ["train", "--headless", "--epochs", "1", "--limit", "600", "--name", "m",
                                  "--runs-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    out = predict_fit.measure("m", str(tmp_path), count=30, seed=0)
    assert list(out) == ["as they are, --fit stretch", "as they are, --fit pad", "as they are, --fit digit",
                         "photographed, --fit stretch --invert", "photographed, --fit pad --invert",
                         "photographed, --fit digit"]
    assert all(0.0 <= v <= 1.0 for v in out.values())
    assert out["as they are, --fit stretch"] == out["as they are, --fit pad"]  # 28x28 already: the same input
