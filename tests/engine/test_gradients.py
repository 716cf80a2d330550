"""Every dense-engine layer, activation, loss and penalty: analytic gradients vs central finite differences (float64)."""

from __future__ import annotations

import numpy as np
import pytest
from tests.engine.gradcheck import assert_close_grad, assert_model_gradients, numeric_grad, to_float64

from tuinet.engine import (GELU, Dense, Dropout, Flatten, LeakyReLU, Linear, ReLU, Sequential, Sigmoid, Tanh,
                           make_loss)


def _check_layer(layer, input_shape, batch=4, seed=0, training=True, x=None):
    rng = np.random.default_rng(seed)
    layer.build(input_shape, np.random.default_rng(seed + 1))
    to_float64(layer)
    if x is None:
        x = rng.standard_normal((batch,) + tuple(input_shape))
    x = np.ascontiguousarray(x, dtype=np.float64)
    r = rng.standard_normal((batch,) + tuple(layer.output_shape))

    def f():
        if isinstance(layer, Dropout):
            layer.rng = np.random.default_rng(7)  # the same mask on every evaluation
        return float(np.sum(layer.forward(x, training) * r))

    f()
    dx = layer.backward(r.copy())
    analytic_grads = [g.copy() for g in layer.grads]
    assert_close_grad(dx, numeric_grad(f, x), what=f"{layer.kind} input gradient")
    for name, p, g in zip(layer.param_names, layer.params, analytic_grads):
        assert_close_grad(g, numeric_grad(f, p), what=f"{layer.kind}.{name} gradient")


def test_dense_gradients():
    _check_layer(Dense(5, init="xavier"), (7,))


def test_dense_without_bias_gradients():
    _check_layer(Dense(3, init="he", use_bias=False), (4,))


def test_flatten_gradients():
    _check_layer(Flatten(), (3, 2, 2))


@pytest.mark.parametrize("cls", [ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Linear])
def test_activation_gradients(cls):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6)) * 3
    x[np.abs(x) < 1e-3] = 0.5  # keep away from ReLU's kink
    _check_layer(cls(), (6,), x=x)


def test_sigmoid_is_stable_for_large_inputs():
    layer = Sigmoid()
    layer.build((3,), None)
    y = layer.forward(np.array([[-1000.0, 0.0, 1000.0]], dtype=np.float32), False)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, [[0.0, 0.5, 1.0]], atol=1e-7)


def test_dropout_gradients_and_scaling():
    _check_layer(Dropout(0.4), (10,), batch=5)
    layer = Dropout(0.5)
    layer.build((1000,), None)
    x = np.ones((20, 1000), dtype=np.float32)
    y = layer.forward(x, training=True)
    kept = y != 0
    assert 0.45 < kept.mean() < 0.55
    np.testing.assert_allclose(y[kept], 2.0)  # inverted dropout scales survivors by 1/(1-rate)
    np.testing.assert_array_equal(layer.forward(x, training=False), x)


def test_dropout_is_seeded():
    a, b = Dropout(0.3), Dropout(0.3)
    for d in (a, b):
        d.build((50,), None)
        d.rng = np.random.default_rng(11)
    x = np.ones((4, 50), dtype=np.float32)
    np.testing.assert_array_equal(a.forward(x, True), b.forward(x, True))


