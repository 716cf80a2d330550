"""Float64 gradient checks: central finite differences and a relative-error comparison."""

from __future__ import annotations

import numpy as np


def to_float64(model):
    """Cast a built model's parameters and gradient buffers to float64 in place (for finite-difference checks)."""
    for layer in getattr(model, "layers", [model]):
        _layer_to_float64(layer)
    if hasattr(model, "layers"):
        model.params = [p for layer in model.layers for p in layer.params]
        model.grads = [g for layer in model.layers for g in layer.grads]
        model._penalized = [(p, g) for layer in model.layers for name, p, g in layer.named_params()
                            if name in layer.penalized]
    return model


def _layer_to_float64(layer):
    layer.params = [p.astype(np.float64) for p in layer.params]
    layer.grads = [g.astype(np.float64) for g in layer.grads]
    for k, b in list(getattr(layer, "buffers", {}).items()):
        layer.buffers[k] = b.astype(np.float64)
    for sub in getattr(layer, "sublayers", []):
        _layer_to_float64(sub)


def numeric_grad(f, x, eps=1e-6):
    """Central finite differences of scalar f() with respect to array x (modified in place and restored)."""
    g = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1)
    gf = g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gf[i] = (fp - fm) / (2 * eps)
    return g


def assert_close_grad(analytic, numeric, rtol=1e-5, atol=1e-7, what="gradient"):
    """Relative-error check that reports the worst element."""
    analytic = np.asarray(analytic, dtype=np.float64)
    numeric = np.asarray(numeric, dtype=np.float64)
    assert analytic.shape == numeric.shape, f"{what}: shape {analytic.shape} != {numeric.shape}"
    err = np.abs(analytic - numeric)
    tol = atol + rtol * np.abs(numeric)
    worst = int(np.argmax(err - tol))
    assert np.all(err <= tol), (f"{what}: worst element {worst}: analytic {analytic.reshape(-1)[worst]!r} "
                                f"vs numeric {numeric.reshape(-1)[worst]!r}")


def assert_model_gradients(model, x, y):
    """Every parameter gradient of ``model`` on (x, y) against finite differences of its loss."""
    model.compute_gradients(x, y)
    analytic = [g.copy() for g in model.grads]

    def f():
        return model.loss(model.forward(x, True), y)[0]

    for i, (p, g) in enumerate(zip(model.params, analytic)):
        assert_close_grad(g, numeric_grad(f, p), what=f"param {i}")
