"""Winograd F(4x4, 3x3) convolutions: the transforms, which layers use them, outputs and gradients against float64
references and against the direct convolution, and results that do not depend on the thread count.

Shapes are written in multiples of the vector width (``LANES``: 16 floats with AVX-512, 8 with AVX2), so the
same tests exercise whichever width the host compiles for.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from tests.engine.test_conv_layers import check_layer, ref_block, ref_conv_layer
from tuinet.engine.conv import Conv2D, winograd
from tuinet.engine.conv.codegen import _MK_ROWS, LANES
from tuinet.engine.conv.winograd import AT, BT, IN6, OUT4, XI, WinogradPlan
from tuinet.engine.residual import ResidualBlock

L = LANES


@numba.njit
def _in6(src, dst):
    IN6(src, 0, 6 * L, L, dst, 0, 6 * L, L)


@numba.njit
def _out4(src, dst):
    OUT4(src, 0, 6 * L, L, dst, 0, 4 * L, L)


def test_the_transforms_compute_the_matrix_products():
    """V = B^T d B and Y = A^T M A, lane by lane, against the products of the published matrices."""
    rng = np.random.default_rng(0)
    d = rng.standard_normal((6, 6, L)).astype(np.float32)
    v = np.zeros((6, 6, L), np.float32)
    _in6(d.reshape(-1), v.reshape(-1))
    bt = np.array(BT, np.float64)
    np.testing.assert_allclose(v, np.einsum("ai,ijc,bj->abc", bt, d.astype(np.float64), bt), rtol=1e-5, atol=1e-4)
    y = np.zeros((4, 4, L), np.float32)
    _out4(d.reshape(-1), y.reshape(-1))
    at = np.array(AT, np.float64)
    np.testing.assert_allclose(y, np.einsum("ai,ijc,bj->abc", at, d.astype(np.float64), at), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name,matrix", [("bt", BT), ("at", AT), ("a", tuple(zip(*AT)))])
def test_the_shared_term_transforms_are_their_matrices(name, matrix):
    """Each 1-D transform's shared-term form (fused multiply-adds) computes its matrix times a vector, exactly on
    small integers (every coefficient and partial sum is an integer well inside float64's exact range)."""
    fact = winograd._factored()[winograd._key(matrix)]
    x = [float(v) for v in np.random.default_rng(len(name)).integers(-9, 10, len(matrix[0]))]
    got = fact(x, lambda a, b: a + b, lambda a, b: a - b, lambda a, c, b: a * c + b)
    assert got == [float(v) for v in np.asarray(matrix, np.float64) @ np.asarray(x)]


@numba.njit
def _dy4(src, dst):
    winograd.DY4(src, 0, 4 * L, L, dst, 0, 6 * L, L)


def test_the_dy_transform_computes_its_matrix_product():
    """Hh = A H A^T (the weight gradient's transform of a 4x4 block of dy), lane by lane."""
    h = np.random.default_rng(2).standard_normal((4, 4, L)).astype(np.float32)
    out = np.zeros((6, 6, L), np.float32)
    _dy4(h.reshape(-1), out.reshape(-1))
    a = np.array(AT, np.float64).T
    np.testing.assert_allclose(out, np.einsum("ai,ijc,bj->abc", a, h.astype(np.float64), a), rtol=1e-5, atol=1e-4)


def test_weight_transform_in_column_chunks_is_the_whole_product():
    """Past SANDWICH_COLS columns (64 x 64 channels) the transform's product runs in column chunks: the numbers of
    the whole product, bit for bit."""
    w = np.random.default_rng(3).standard_normal((3, 3, 64, 64)).astype(np.float32)
    assert 64 * 64 > winograd.SANDWICH_COLS
    whole = winograd._kron(winograd.G, winograd.G) @ w.reshape(9, -1)
    np.testing.assert_array_equal(winograd.transform_weights(w), whole.reshape(36, 64, 64))


def test_transformed_weights_give_the_direct_convolution_of_one_tile():
    """A^T [(G g G^T) * (B^T d B)] A is the 4x4 correlation of a 6x6 block with the 3x3 kernel (one channel)."""
    rng = np.random.default_rng(1)
    g = rng.standard_normal((3, 3, 1, 1)).astype(np.float32)
    d = rng.standard_normal((6, 6))
    u = winograd.transform_weights(g).reshape(6, 6).astype(np.float64)
    bt, at = np.array(BT, np.float64), np.array(AT, np.float64)
    y = at @ (u * (bt @ d @ bt.T)) @ at.T
    want = np.array([[(d[i:i + 3, j:j + 3] * g[:, :, 0, 0]).sum() for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,filters,k,stride,pad,uses", [
    ((8, 8, L), L, 3, 1, "same", True),
    ((28, 28, L), L, 3, 1, "same", True),
    ((14, 14, 2 * L), 2 * L, 3, 1, "same", True),  # tiles over 16x16 = 1.31x the output
    ((7, 7, 4 * L), 4 * L, 3, 1, "same", True),
    ((10, 10, 2 * L), L, 3, 1, "same", False),  # tiles over 12x12 = 1.44x the output
    ((13, 13, L), 2 * L, 3, 1, "valid", False),
    ((8, 8, L), L, 3, 2, "same", False),
    ((8, 8, L), L, 5, 1, "same", False),
    ((8, 8, L + 8), L, 3, 1, "same", L == 8),  # input channels not a multiple of 16 with AVX-512
    ((8, 8, L), 24, 3, 1, "same", L == 8),
])
def test_which_convolutions_use_winograd(shape, filters, k, stride, pad, uses):
    layer = Conv2D(filters, k, stride, pad)
    layer.build(shape, np.random.default_rng(0))
    assert (layer._wino is not None) == uses
    assert (layer._wino_dx is not None) == uses


def test_winograd_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("TUINET_WINOGRAD", "0")
    layer = Conv2D(L, 3, 1, "same")
    layer.build((8, 8, L), np.random.default_rng(0))
    assert layer._wino is None


@pytest.mark.parametrize("shape", [(28, 28, L), (14, 14, 2 * L), (7, 7, 4 * L)])
def test_a_product_holds_whole_register_tiles_of_a_few_samples(shape):
    """The rows (a group of samples' tiles) end where every panel's register tiles end, the group's transformed
    input stays under the size kept in cache, and the tables address the (36, Cin / LANES, rows, LANES) layout."""
    plan = WinogradPlan.build(shape, shape)
    tiles = plan.th * plan.tw
    rows = plan.u.size
    assert rows >= plan.group * tiles
    assert all(rows % _MK_ROWS[int(w)] == 0 for w in plan.panels[:, 1])
    assert plan.group * tiles * XI * shape[2] * 4 <= winograd.GROUP_BYTES or plan.group == 1
    np.testing.assert_array_equal(plan.u, np.arange(rows) * L)
    c = np.arange(shape[2])
    np.testing.assert_array_equal(plan.v, (c // L) * rows * L + c % L)


@pytest.mark.parametrize("shape,filters,bias", [((8, 8, L), L, True), ((7, 7, 2 * L), L, False),
                                                ((11, 10, L), 2 * L, True)])
def test_winograd_convolution_outputs_and_gradients(shape, filters, bias):
    """Output, input gradient and weight gradient against the float64 reference and its finite differences,
    with the last row and column of tiles reaching past the output (7x7, 11x10)."""
    layer = Conv2D(filters, 3, 1, "same", use_bias=bias)
    layer.build(shape, np.random.default_rng(0))
    assert layer._wino is not None
    check_layer(Conv2D(filters, 3, 1, "same", use_bias=bias), shape, lambda x, p: ref_conv_layer(layer, x, p))


def test_winograd_residual_block_gradients():
    """A residual block whose two convolutions run by Winograd (the second one with the fused BatchNorm + ReLU on
    its input, both gathering their BatchNorm's statistics, the skip gradient added in the first's backward)."""
    block = ResidualBlock(L, 1)
    check_layer(block, (8, 8, L), lambda x, p: ref_block(block, x, p), batch=3, n_checks=12, rtol=5e-3, atol=5e-4,
                positive_gamma=True)
    assert block.sublayers["conv1"]._wino is not None and block.sublayers["conv2"]._wino is not None


@pytest.mark.parametrize("shape,batch", [((8, 8, L), 5), ((7, 7, 2 * L), 3)])
def test_winograd_input_gradient_gathers_the_batchnorm_backward_sums(monkeypatch, shape, batch):
    """conv2's Winograd input gradient gathers bn1's backward sums sample by sample: the block's gradients are
    BatchNorm's own pass's (which runs when the gradient's writer gathers nothing) to float32 rounding."""
    block = ResidualBlock(shape[2], 1)
    block.build(shape, np.random.default_rng(7))
    rng = np.random.default_rng(8)
    x = rng.standard_normal((batch,) + shape).astype(np.float32)
    dy = rng.standard_normal((batch,) + shape).astype(np.float32)
    block.forward(x, True)
    conv2, bn1 = block.sublayers["conv2"], block.sublayers["bn1"]
    dx_fused = block.backward(dy, True)
    assert conv2._wino is not None and conv2.bn_sums is not None
    assert conv2.bn_sums[0].shape == (min(numba.get_num_threads(), batch), bn1._x.shape[1])
    grads = [g.copy() for g in block.grads]
    monkeypatch.setattr(type(bn1), "relu_sums_inputs", lambda self, parts, samples: None)
    dx_plain = block.backward(dy, True)
    assert conv2.bn_sums is None
    # (the sums run in float32 blocks of rows that start at other rows: rounding apart)
    np.testing.assert_allclose(dx_fused, dx_plain, rtol=1e-4, atol=1e-5 * np.abs(dx_plain).max())
    for name, ga, gb in zip(block.param_names, grads, block.grads):
        np.testing.assert_allclose(ga, gb, rtol=1e-4, atol=1e-5 * np.abs(gb).max(), err_msg=name)


def test_batchnorm_sums_inputs_need_whole_samples():
    from tuinet.engine.norm import BatchNorm

    bn = BatchNorm()
    bn.build((2, 2, 4), None)
    bn.forward_act(np.random.default_rng(0).standard_normal((3, 2, 2, 4)).astype(np.float32), True, relu=True)
    rows = bn._x.shape[0]
    spec = bn.relu_sums_inputs(2, 3)
    assert spec[0] is True and spec[1] is bn._x and spec[-1].shape == (2, bn._x.shape[1])
    assert bn.relu_sums_inputs(2, rows + 1) is None


def _block_pair(monkeypatch, shape, filters):
    blocks = []
    for on in ("1", "0"):
        monkeypatch.setenv("TUINET_WINOGRAD", on)
        b = ResidualBlock(filters, 1)
        b.build(shape, np.random.default_rng(3))
        blocks.append(b)
    monkeypatch.delenv("TUINET_WINOGRAD")
    return blocks


def test_winograd_and_direct_blocks_train_alike(monkeypatch):
    """The same block with and without Winograd: outputs, batch statistics, running statistics, input and weight
    gradients agree to float32 rounding (the weight gradients' direct pass reads the same inputs)."""
    wino, direct = _block_pair(monkeypatch, (14, 14, 2 * L), 2 * L)
    assert wino.sublayers["conv2"]._wino is not None and direct.sublayers["conv2"]._wino is None
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 14, 14, 2 * L)).astype(np.float32)
    dy = rng.standard_normal((6, 14, 14, 2 * L)).astype(np.float32)
    ya, yb = wino.forward(x, True), direct.forward(x, True)
    np.testing.assert_allclose(ya, yb, rtol=1e-4, atol=1e-4)
    for key in wino.buffers:
        np.testing.assert_allclose(wino.buffers[key], direct.buffers[key], rtol=1e-4, atol=1e-5, err_msg=key)
    dxa, dxb = wino.backward(dy, True), direct.backward(dy, True)
    np.testing.assert_allclose(dxa, dxb, rtol=1e-4, atol=1e-3)
    for name, ga, gb in zip(wino.param_names, wino.grads, direct.grads):
        np.testing.assert_allclose(ga, gb, rtol=1e-3, atol=1e-3 * np.abs(gb).max(), err_msg=name)


def test_winograd_results_do_not_depend_on_the_thread_count():
    layer = Conv2D(2 * L, 3, 1, "same")
    layer.build((14, 14, L), np.random.default_rng(5))
    rng = np.random.default_rng(6)
    x = rng.standard_normal((7, 14, 14, L)).astype(np.float32)
    dy = rng.standard_normal((7, 14, 14, 2 * L)).astype(np.float32)
    old = numba.get_num_threads()
    out = []
    try:
        for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n)
            y = layer.forward(x, True).copy()
            dx = layer.backward(dy, True).copy()
            out.append((y, dx))
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])
    # and a sample's result is the same in any batch (its tiles are rows of their own in each product)
    np.testing.assert_array_equal(layer.forward(x[3:4], True)[0], out[0][0][3])