def test_philox_matches_the_published_known_answers():
    """Random123's known-answer vectors for Philox4x32-10 (counter, key, output), the generator of dropout masks."""
    from tuinet.engine.kernels import philox4x32

    vectors = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
               ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
               ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
                (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for counter, key, expected in vectors:
        got = philox4x32(*(np.uint32(c) for c in counter), *(np.uint32(k) for k in key))
        assert tuple(int(w) for w in got) == expected


def test_dropout_masks_keep_the_rate_and_differ_from_step_to_step():
    layer = Dropout(0.25)
    layer.build((1001,), None)  # not a multiple of four: the last, partial block of the stream too
    x = np.ones((30, 1001), dtype=np.float32)
    masks = [layer.forward(x, training=True) != 0 for _ in range(3)]
    for m in masks:
        assert abs(m.mean() - 0.75) < 0.01  # 30,030 draws: the kept share within 1% of 1 - rate
    assert (masks[0] != masks[1]).mean() > 0.3 and (masks[1] != masks[2]).mean() > 0.3  # a new mask each step
    # neighbours are independent: P(both kept) is about 0.75^2 along rows and along the flat order
    flat = masks[0].reshape(-1)
    assert abs((flat[:-1] & flat[1:]).mean() - 0.5625) < 0.015
    assert abs((masks[0][:-1] & masks[0][1:]).mean() - 0.5625) < 0.015


def test_the_dropout_stream_is_indexed_by_element():
    """Element i's draw depends on the key and i only: a shorter array's mask (ending in a partial block of four)
    is the start of a longer one's under the same key."""
    from tuinet.engine.kernels import dropout_forward

    key, threshold, scale = np.uint64(0x1234_5678_9ABC_DEF0), np.uint64(2**31), np.float32(2.0)
    masks = []
    for n in (4001, 4002, 4003, 4004, 4100):
        x = np.ones(n, np.float32)
        out, mask = np.empty_like(x), np.empty_like(x)
        dropout_forward(x, key, threshold, scale, out, mask)
        np.testing.assert_array_equal(out, mask)
        masks.append(mask)
    for m in masks[:-1]:
        np.testing.assert_array_equal(m, masks[-1][:m.size])
    assert set(np.unique(masks[-1])) == {0.0, 2.0}


def _check_loss(name, outputs, targets):
    loss = make_loss(name)
    _, grad, _ = loss(outputs, targets)
    num = numeric_grad(lambda: loss(outputs, targets)[0], outputs)
    assert_close_grad(grad, num, what=f"{name} gradient")


def test_softmax_cross_entropy_gradient_and_value():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 4)) * 2
    labels = rng.integers(0, 4, 5)
    _check_loss("softmax_cross_entropy", logits, labels)
    loss, _, correct = make_loss("softmax_cross_entropy")(logits, labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    expected = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(5), labels])
    assert loss == pytest.approx(expected, rel=1e-6)
    assert correct == int(np.sum(logits.argmax(axis=1) == labels))


