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

    def spy(*args, **kwargs):
        calls.append(args[2].shape)
        return real(*args, **kwargs)

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
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            results.append(gemm.matmul(a, b))
    finally:
        numba.set_num_threads(before)  # later tests (a Winograd weight gradient's sums) depend on the count
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


def _with_specials(a: np.ndarray) -> np.ndarray:
    """``a`` with zeros, negative zeros and NaNs in a few places (what a ReLU's mask must treat as the layers do)."""
    a = a.copy()
    flat = a.reshape(-1)
    flat[::97] = 0.0
    flat[5::101] = -0.0
    flat[7::211] = np.nan
    return a


# (samples, features, units): B of 784 x 256 (its columns split over the threads), 256 x 128 (rows split), an
# 8-wide last panel and partial tiles, a single sample, 5 features (a weight gradient of fewer rows than one
# thread's share: the other threads have none)
FUSED_SHAPES = [(64, 784, 256), (37, 256, 128), (29, 70, 40), (1, 300, 264), (50, 5, 64)]


@pytest.mark.parametrize("n,k,m", FUSED_SHAPES)
def test_dense_relu_forward_fused_gives_the_separate_passes_bits(numba_mode, count_panel_calls, monkeypatch, n, k, m):
    """relu(a @ w + bias) with the bias and the ReLU in the product kernel: the numbers of the product, then
    kernels.bias_relu, bit for bit (NaN -> 0 as there), and the same with one thread."""
    from tuinet.engine import kernels as K

    monkeypatch.setattr(gemm, "MIN_FMAS", 0)
    rng = np.random.default_rng(n + k + m)
    a = _with_specials(rng.standard_normal((n, k), dtype=np.float32))
    w = rng.standard_normal((k, m), dtype=np.float32)
    bias = rng.standard_normal(m, dtype=np.float32)
    want = gemm.matmul(a, w)
    K.bias_relu(want, bias)
    got = np.full((n, m), np.nan, np.float32)
    assert gemm.matmul_bias(a, w, bias, got, relu=True) is got
    assert count_panel_calls == [(n, m), (n, m)]  # both on the micro-kernels
    np.testing.assert_array_equal(got, want)
    assert not np.isnan(got).any() and (got >= 0).all()
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = gemm.matmul_bias(a, w, bias, np.empty_like(got), relu=True)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, want)


@pytest.mark.parametrize("n,k,m", FUSED_SHAPES)
def test_dense_forward_adds_its_bias_in_the_product_kernel_with_the_separate_passes_bits(
        numba_mode, count_panel_calls, monkeypatch, n, k, m):
    """A Dense layer's forward pass (no ReLU after it): a @ w + bias with the bias added as the micro-kernel stores
    each tile, one call, the bits of the product then kernels.add_bias (NaN and infinities as there)."""
    from tuinet.engine import kernels as K
    from tuinet.engine.layers import Dense

    monkeypatch.setattr(gemm, "MIN_FMAS", 0)
    rng = np.random.default_rng(n * k + m)
    a = _with_specials(rng.standard_normal((n, k), dtype=np.float32))
    w = rng.standard_normal((k, m), dtype=np.float32)
    bias = rng.standard_normal(m, dtype=np.float32)
    want = gemm.matmul(a, w)
    K.add_bias(want, bias)
    count_panel_calls.clear()
    got = gemm.matmul_bias(a, w, bias)
    assert count_panel_calls == [(n, m)]  # the bias in the same call
    np.testing.assert_array_equal(got, want)
    layer = Dense(m)
    layer.build((k,), rng)
    layer.params[0][...] = w
    layer.params[1][...] = bias
    np.testing.assert_array_equal(layer.forward(a, True), want)


