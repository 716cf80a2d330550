"""2-D datasets in the trainer: size and noise options, Playground's input features, the neuron maps of the boundary
event (checked against a direct computation) and --pace."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tuinet.errors import ConfigError, DataError, ModelError
from tuinet.training.config import TrainConfig
from tuinet.training.neurons import neuron_maps
from tuinet.training.trainer import Trainer


def _config(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(**{"dataset": "spiral", "model": "3", "activation": "tanh", "epochs": 1,
                          "runs_dir": str(tmp_path / "runs"), **kw})


def test_size_and_noise_reach_the_data(tmp_path):
    t = Trainer(_config(tmp_path, n_samples=200, noise=0.0))
    t.prepare()
    d = t.data
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 200
    # without noise every raw point lies on the spiral: radius r and angle 3.5*pi*r (+pi for the second arm)
    raw = d.normalizer.inverse_transform(d.x_train).astype(np.float64)
    r = np.hypot(raw[:, 0], raw[:, 1])
    t_ang = np.arctan2(raw[:, 0], raw[:, 1])
    want = 1.75 * 2 * np.pi * r + d.y_train * np.pi
    assert np.allclose(np.angle(np.exp(1j * (t_ang - want))), 0, atol=1e-3)
    with pytest.raises(DataError, match="apply only to the synthetic"):
        Trainer(_config(tmp_path, dataset="iris", noise=0.1)).prepare()


def test_features_make_a_first_layer_and_show_as_the_input_maps(tmp_path):
    cfg = _config(tmp_path, features="x, y, x^2, xy", n_samples=100)
    assert cfg.features == "x,y,x²,xy"
    events = []
    t = Trainer(cfg, run_dir=False, emit=events.append)
    assert t.run()["event"] == "finished"
    assert t.model.layers[0].kind == "PlaneFeatures"
    boundary = [e for e in events if e["event"] == "boundary"][-1]
    layers = boundary["neurons"]["layers"]
    assert layers[0]["label"] == "inputs" and layers[0]["names"] == ["x", "y", "x²", "xy"]
    assert [layer["units"] for layer in layers] == [4, 3]
    with pytest.raises(ModelError, match="need 2-D points"):
        Trainer(_config(tmp_path, dataset="iris", features="x")).prepare()


def test_neuron_maps_are_the_units_outputs_over_the_plane(tmp_path):
    t = Trainer(_config(tmp_path, model="dense3,tanh,dense2,sigmoid", n_samples=100), run_dir=False)
    t.prepare()
    m = t.model
    maps = neuron_maps(m, [-2.0, 2.0], [-1.0, 1.0], size=5)
    gx = np.linspace(-2, 2, 5)
    gy = np.linspace(1, -1, 5)  # the top row is the largest y
    px, py = np.meshgrid(gx, gy)
    pts = np.stack([px, py], axis=-1).reshape(-1, 2)
    w1, b1 = (p.astype(np.float64) for p in m.layers[0].params)
    h1 = np.tanh(pts @ w1 + b1)
    w2, b2 = (p.astype(np.float64) for p in m.layers[2].params)
    h2 = 1 / (1 + np.exp(-(h1 @ w2 + b2)))
    inputs, first, second = maps["layers"]
    assert [inputs["label"], first["label"], second["label"]] == ["inputs", "1: Dense(3) Tanh", "2: Dense(2) Sigmoid"]
    for layer, want in ((inputs, pts), (first, h1), (second, h2)):
        for u in range(want.shape[1]):
            got = np.asarray(layer["maps"][u], dtype=np.float64).reshape(-1) / 100 * layer["scales"][u]
            assert layer["scales"][u] == pytest.approx(np.abs(want[:, u]).max(), rel=1e-3)
            assert np.allclose(got, want[:, u], atol=0.006 * layer["scales"][u] + 1e-6)


def test_pace_holds_each_step_back(tmp_path):
    """--pace N: at least 1/N s between steps (a lower bound that sleeping guarantees on any machine)."""
    cfg = _config(tmp_path, n_samples=200, batch_size=16, pace=50.0)  # 160 training samples: 10 steps
    t = Trainer(cfg, run_dir=False)
    t.prepare()
    t0 = time.perf_counter()
    assert t.run()["event"] == "finished"
    assert t.global_step == 10
    assert time.perf_counter() - t0 >= 9 / 50
    with pytest.raises(ConfigError, match="pace must be > 0"):
        _config(tmp_path, pace=0.0)