def test_softmax_cross_entropy_is_stable():
    logits = np.array([[1000.0, -1000.0, 0.0], [-5000.0, 5000.0, 1.0]], dtype=np.float32)
    loss, grad, _ = make_loss("ce")(logits, np.array([0, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx(5000.0, rel=1e-4)  # row 0 ~0, row 1 ~10000 -> mean 5000


def test_mse_gradient_and_value():
    rng = np.random.default_rng(1)
    out, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    _check_loss("mse", out, t)
    assert make_loss("mse")(out, t)[0] == pytest.approx(np.mean((out - t) ** 2))


def test_bce_with_logits_gradient_value_and_stability():
    rng = np.random.default_rng(2)
    out, t = rng.standard_normal((4, 3)) * 3, rng.integers(0, 2, (4, 3)).astype(np.float64)
    _check_loss("bce_with_logits", out, t)
    p = 1 / (1 + np.exp(-out))
    expected = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    assert make_loss("bce")(out, t)[0] == pytest.approx(expected, rel=1e-6)
    big = np.array([[500.0, -500.0]], dtype=np.float32)
    loss, grad, _ = make_loss("bce")(big, np.array([[0.0, 1.0]], dtype=np.float32))
    assert np.isfinite(loss) and loss == pytest.approx(500.0, rel=1e-4)


@pytest.mark.parametrize("l1,l2", [(0.01, 0.0), (0.0, 0.05), (0.02, 0.03)])
def test_penalty_gradients_through_the_model(l1, l2):
    """The whole model, loss and L1/L2 penalty: d(loss + penalty)/d(every parameter) and the penalty value."""
    rng = np.random.default_rng(4)
    model = Sequential([Dense(6), Tanh(), Dense(5), GELU(), Dense(3)], (4,), l1=l1, l2=l2, seed=3)
    to_float64(model)
    x = rng.standard_normal((5, 4))
    y = rng.integers(0, 3, 5)

    def f():
        out = model.forward(x, training=True)
        return model.loss(out, y)[0] + model.penalty(add_grad=False)

    loss, pen, _ = model.compute_gradients(x, y)
    weights = [p for layer in model.layers for n, p, _ in layer.named_params() if n == "W"]
    assert pen == pytest.approx(sum(l1 * np.abs(w).sum() + l2 * (w ** 2).sum() for w in weights), rel=1e-6)  # l1, l2 enter as float32
    analytic = [g.copy() for g in model.grads]
    for i, (p, g) in enumerate(zip(model.params, analytic)):
        assert_close_grad(g, numeric_grad(f, p), what=f"param {i}")


def test_model_backpropagation_matches_finite_differences_with_flatten_and_relu():
    rng = np.random.default_rng(5)
    model = Sequential([Flatten(), Dense(7), ReLU(), Dense(6), LeakyReLU(), Dense(4), Sigmoid(), Dense(3)],
                       (3, 3, 1), seed=1)
    to_float64(model)
    x = rng.standard_normal((6, 3, 3, 1))
    y = rng.integers(0, 3, 6)
    assert_model_gradients(model, x, y)


@pytest.mark.parametrize("use_bias", [True, False])
def test_fused_dense_relu_gradients(use_bias):
    """Dense followed by ReLU runs fused in a model (bias and ReLU in one pass, the ReLU's mask and the bias
    gradient in one pass); its gradients against finite differences, with and without a bias."""
    rng = np.random.default_rng(11)
    model = Sequential([Dense(6, use_bias=use_bias), ReLU(), Dense(3)], (5,), seed=2)
    assert model.fused_pairs == {0}
    to_float64(model)
    x = rng.standard_normal((7, 5))
    y = rng.integers(0, 3, 7)
    assert_model_gradients(model, x, y)


@pytest.mark.parametrize("mode", ["blas", "numba"])
def test_fused_dense_relu_gives_the_unfused_bits(mode):
    """Training with Dense+ReLU fused gives exactly the weights of the two layers run one after the other, and
    predictions outside training are new arrays (the fused path reuses its output array only in training). With the
    products on Numba's threads the fused pair adds the bias and takes the ReLU in the product kernel, and the
    backward pass masks the gradient as the weight gradient's product packs it."""
    from tuinet.engine import build_model, make_optimizer
    from tuinet.engine.threads import configure_threads, current_mode

    rng = np.random.default_rng(0)
    xs = [rng.random((32, 28, 28, 1), dtype=np.float32) for _ in range(2)]
    ys = [rng.integers(0, 10, 32) for _ in range(2)]
    weights = []
    before = current_mode()
    try:
        for fusion in (True, False):
            model = build_model("mlp", (28, 28, 1), 10)
            model.fusion = fusion
            configure_threads(model, mode)
            opt = make_optimizer("adam", model.params)
            for i in range(4):
                model.train_step(xs[i % 2], ys[i % 2], opt)
            weights.append([p.copy() for p in model.params])
    finally:
        configure_threads(mode=before or "blas")
    for a, b in zip(*weights):
        assert np.array_equal(a, b)
    ends_fused = Sequential([Flatten(), Dense(8), ReLU()], (28, 28, 1), loss="mse")
    first = ends_fused.predict(xs[0][:4])
    kept = first.copy()
    ends_fused.predict(xs[1][:4])
    assert ends_fused.fused_pairs == {1} and np.array_equal(first, kept)