@pytest.mark.parametrize("n,k,m", FUSED_SHAPES)
@pytest.mark.parametrize("keep", [True, False])
def test_relu_backward_fused_gives_the_separate_passes_bits(numba_mode, count_panel_calls, monkeypatch, n, k, m,
                                                           keep):
    """The ReLU's mask and the bias gradient taken as the weight gradient's product packs dy: dz, db and dw are
    kernels.relu_grad_bias's and the product's bits, with one thread or all; without ``keep`` dz is not written."""
    from tuinet.engine import kernels as K

    monkeypatch.setattr(gemm, "MIN_FMAS", 0)
    rng = np.random.default_rng(n * k + m)
    x = rng.standard_normal((n, k), dtype=np.float32)  # the layer's input: n samples of k features
    dy = _with_specials(rng.standard_normal((n, m), dtype=np.float32))
    y = _with_specials(np.maximum(rng.standard_normal((n, m), dtype=np.float32), 0))
    want_dz, want_db = np.empty_like(dy), np.empty(m, np.float32)
    K.relu_grad_bias(dy, y, want_dz, want_db)
    want_dw = gemm.matmul(x, want_dz, trans_a=True)
    before = numba.get_num_threads()
    try:
        for threads in (before, 1):
            numba.set_num_threads(threads)
            dz, db, dw = np.full_like(dy, 7.0), np.full(m, np.nan, np.float32), np.full((k, m), np.nan, np.float32)
            count_panel_calls.clear()
            assert gemm.relu_grad_matmul(x, dy, y, dz, db, dw, keep=keep) is dw
            assert count_panel_calls == [(k, m)]
            np.testing.assert_array_equal(dw, want_dw)
            np.testing.assert_array_equal(db, want_db)
            if keep:
                np.testing.assert_array_equal(dz, want_dz)
            else:
                assert (dz == 7.0).all()
    finally:
        numba.set_num_threads(before)


def test_a_masked_product_with_its_columns_split(numba_mode):
    """The masked product with B large enough that its columns are shared out over the threads (each panel's
    owner writes dz and db) gives the separate passes' bits."""
    from tuinet.engine import kernels as K

    rng = np.random.default_rng(5)
    a = rng.standard_normal((40, 784), dtype=np.float32)
    b = rng.standard_normal((784, 256), dtype=np.float32)
    y = _with_specials(rng.standard_normal((784, 256), dtype=np.float32))
    assert dense._cuts(256, numba.get_num_threads()) is not None
    want_dz, want_db = np.empty_like(b), np.empty(256, np.float32)
    K.relu_grad_bias(b, y, want_dz, want_db)
    want = np.empty((40, 256), np.float32)
    dense.panel_matmul(a, want_dz, want, False, False)
    dz, db, out = np.empty_like(b), np.empty(256, np.float32), np.empty((40, 256), np.float32)
    dense.panel_matmul(a, b, out, False, False, mask=(y, dz, db, True))
    for got, exp in ((out, want), (dz, want_dz), (db, want_db)):
        np.testing.assert_array_equal(got, exp)
    with pytest.raises(ValueError):
        dense.panel_matmul(a, b.T.copy(), out, False, True, mask=(y, dz, db, True))


def test_column_cuts_share_the_panels_out_in_equal_widths():
    assert dense._cuts(256, 2).tolist() == [0, 4, 8]  # eight 32-column panels
    assert dense._cuts(96, 3).tolist() == [0, 1, 2, 3]
    if dense.PANEL16:
        assert dense._cuts(16, 2) is None  # one 16-column panel
    else:
        assert dense._cuts(16, 2).tolist() == [0, 1, 2]  # two 8-column panels
    # 40, 132 and 400 columns fall inside a panel (32, 32, then 16 or 8 + 8 / eight of 32 then one of 8 / 25 of 32)
    assert dense._cuts(80, 2) is None and dense._cuts(264, 2) is None and dense._cuts(800, 2) is None
    assert dense._cuts(40, 1).tolist() == [0, 2]
    # about equal shares (a transposed B): 416 | 384 of 800 columns, 128 | 136 of 264; not 32 | 8
    assert dense._cuts(800, 2, even=False).tolist() in ([0, 13, 25], [0, 12, 25])
    assert dense._cuts(264, 2, even=False).tolist() == [0, 4, 9]
    assert dense._cuts(40, 2, even=False) is None and dense._cuts(8, 2, even=False) is None


@pytest.mark.parametrize("panel16", [True, False])
def test_panels_are_32_columns_then_one_of_16_then_of_8(monkeypatch, panel16):
    """16-column panels with 512-bit vectors only (dense.PANEL16; the tests run on whichever the host has)."""
    monkeypatch.setattr(dense, "PANEL16", panel16)
    dense._panels.cache_clear()
    try:
        for m, widths in ((8, [8]), (16, [16]), (24, [16, 8]), (32, [32]), (56, [32, 16, 8]),
                          (120, [32, 32, 32, 16, 8]), (400, [32] * 12 + [16]), (264, [32] * 8 + [8])):
            if not panel16:
                widths = [w for v in widths for w in ([8, 8] if v == 16 else [v])]
            starts, got = dense._panels(m)
            assert got.tolist() == widths and starts.tolist() == np.cumsum([0] + widths[:-1]).tolist()
    finally:
        dense._panels.cache_clear()


