"""The CNN recipe benchmark's per-layer table."""

from __future__ import annotations

from benchmarks.cnn_recipe import _print_layers
from tuinet.engine import build_model


def test_per_layer_table_without_a_measured_peak_prints_no_share(capsys):
    """``--no-peak``: the share-of-peak column says '-' (it printed 'nan%'), the GFLOP/s column is still filled;
    without PyTorch its columns say '-' too (they printed 'nan')."""
    model = build_model("conv3x3x8,maxpool2,relu,dense16", (8, 8, 1), 10)
    _print_layers(model, 4, 1, None, None)
    out = capsys.readouterr().out
    assert "nan" not in out
    row = next(line for line in out.splitlines() if line.startswith("Conv2D"))
    cells = row.split()
    # tuinet ms, GFLOP/s, share, torch ms, GFLOP/s, ratio: tuinet's two are numbers (a toy layer timed once on a
    # busy machine can print 0.0 GFLOP/s: a number, not a speed to assert), the four after them '-'
    assert cells[-4:] == ["-"] * 4
    assert float(cells[-6]) > 0 and float(cells[-5]) >= 0
    _print_layers(model, 4, 1, None, {"peak_gflops": 1e6})
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Conv2D"))
    assert row.split()[-4].endswith("%")
