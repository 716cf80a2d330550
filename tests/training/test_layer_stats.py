"""The inspector's per-layer rows: the dead-ReLU fraction of a convolution is found through a max-pooling."""

from __future__ import annotations

import numpy as np

from tuinet.engine import build_model
from tuinet.training.stats import layer_stats


def _rows(spec: str, dead_channels: list[int]):
    model = build_model(spec, (8, 8, 1), 3, seed=0)
    conv = model.layers[0]
    w, b = conv.params
    w[..., dead_channels] = -np.abs(w[..., dead_channels])  # inputs in [0, 1): these channels never fire
    b[dead_channels] = -0.1
    rng = np.random.default_rng(0)
    model.compute_gradients(rng.random((16, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, 16))
    return model, {r["name"]: r for r in layer_stats(model)}


def test_a_convolution_then_max_pooling_then_relu_reports_its_dead_channels():
    model, rows = _rows("conv3x3x4,maxpool2,relu,dense3", [1, 3])
    assert model.fused_triples == {0}  # the ReLU ran inside the convolution's pass
    assert rows["conv2d_0"]["dead_fraction"] == 0.5
    relu = model.layers[2]
    assert rows["conv2d_0"]["dead_fraction"] == np.mean(~(relu.output.reshape(-1, 4) > 0).any(axis=0))


def test_only_a_max_pooling_may_sit_between_the_layer_and_its_relu():
    _, rows = _rows("conv3x3x4,relu,dense3", [2])
    assert rows["conv2d_0"]["dead_fraction"] == 0.25  # directly after it, as before
    _, rows = _rows("conv3x3x4,avgpool2,relu,dense3", [2])
    assert "dead_fraction" not in rows["conv2d_0"]  # an average <= 0 does not mean every output was
