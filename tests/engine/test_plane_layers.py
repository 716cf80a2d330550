"""The two layers behind the 2-D lessons: Playground's input features and the skip-connected dense layer, checked
against direct computation and central finite differences (in float32, as the engine runs them, so with a coarse step)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.engine.gradcheck import numeric_grad
from tuinet.engine.features import PlaneFeatures, parse_features
from tuinet.engine.residual import DenseResidual
from tuinet.engine.spec import build_model
from tuinet.errors import ModelError


def test_features_parse_in_playground_order_and_compute_exactly():
    assert parse_features("siny, x^2 ,y,xy") == ["y", "x²", "xy", "sin y"]
    assert parse_features("all") == ["x", "y", "x²", "y²", "xy", "sin x", "sin y"]
    with pytest.raises(ModelError, match="unknown input feature 'z'"):
        parse_features("x,z")
    layer = PlaneFeatures(parse_features("all"))
    layer.build((2,), np.random.default_rng(0))
    x = np.array([[0.5, -2.0], [1.5, 0.25]], dtype=np.float32)
    a, b = x[:, 0], x[:, 1]
    want = np.stack([a, b, a * a, b * b, a * b, np.sin(a), np.sin(b)], axis=1)
    np.testing.assert_allclose(layer.forward(x, False), want, rtol=1e-6)
    dy = np.random.default_rng(1).normal(size=want.shape).astype(np.float32)
    dx = layer.backward(dy)
    x64 = x.astype(np.float64)
    num = numeric_grad(lambda: float((layer.forward(x64.astype(np.float32), False) * dy).sum()), x64, 1e-3)
    np.testing.assert_allclose(dx, num, rtol=2e-2, atol=2e-3)


def test_a_model_with_features_takes_raw_points_and_round_trips():
    m = build_model("4", (2,), 2, features=["x", "y", "xy"], seed=0)
    assert m.layers[0].kind == "PlaneFeatures" and m.layers[1].params[0].shape == (3, 4)
    x = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    from tuinet.engine.model import Sequential

    again = Sequential.from_config(m.config())
    again.set_weights(m.get_weights())
    np.testing.assert_array_equal(again.predict(x), m.predict(x))
    with pytest.raises(ModelError, match="need 2-D points"):
        build_model("4", (4,), 2, features=["x"])


def test_dense_residual_adds_its_input_and_backpropagates_through_both_paths():
    layer = DenseResidual(3, "sigmoid")
    layer.build((3,), np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    w, b = layer.params
    want = x + 1 / (1 + np.exp(-(x @ w + b)))
    np.testing.assert_allclose(layer.forward(x, True), want, rtol=1e-5)
    dy = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    dx = layer.backward(dy)

    def loss():
        return float((layer.forward(x, True).astype(np.float64) * dy).sum())

    np.testing.assert_allclose(dx, numeric_grad(loss, x, 1e-2), rtol=2e-2, atol=2e-3)
    layer.forward(x, True)
    layer.backward(dy)
    np.testing.assert_allclose(layer.grads[0], numeric_grad(loss, w, 1e-2), rtol=2e-2, atol=2e-3)
    m = build_model("dense8,skip8sigmoid,skip8sigmoid", (5,), 2)
    assert [layer.kind for layer in m.layers] == ["Dense", "DenseResidual", "DenseResidual", "Dense"]
    with pytest.raises(ModelError, match="needs inputs of that width"):
        build_model("dense8,skip4", (5,), 2)
