"""Per-layer timings: one row per layer, fused pairs timed as one unit (numbers, not pass/fail timings)."""

from __future__ import annotations

import pytest

from tuinet.bench.layers import conv_layer_times, torch_conv_layer_times
from tuinet.engine import build_model


@pytest.mark.parametrize("fused", [False, True])
def test_layer_rows_follow_the_model_and_its_fused_pairs(fused):
    model = build_model("conv3x3x4,maxpool2,bn,relu,gap", (8, 8, 1), 10)
    assert model.fused_pairs == {0, 2}
    sides = [conv_layer_times(model, 4, 1, fused=fused)]
    try:
        sides.append(torch_conv_layer_times(model, 4, 1, threads=1, fused=fused))
    except ImportError:
        pass
    for rows in sides:
        assert [r.get("fused", False) for r in rows] == [False, fused, False, fused, False, False]
        assert len(rows) == len(model.layers) and all(r["forward_backward_ms"] >= 0 for r in rows)
        names = [r["layer"] for r in rows]
        if fused:
            assert names[0] == "Conv2D(4, 3x3) + MaxPool2D(2x2)" and names[2] == "BatchNorm + ReLU"
            assert rows[1]["forward_backward_ms"] == rows[3]["forward_backward_ms"] == 0.0
        else:
            assert names[:2] == ["Conv2D(4, 3x3)", "MaxPool2D(2x2)"]
