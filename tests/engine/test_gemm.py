"""The dense layers' products on Numba's threads (tuinet.engine.gemm): right numbers, on the right path."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from tuinet.engine import build_model, gemm
from tuinet.engine.conv import dense
from tuinet.engine.threads import configure_threads, current_mode


@pytest.fixture
def numba_mode():
    before = current_mode()
    configure_threads(mode="numba")
    yield
    configure_threads(mode=before or "blas")


@pytest.fixture
def count_panel_calls(monkeypatch):
    calls = []
    real = dense.panel_matmul

    def spy(*args):
        calls.append(args[2].shape)
        return real(*args)

    monkeypatch.setattr(dense, "panel_matmul", spy)
    return calls


# widths 256 and 512 (rows of B a power of two apart), tails of 8, 16 and 24 columns, row counts that leave partial
# tiles and fewer rows than threads
SHAPES = [(256, 800, 256), (130, 256, 512), (37, 1000, 40), (1, 2048, 536), (1000, 33, 120), (5, 700, 304)]


@pytest.mark.parametrize("n,k,m", SHAPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_products_match_a_float64_reference(numba_mode, count_panel_calls, monkeypatch, n, k, m, trans_a, trans_b):
    monkeypatch.setattr(gemm, "MIN_FMAS", 0)
    rng = np.random.default_rng(n + k + m)
    a = rng.standard_normal((k, n) if trans_a else (n, k), dtype=np.float32)
    b = rng.standard_normal((m, k) if trans_b else (k, m), dtype=np.float32)
    ref = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    out = np.full((n, m), np.nan, np.float32)
    got = gemm.matmul(a, b, out, trans_a=trans_a, trans_b=trans_b)
    assert got is out and count_panel_calls == [(n, m)]
    scale = np.sqrt(k) * 4  # |sum of k products of standard normals| is about sqrt(k)
    assert np.abs(got - ref).max() < 1e-5 * scale


def test_results_do_not_depend_on_the_thread_count(numba_mode):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 512), dtype=np.float32)
    b = rng.standard_normal((512, 264), dtype=np.float32)
    results = []
    for threads in (1, 2):
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        results.append(gemm.matmul(a, b))
    np.testing.assert_array_equal(results[0], results[1])


def test_other_modes_and_shapes_go_to_blas(count_panel_calls):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((256, 800), dtype=np.float32)
    b = rng.standard_normal((800, 256), dtype=np.float32)
    for mode in ("blas", "single"):
        configure_threads(mode=mode)
        np.testing.assert_array_equal(gemm.matmul(a, b), np.dot(a, b))
    configure_threads(mode="numba")
    try:
        odd = b[:, :250].copy()  # 250 columns: not a multiple of 8
        np.testing.assert_array_equal(gemm.matmul(a, odd), np.dot(a, odd))
        np.testing.assert_array_equal(gemm.matmul(a[:, ::2], b[::2]), np.dot(a[:, ::2], b[::2]))  # not contiguous
        small = a[:4, :16].copy()  # a few multiply-adds
        np.testing.assert_array_equal(gemm.matmul(small, b[:16]), np.dot(small, b[:16]))
        assert count_panel_calls == []
        gemm.matmul(a, b)
        assert count_panel_calls == [(256, 256)]
    finally:
        configure_threads(mode="blas")


@pytest.mark.parametrize("fused", [True, False])
def test_a_conv_models_dense_layer_gives_blas_gradients_on_numba_threads(count_panel_calls, monkeypatch, fused):
    """The same Dense layer's outputs and gradients with its products on BLAS and on Numba's threads (the BLAS
    path is the one the gradient checks prove)."""
    monkeypatch.setattr(gemm, "MIN_FMAS", 0)
    rng = np.random.default_rng(2)
    x = rng.random((50, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 50)
    results = []
    for mode in ("single", "numba"):
        model = build_model("conv3x3x8,relu,flatten,dense32,relu", (8, 8, 1), 10, seed=3)
        model.fusion = fused
        configure_threads(model, mode)
        loss, _, _ = model.compute_gradients(x, y)
        results.append((loss, [g.copy() for g in model.grads]))
    configure_threads(mode="blas")
    # Dense(32)'s forward, weight and input gradients and Dense(10)'s input gradient (32 wide); Dense(10)'s
    # 10-wide forward and weight gradient go to BLAS
    assert sorted(count_panel_calls) == [(50, 32), (50, 32), (50, 288), (288, 32)]
    (loss_b, grads_b), (loss_n, grads_n) = results
    assert loss_n == pytest.approx(loss_b, rel=1e-6)
    for gb, gn in zip(grads_b, grads_n):
        np.testing.assert_allclose(gn, gb, rtol=2e-4, atol=2e-6 * np.abs(gb).max())