@pytest.mark.parametrize("m", [16, 24, 56, 120, 400])
@pytest.mark.parametrize("n", [5, 64, 131])
def test_16_column_panels_give_the_bits_of_32_column_ones(numba_mode, n, m):
    """Each element is one micro-kernel's sum over the whole reduction, in order, whichever tile computes it: a
    width ending in a 16-column panel gives the bits of the same columns of B padded to a multiple of 32 columns
    (every panel 32 wide), for the plain product, the bias + ReLU one and the masked weight gradient, on one thread
    and all."""
    rng = np.random.default_rng(n * m)
    k, pad = 70, -m % 32
    a = rng.standard_normal((n, k), dtype=np.float32)
    b = rng.standard_normal((k, m), dtype=np.float32)
    bias = rng.standard_normal(m, dtype=np.float32)
    x = rng.standard_normal((k, n), dtype=np.float32)  # a weight gradient's x^T @ dz: n features, k samples
    dy = rng.standard_normal((k, m), dtype=np.float32)
    y = rng.standard_normal((k, m), dtype=np.float32)

    def widen(v):
        return np.ascontiguousarray(np.pad(v, [(0, 0)] * (v.ndim - 1) + [(0, pad)]))

    def products(b, bias, dy, y):
        w = b.shape[1]
        plain = dense.panel_matmul(a, b, np.empty((n, w), np.float32), False, False)
        fused = dense.panel_matmul(a, b, np.empty((n, w), np.float32), False, False, bias=bias, relu=True)
        dz, db = np.empty_like(dy), np.empty(w, np.float32)
        dw = dense.panel_matmul(x, dy, np.empty((n, w), np.float32), True, False, mask=(y, dz, db, True))
        return [r[..., :m] for r in (plain, fused, dw, dz, db)]

    before = numba.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            got = products(b, bias, dy, y)
            want = products(widen(b), widen(bias), widen(dy), widen(y))
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)
    finally:
        numba.set_num_threads(before)


def test_transpose_in_registers_matches_numpy():
    """The 8 x 8 register transpose with ragged edges on both sides (rows and columns not multiples of 8), over one
    thread and several."""
    rng = np.random.default_rng(7)
    for t, n in ((256, 784), (13, 37), (8, 8), (9, 531), (130, 5)):
        x = rng.standard_normal((t, n), dtype=np.float32)
        for parts in (1, 2, 3):
            out = np.full((n, t), np.nan, np.float32)
            dense._transpose(x, out, parts)
            np.testing.assert_array_equal(out, x.T)


@pytest.mark.parametrize("k,n,m", [(256, 784, 256), (131, 523, 40)])
def test_a_weight_gradient_of_a_wide_input_transposes_it_first_with_the_same_bits(numba_mode, monkeypatch, k, n, m):
    """x^T @ dz with x at least TRANSPOSE_ROWS wide and TRANSPOSE_TAPS long runs on a transposed copy of x: the bits
    of the product read in place, and a second call (the thread's buffer reused) the same."""
    rng = np.random.default_rng(k + n)
    x = rng.standard_normal((k, n), dtype=np.float32)
    dz = rng.standard_normal((k, m), dtype=np.float32)
    assert k >= dense.TRANSPOSE_TAPS and n >= dense.TRANSPOSE_ROWS
    calls = []
    real = dense._transpose
    monkeypatch.setattr(dense, "_transpose", lambda *a: (calls.append(a[0].shape), real(*a)))
    first = dense.panel_matmul(x, dz, np.empty((n, m), np.float32), True, False)
    again = dense.panel_matmul(x, dz, np.empty((n, m), np.float32), True, False)
    assert calls == [(k, n), (k, n)]
    monkeypatch.setattr(dense, "TRANSPOSE_TAPS", 10**9)
    in_place = dense.panel_matmul(x, dz, np.empty((n, m), np.float32), True, False)
    assert calls == [(k, n), (k, n)]
    np.testing.assert_array_equal(first, in_place)
    np.testing.assert_array_equal(again, in_place)


def test_the_transposed_copies_kept_are_a_few_recent_shapes(numba_mode):
    """A batch size changed again and again while training brings new shapes: the thread keeps the last four."""
    rng = np.random.default_rng(3)
    for k in range(128, 128 + 8 * 6, 8):
        x = rng.standard_normal((k, 520), dtype=np.float32)
        np.testing.assert_array_equal(dense._transposed(x, 2), x.T)
    assert list(dense._local.bufs) == [(520, k) for k in range(128 + 8 * 2, 128 + 8 * 6, 8)]
    x = rng.standard_normal((144, 520), dtype=np.float32)  # one of them again: reused, now the most recent
    kept = dense._local.bufs[(520, 144)]
    assert dense._transposed(x, 2) is kept and list(dense._local.bufs)[-1] == (520, 144)
