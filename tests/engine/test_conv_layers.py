"""Conv2D, pooling, BatchNorm and ResidualBlock: outputs against naive float64 NumPy references, and gradients
against central finite differences of those references in float64.

The layers compute in float32; the references are independent float64 loops/einsums, so the float64 finite
differences are exact to ~1e-9 and the comparison tolerance only has to absorb float32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

from tuinet.engine.conv import AvgPool2D, Conv2D, GlobalAvgPool, MaxPool2D, conv_geometry, kernels
from tuinet.engine.layers import ReLU
from tuinet.engine.conv.plan import SCATTER48, _scatter_panels
from tuinet.engine.norm import BatchNorm, fold_factor
from tuinet.engine.residual import ResidualBlock
from tuinet.errors import ModelError

# --- float64 references ----------------------------------------------------------------------------------------


def ref_conv(x, w, b, stride, pads):
    """Naive NHWC convolution: pads = ((top, bottom), (left, right))."""
    (pt, pb), (pl, pr) = pads
    sh, sw = stride
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    kh_, kw_ = w.shape[:2]
    oh = (xp.shape[1] - kh_) // sh + 1
    ow = (xp.shape[2] - kw_) // sw + 1
    out = np.zeros((x.shape[0], oh, ow, w.shape[3]))
    for kh in range(kh_):
        for kw in range(kw_):
            patch = xp[:, kh:kh + sh * (oh - 1) + 1:sh, kw:kw + sw * (ow - 1) + 1:sw, :]
            out += np.einsum("nhwc,cf->nhwf", patch, w[kh, kw])
    return out + (b if b is not None else 0.0)


def ref_pool(x, k, s, op):
    n, h, w, c = x.shape
    oh, ow = (h - k[0]) // s[0] + 1, (w - k[1]) // s[1] + 1
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            win = x[:, i * s[0]:i * s[0] + k[0], j * s[1]:j * s[1] + k[1], :]
            out[:, i, j, :] = op(win, axis=(1, 2))
    return out


def ref_bn(x, gamma, beta, eps=1e-5):
    axes = tuple(range(x.ndim - 1))
    mu = x.mean(axis=axes)
    var = x.var(axis=axes)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def conv_pads(layer, x_shape):
    _, h, w, _ = x_shape
    _, t, b = conv_geometry(h, layer.kernel_size[0], layer.stride[0], layer.padding)
    _, l_, r = conv_geometry(w, layer.kernel_size[1], layer.stride[1], layer.padding)
    return (t, b), (l_, r)


def ref_conv_layer(layer, x, params):
    w = params[0]
    b = params[1] if layer.use_bias else None
    return ref_conv(x, w, b, layer.stride, conv_pads(layer, x.shape))


def ref_block(block, x, params):
    """Reference forward of a ResidualBlock from its flat params (names as block.param_names)."""
    p = dict(zip(block.param_names, params))
    s = block.sublayers

    def conv(key, h):
        return ref_conv_layer(s[key], h, [p[f"{key}.W"]])

    h = ref_bn(conv("conv1", x), p["bn1.gamma"], p["bn1.beta"])
    h = np.maximum(h, 0)
    h = ref_bn(conv("conv2", h), p["bn2.gamma"], p["bn2.beta"])
    skip = ref_bn(conv("proj", x), p["proj_bn.gamma"], p["proj_bn.beta"]) if block.has_projection else x
    return np.maximum(h + skip, 0)


# --- the check -------------------------------------------------------------------------------------------------


def fd_grad(f, arrays, which, idx, eps=1e-6):
    """Central difference of scalar f(arrays) w.r.t. arrays[which].flat[idx], in float64."""
    a = arrays[which]
    old = a.flat[idx]
    a.flat[idx] = old + eps
    fp = f(arrays)
    a.flat[idx] = old - eps
    fm = f(arrays)
    a.flat[idx] = old
    return (fp - fm) / (2 * eps)


def check_layer(layer, input_shape, ref_forward, seed=0, batch=3, n_checks=25, rtol=2e-3, atol=2e-4,
                positive_gamma=False):
    """Build ``layer``, run it in float32 and compare output, dx and every param grad with the reference."""
    rng = np.random.default_rng(seed)
    layer.build(input_shape, np.random.default_rng(seed + 1))
    for p in layer.params:  # non-trivial params (BN gamma/beta start at 1/0)
        p[...] = rng.standard_normal(p.shape).astype(np.float32) * (0.5 if p.ndim > 1 else 1.0)
        if positive_gamma and p.ndim == 1:
            p[...] = np.abs(p) + 0.5
    x = rng.standard_normal((batch,) + tuple(input_shape)).astype(np.float32)
    y = layer.forward(x, training=True)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    r = rng.standard_normal(y.shape)  # upstream gradient: loss = sum(y * r)
    dx = layer.backward(r.astype(np.float32), need_dx=True)

    x64 = x.astype(np.float64)
    p64 = [p.astype(np.float64) for p in layer.params]
    y_ref = ref_forward(x64, p64)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)

    arrays = [x64] + p64

    def loss(arrs):
        return float((ref_forward(arrs[0], arrs[1:]) * r).sum())

    analytic = [dx] + list(layer.grads)
    for which, (arr, g) in enumerate(zip(arrays, analytic)):
        assert g.shape == arr.shape
        idxs = rng.choice(arr.size, size=min(n_checks, arr.size), replace=False)
        num = np.array([fd_grad(loss, arrays, which, i) for i in idxs])
        np.testing.assert_allclose(g.reshape(-1)[idxs], num, rtol=rtol, atol=atol * max(1.0, np.abs(num).max()),
                                   err_msg=f"gradient {which} (0 = input) of {layer.describe()}")
    return layer


# --- Conv2D ----------------------------------------------------------------------------------------------------

CONV_CASES = [
    # (input_shape, filters, kernel, stride, padding, bias)
    ((7, 7, 3), 4, 3, 1, "valid", True),
    ((7, 6, 2), 5, 3, 1, "same", True),
    ((8, 8, 3), 4, 3, 2, "same", True),        # even size, stride 2: asymmetric same padding
    ((9, 7, 2), 3, (3, 2), (2, 1), "valid", False),  # odd sizes, rectangular kernel and stride
    ((5, 5, 1), 8, 5, 1, 2, True),             # integer padding
    ((6, 6, 2), 3, 3, 3, 1, True),             # stride larger than padding, windows skip pixels
    ((4, 5, 3), 2, 1, 2, "valid", True),       # 1x1 projection-like
    ((3, 3, 2), 2, 5, 1, "same", True),        # kernel larger than the image
    ((6, 5, 3), 40, 3, 1, "valid", True),      # output channels in a 32-wide and an 8-wide panel
    ((5, 6, 9), 24, 2, 1, "same", True),       # a 24-wide panel; 36 taps (dx panels 32 + 8)
    ((7, 7, 5), 16, 3, 2, 1, False),           # a 16-wide panel, stride and padding
    ((10, 10, 24), 32, 3, 1, "valid", True),   # the cnn preset's second conv (216 taps: dx panels 6x32 + 24)
    # input gradient restricted to the kernel rows that reach dy (per tile of dx rows):
    ((6, 5, 24), 8, 3, 1, "valid", True),      # 3-row dx tiles that straddle image rows (W = 5)
    ((7, 7, 24), 8, 3, 2, "same", True),       # stride 2 with same padding, 3-row tiles
    ((9, 8, 2), 4, 2, 3, "valid", True),       # the last input row is in no window: an empty tap range
    ((8, 9, 24), 8, (3, 2), (2, 3), 2, True),  # rectangular kernel and stride with integer padding
    # input gradient as dy @ W^T and col2im (strided, or Cin not a multiple of 8; most cases above too):
    ((8, 8, 16), 32, 3, 2, "same", True),      # a resnet block's strided conv (asymmetric same padding)
    ((8, 8, 16), 32, 1, 2, "valid", False),    # its 1x1 strided projection (no padding: col2im straight into dx)
    # weight gradient transposed (Cout padded to 8 or 16, kernel rows of 48k inputs: 48-wide tiles)
    ((6, 6, 16), 16, 3, 1, "same", True),      # resnet's first block
    ((7, 6, 16), 6, 3, 2, "same", False),      # Cout 6 padded to 8, stride and asymmetric padding
    ((5, 5, 32), 16, 3, 1, "valid", True),     # two 48-wide panels per kernel row
    # one input channel: two output positions per GEMM row (forward and weight gradient)
    ((6, 6, 1), 6, 5, 1, "same", True),        # lenet's first conv: Cout 6 padded to 8, 16-wide paired rows
    ((8, 6, 1), 16, 3, 1, "same", False),      # resnet's stem: 32-wide paired rows written in place
    ((7, 9, 1), 8, (3, 2), 1, "valid", True),  # rectangular kernel, OW = 8
]


def test_conv2d_input_gradient_strategy_follows_stride_and_channels():
    """The full convolution of dy for stride-1 convolutions of 8k channels, dy @ W^T + col2im for the others."""
    def plan(shape, filters, k, s, pad):
        layer = Conv2D(filters, k, s, pad)
        layer.build(shape, np.random.default_rng(0))
        return layer._plan.dx_gemm

    assert not plan((10, 10, 24), 32, 3, 1, "valid") and not plan((28, 28, 16), 16, 3, 1, "same")
    assert plan((28, 28, 16), 32, 3, 2, "same") and plan((28, 28, 16), 32, 1, 2, "valid")
    assert plan((14, 14, 6), 16, 5, 1, "valid") and plan((28, 28, 1), 6, 5, 1, "same")


def test_conv2d_fuses_col2im_when_kernel_rows_make_whole_panels():
    """The col2im runs in the input-gradient GEMM's epilogue when every kernel row's KW*Cin taps split into
    panels of 32 and 16 (each panel contiguous in the input), else through the dcols buffer."""
    def plan(shape, filters, k, s, pad):
        layer = Conv2D(filters, k, s, pad)
        layer.build(shape, np.random.default_rng(0))
        return layer._plan

    p = plan((28, 28, 16), 32, 3, 2, "same")  # resnet's strided conv: 48 taps per kernel row
    assert p.scat and p.panels_s.tolist() == _scatter_panels(3, 48, 29 * 16, SCATTER48).tolist()
    assert plan((28, 28, 16), 32, 1, 2, "valid").scat and plan((7, 7, 32), 8, 3, 2, "same").scat
    assert not plan((14, 14, 6), 16, 5, 2, "valid").scat  # 30 taps per kernel row
    assert not plan((7, 7, 24), 8, 3, 2, "same").scat  # 72: a panel of 8 would be needed (not compiled)
    assert not plan((28, 28, 16), 16, 3, 1, "same").scat  # stride 1, 8k channels: the full convolution


def test_scatter_panels_cover_each_kernel_row_in_48_wide_panels_with_512_bit_vectors():
    row = 29 * 16  # a padded input row of 29 pixels of 16 channels
    assert _scatter_panels(3, 48, row, wide=False).tolist() == [
        [0, 32, 0], [32, 16, 32], [48, 32, row], [80, 16, row + 32], [96, 32, 2 * row], [128, 16, 2 * row + 32]]
    assert _scatter_panels(3, 48, row, wide=True).tolist() == [[0, 48, 0], [48, 48, row], [96, 48, 2 * row]]
    assert _scatter_panels(1, 96, row, wide=True).tolist() == [[0, 48, 0], [48, 48, 48]]
    assert _scatter_panels(1, 80, row, wide=True).tolist() == [[0, 48, 0], [48, 32, 48]]
    assert _scatter_panels(1, 64, row, wide=True).tolist() == [[0, 48, 0], [48, 16, 48]]
    assert SCATTER48 == (kernels.LANES == 16)


@pytest.mark.parametrize("shape,filters,k,pad", [((28, 28, 16), 32, 3, "same"), ((14, 14, 32), 64, 3, "same"),
                                                 ((9, 9, 16), 24, 3, "valid"), ((7, 6, 48), 16, 1, "valid")])
def test_48_wide_scatter_panels_give_the_same_input_gradient(monkeypatch, shape, filters, k, pad):
    """The 48-wide scatter tiles (their partial last tiles through the 32- and 16-wide ones) give the input
    gradient of the 32- and 16-wide panels, whichever the host uses, to float rounding: a pixel's contributions
    from different kernel columns of one kernel row now arrive row by row instead of panel by panel. P of 196,
    49, 16 and 12 rows (tails of 4, 1, 0 and 4 rows after the 8-row tiles)."""
    from tuinet.engine.conv import plan as plan_mod

    rng = np.random.default_rng(2)
    x = rng.standard_normal((3,) + shape).astype(np.float32)
    dxs = []
    for wide in (False, True):
        monkeypatch.setattr(plan_mod, "SCATTER48", wide)
        layer = Conv2D(filters, k, 2, pad)
        layer.build(shape, np.random.default_rng(0))
        assert layer._plan.scat and (48 in layer._plan.panels_s[:, 1]) == wide
        y = layer.forward(x, True)
        dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
        dxs.append(layer.backward(dy))
    np.testing.assert_allclose(dxs[0], dxs[1], rtol=1e-5, atol=2e-6)


def test_conv_kernel_variants_agree_and_only_residual_models_use_the_extended_one():
    """The plain and the extended conv kernels give the same results bit for bit where both apply; a model without
    residual blocks runs every convolution on the plain variant (less to compile on a first run), a model with
    them runs every convolution on the extended one (one variant compiled, not two)."""
    from tuinet.engine import build_model

    rng = np.random.default_rng(12)
    for shape, f, k, st, pad in (((9, 9, 8), 24, 3, 1, "same"), ((8, 8, 1), 16, 3, 1, "same"),
                                 ((10, 10, 6), 16, 5, 1, "valid")):
        x = rng.standard_normal((3,) + shape).astype(np.float32)
        results = []
        for ext in (False, True):
            layer = Conv2D(f, k, st, pad)
            layer.build(shape, np.random.default_rng(2))
            layer.kernel_ext = ext
            y = layer.forward(x, True)
            dx = layer.backward(np.ones_like(y))
            results.append((y, dx, *layer.grads))
        for a, b in zip(*results):
            np.testing.assert_array_equal(a, b)
    plain = build_model("cnn", (28, 28, 1), 10)
    assert not any(getattr(layer, "kernel_ext", False) for layer in plain.layers)
    res = build_model("resnet", (28, 28, 1), 10)
    convs = [layer for layer in res.layers if isinstance(layer, Conv2D)]
    convs += [sub for layer in res.layers for sub in getattr(layer, "sublayers", {}).values() if isinstance(sub, Conv2D)]
    assert len(convs) > 5 and all(c.kernel_ext for c in convs)


def test_conv_launchers_call_the_part_kernels_through_their_address():
    """The parallel launchers of the conv kernels call the serial part kernels through a function pointer: their
    compiled code holds no convolution code (with the part linked in, Numba optimized and emitted the whole
    convolution again in the launcher's modules: three times the compile of the part alone on a first run). Checked
    on a fresh compile of the forward launcher (a cached one cannot be inspected)."""
    from numba import njit

    from tuinet.engine.conv import kernels

    rng = np.random.default_rng(3)
    layer = Conv2D(8, 3, 1, "same")
    layer.build((6, 6, 2), rng)
    layer.forward(rng.standard_normal((2, 6, 6, 2)).astype(np.float32), True)
    (sig,) = kernels._launch_forward.signatures
    fresh = njit(parallel=True, nogil=True)(kernels._launch_forward.py_func)
    fresh.compile(sig)
    ir = fresh.inspect_llvm(sig)
    defined = [line for line in ir.splitlines() if line.startswith("define")]
    assert defined and not [d for d in defined if "panel_gemm" in d or "conv2d_forward_part" in d], defined
    assert "conv2d_forward_part" not in ir and "_panel_gemm" not in ir and "tile" not in ir


def test_a_part_kernel_bound_to_other_argument_types_is_bound_again():
    """A PartKernel whose signature does not match a call's arguments is typed again from them, and the call gives
    the same result as with the right signature."""
    from tuinet.engine.conv import kernels

    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 7, 7, 4)).astype(np.float32)
    layer = Conv2D(8, 3, 1, "valid")
    layer.build((7, 7, 4), rng)
    want = layer.forward(x, True).copy()
    part = kernels._FWD[False]
    right = part.signature()
    saved = dict(part.__dict__)
    part.bind((1.0,))  # as if bound to some other call
    assert part.signature() != right
    try:
        np.testing.assert_array_equal(layer.forward(x, True), want)
        assert part.signature() == right
    finally:
        part.__dict__.update(saved)


def test_conv2d_transposes_the_weight_gradient_only_for_narrow_outputs():
    def plan(shape, filters, k, s, pad):
        layer = Conv2D(filters, k, s, pad)
        layer.build(shape, np.random.default_rng(0))
        return layer._plan

    p = plan((28, 28, 16), 16, 3, 1, "same")
    assert p.tdw and p.panels_t.tolist() == [[0, 48, 0], [30 * 16, 48, 48], [2 * 30 * 16, 48, 96]]
    assert plan((14, 14, 32), 6, 3, 2, "same").tdw
    assert not plan((28, 28, 16), 32, 3, 2, "same").tdw  # 32 columns: the wide tile already
    assert not plan((12, 12, 24), 16, 3, 1, "valid").tdw  # 72 inputs per kernel row
    assert not plan((28, 28, 1), 16, 3, 1, "same").tdw  # paired


def test_conv2d_pairs_output_positions_only_for_one_channel_and_narrow_outputs():
    def pair(shape, filters, k, s, pad):
        layer = Conv2D(filters, k, s, pad)
        layer.build(shape, np.random.default_rng(0))
        return layer._plan.pair

    assert pair((28, 28, 1), 6, 5, 1, "same") and pair((28, 28, 1), 16, 3, 1, "same")
    assert not pair((28, 28, 1), 24, 5, 1, "valid")  # 24 columns: a wider tile already
    assert not pair((28, 28, 1), 16, 3, 2, "same") and not pair((28, 28, 1), 16, 4, 1, "valid")  # stride, OW 25
    assert not pair((28, 28, 3), 16, 3, 1, "same")


def test_paired_forward_is_the_unpaired_one_bit_for_bit():
    """The paired weights only add exact zeros to each sum, in the same order: the same outputs."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 10, 10, 1)).astype(np.float32)
    for filters, k in ((6, 5), (16, 3)):
        layer = Conv2D(filters, k, 1, "same")
        layer.build((10, 10, 1), rng)
        assert layer._plan.pair
        paired = layer.forward(x, True)
        pool = MaxPool2D(1)  # a fused 1x1 max pool runs the unpaired forward and passes its input through
        pool.build(layer.output_shape, None)
        np.testing.assert_array_equal(layer.forward_fused(x, True, pool), paired)


@pytest.mark.parametrize("shape,filters,k,s,pad,bias", CONV_CASES)
def test_conv2d_gradients(shape, filters, k, s, pad, bias):
    layer = Conv2D(filters, k, s, pad, use_bias=bias)
    check_layer(layer, shape, lambda x, p: ref_conv_layer(layer, x, p))


def test_conv2d_without_input_gradient_fills_weight_grads():
    rng = np.random.default_rng(3)
    a, b = Conv2D(4, 3, 1, "same"), Conv2D(4, 3, 1, "same")
    for layer in (a, b):
        layer.build((6, 6, 2), np.random.default_rng(0))
    x = rng.standard_normal((5, 6, 6, 2)).astype(np.float32)
    dy = rng.standard_normal((5, 6, 6, 4)).astype(np.float32)
    a.forward(x, True)
    b.forward(x, True)
    assert a.backward(dy, need_dx=False) is None
    assert b.backward(dy, need_dx=True).shape == x.shape
    np.testing.assert_allclose(a.grads[0], b.grads[0], rtol=1e-6)
    np.testing.assert_allclose(a.grads[1], dy.sum(axis=(0, 1, 2)), rtol=1e-5)


def test_conv2d_torch_init_bounds():
    layer = Conv2D(8, 3, init="torch")
    layer.build((6, 6, 4), np.random.default_rng(0))
    bound = 1 / np.sqrt(3 * 3 * 4)
    for p in layer.params:
        assert p.dtype == np.float32 and np.abs(p).max() <= bound and np.abs(p).max() > 0.5 * bound
    with pytest.raises(ModelError):
        Conv2D(8, 3, init="orthogonal")


@pytest.mark.parametrize("rows,width,lanes", [(3, 32, 8), (3, 24, 8), (4, 16, 8), (8, 8, 8), (6, 32, 16),
                                              (6, 24, 16), (12, 16, 16), (8, 8, 16), (2, 40, 16)])
def test_conv_microkernel_tiles_match_numpy(rows, width, lanes):
    """Every tile shape, with 8- and 16-float vectors (either is correct on any CPU: LLVM splits or widens)."""
    from numba import njit

    from tuinet.engine.conv.microkernels import row_vectors, tile_kernel

    assert sum(row_vectors(width, lanes)) == width and max(row_vectors(width, lanes)) <= lanes
    mk = tile_kernel(rows, width, lanes)

    @njit
    def run(xf, u, r0, v, b, j0, c, bias, acc):
        mk(xf, u, r0, v, b, j0, c, r0, j0, bias, acc)

    rng = np.random.default_rng(rows * width + lanes)
    xf = rng.standard_normal(500).astype(np.float32)
    u = rng.integers(0, 200, rows + 3).astype(np.int64)
    taps = 37
    v = rng.integers(0, 300, taps).astype(np.uint64)
    b = rng.standard_normal((taps, width + 16)).astype(np.float32)
    bias = rng.standard_normal(width + 16).astype(np.float32)
    r0, j0 = 2, 8
    a = xf[u[r0:r0 + rows, None] + v[None, :].astype(np.int64)].astype(np.float64)
    want = a @ b[:, j0:j0 + width].astype(np.float64)
    c0 = rng.standard_normal((rows + 5, width + 16)).astype(np.float32)
    c = c0.copy()
    run(xf, u, r0, v, b, j0, c, bias, True)
    np.testing.assert_allclose(c[r0:r0 + rows, j0:j0 + width], c0[r0:r0 + rows, j0:j0 + width] + want, rtol=1e-5,
                               atol=1e-4)
    outside = np.ones(c.shape, bool)
    outside[r0:r0 + rows, j0:j0 + width] = False
    assert np.array_equal(c[outside], c0[outside])  # nothing outside the tile is touched
    c = c0.copy()
    run(xf, u, r0, v, b, j0, c, bias, False)
    np.testing.assert_allclose(c[r0:r0 + rows, j0:j0 + width], want + bias[j0:j0 + width], rtol=1e-5, atol=1e-4)
    c = c0.copy()
    run(xf, u, r0, v[:0], b[:0], j0, c, bias, False)  # no taps: the bias alone
    np.testing.assert_array_equal(c[r0:r0 + rows, j0:j0 + width], np.broadcast_to(bias[j0:j0 + width],
                                                                                   (rows, width)))


def ref_conv_input_grad(x_shape, w, r, stride, pads):
    """d/dx of sum(ref_conv(x) * r): each output position's gradient spread over its window (float64)."""
    (pt, pb), (pl, pr) = pads
    sh, sw = stride
    n, h, wd, _ = x_shape
    oh, ow = r.shape[1:3]
    dxp = np.zeros((n, h + pt + pb, wd + pl + pr, x_shape[3]))
    for kh in range(w.shape[0]):
        for kw in range(w.shape[1]):
            dxp[:, kh:kh + sh * (oh - 1) + 1:sh, kw:kw + sw * (ow - 1) + 1:sw, :] += np.einsum(
                "nhwf,cf->nhwc", r, w[kh, kw])
    return dxp[:, pt:pt + h, pl:pl + wd, :]


@pytest.mark.parametrize("shape,filters,k,pad", [((5, 14, 16), 16, 3, "same"), ((4, 13, 16), 16, 3, "same"),
                                                 ((3, 28, 16), 16, 3, "same"), ((6, 16, 16), 8, 3, "valid"),
                                                 ((4, 12, 16), 16, (3, 1), "same"), ((9, 9, 16), 16, 1, "valid")])
def test_16_channel_stride_1_convolutions_match_the_reference_everywhere(shape, filters, k, pad):
    """Stride-1 passes over 16 channels (16-wide tiles in the forward pass and the input gradient) on image rows
    of 14, 13, 28, 16 and 12 pixels (tiles within and across image rows, partial last tiles), a 3x1 and a 1x1
    kernel: the output, the whole input gradient and the weight gradient against float64 NumPy (the gradient
    checks sample 25 elements)."""
    rng = np.random.default_rng(sum(shape) + filters)
    layer = Conv2D(filters, k, 1, pad, use_bias=True)
    layer.build(shape, np.random.default_rng(1))
    x = rng.standard_normal((3,) + shape).astype(np.float32)
    y = layer.forward(x, True)
    w, b = (p.astype(np.float64) for p in layer.params)
    pads = conv_pads(layer, x.shape)
    np.testing.assert_allclose(y, ref_conv(x.astype(np.float64), w, b, (1, 1), pads), rtol=1e-4, atol=1e-4)
    r = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(r, need_dx=True)
    want = ref_conv_input_grad(x.shape, w, r.astype(np.float64), (1, 1), pads)
    np.testing.assert_allclose(dx, want, rtol=1e-4, atol=1e-4)
    xp = np.pad(x.astype(np.float64), ((0, 0),) + pads + ((0, 0),))
    oh, ow = y.shape[1:3]
    dw = np.stack([np.stack([np.einsum("nhwc,nhwf->cf", xp[:, i:i + oh, j:j + ow], r) for j in range(w.shape[1])])
                   for i in range(w.shape[0])])
    np.testing.assert_allclose(layer.grads[0], dw, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("rows,width,lanes", [(6, 32, 16), (12, 16, 16), (8, 8, 16), (8, 48, 16), (3, 32, 8),
                                              (2, 48, 8)])
def test_conv_microkernel_variants_match_numpy(rows, width, lanes):
    """The scatter variant (tile rows added at c[cu[r] + cj0:], rows may overlap), the btable variant (rows of B
    read at b[bu[t] + j0:]) and the affine variant (rows of A a vector apart from xf + u[r0]) against NumPy."""
    from numba import njit

    from tuinet.engine.conv.microkernels import tile_kernel

    mks = tile_kernel(rows, width, lanes, scatter=True)
    mkt = tile_kernel(rows, width, lanes, btable=True)

    @njit
    def run_scatter(xf, u, r0, v, b, j0, c, cu, cj0):
        mks(xf, u, r0, v, b, j0, c, cu, cj0)

    @njit
    def run_btable(xf, u, r0, v, b, bu, j0, c, cr0, cj0, bias, acc):
        mkt(xf, u, r0, v, b, bu, j0, c, cr0, cj0, bias, acc)

    rng = np.random.default_rng(rows * width + lanes)
    xf = rng.standard_normal(500).astype(np.float32)
    u = rng.integers(0, 200, rows + 3).astype(np.int64)
    taps = 29
    v = rng.integers(0, 300, taps).astype(np.uint64)
    a = xf[u[2:2 + rows, None] + v[None, :].astype(np.int64)].astype(np.float64)
    b = rng.standard_normal((taps, width + 16)).astype(np.float32)
    j0 = 8
    want = a @ b[:, j0:j0 + width].astype(np.float64)
    cu = np.array([5 * r for r in range(rows + 3)], np.int64)  # rows 5 apart: overlapping windows add up
    c0 = rng.standard_normal(5 * rows + width + 40).astype(np.float32)
    c = c0.copy()
    run_scatter(xf, u, 2, v, b, j0, c, cu, 3)
    expect = c0.astype(np.float64)
    for r in range(rows):
        expect[cu[2 + r] + 3:cu[2 + r] + 3 + width] += want[r]
    np.testing.assert_allclose(c, expect, rtol=1e-5, atol=1e-4)

    flat = rng.standard_normal(4000).astype(np.float32)  # the rows of B scattered over a flat array
    bu = rng.choice(np.arange(0, 4000 - width - 16, 7), taps, replace=False).astype(np.uint64)
    bt = np.stack([flat[int(o):int(o) + width + 16] for o in bu])
    want = a @ bt[:, j0:j0 + width].astype(np.float64)
    c0 = rng.standard_normal((rows + 5, width + 16)).astype(np.float32)
    bias = rng.standard_normal(width + 16).astype(np.float32)
    c = c0.copy()
    run_btable(xf, u, 2, v, flat, bu, j0, c, 1, 4, bias, True)
    np.testing.assert_allclose(c[1:1 + rows, 4:4 + width], c0[1:1 + rows, 4:4 + width] + want, rtol=1e-5, atol=1e-4)
    outside = np.ones(c.shape, bool)
    outside[1:1 + rows, 4:4 + width] = False
    assert np.array_equal(c[outside], c0[outside])
    c = c0.copy()
    run_btable(xf, u, 2, v, flat, bu, j0, c, 1, 4, bias, False)
    np.testing.assert_allclose(c[1:1 + rows, 4:4 + width], want + bias[j0:j0 + width], rtol=1e-5, atol=1e-4)

    def check_rows_at(mk, xf, u, starts):
        """``mk`` (a plain-call variant) reads the tile's rows of A from ``xf + starts[r]``."""
        @njit
        def run(xf, u, r0, v, b, j0, c, cr0, cj0, bias, acc):
            mk(xf, u, r0, v, b, j0, c, cr0, cj0, bias, acc)

        want = xf[starts[:, None] + v[None, :].astype(np.int64)].astype(np.float64) @ b[:, j0:j0 + width]
        for acc in (True, False):
            c = c0.copy()
            run(xf, u, 2, v, b, j0, c, 1, 4, bias, acc)
            base = c0[1:1 + rows, 4:4 + width] if acc else bias[j0:j0 + width]
            np.testing.assert_allclose(c[1:1 + rows, 4:4 + width], base + want, rtol=1e-5, atol=1e-4)
            assert np.array_equal(c[outside], c0[outside])

    # the affine variant: rows of A at xf + u[r0] + r * lanes (u[2] + 11 * 16 + v[t] < 800)
    check_rows_at(tile_kernel(rows, width, lanes, affine=lanes), rng.standard_normal(800).astype(np.float32), u,
                  u[2] + lanes * np.arange(rows))
    # the strided variant: rows at xf + u[r0] + r * (u[r0 + 1] - u[r0]), here u[2] = 200 and 37 floats apart
    us = 200 + 37 * np.arange(rows + 3, dtype=np.int64) - 74
    check_rows_at(tile_kernel(rows, width, lanes, strided=True), rng.standard_normal(1000).astype(np.float32), us,
                  us[2:2 + rows])


@pytest.mark.parametrize("rows", [0, 1, 3, 4, 7, 100, 577])
def test_column_sums_match_numpy(rows):
    """``_colsum8`` (four rows in flight, the rest one by one) adds the column sums of eight columns from ``j0``
    into ``out``, rows of any stride (a wider array's columns), and leaves the other columns alone."""
    from tuinet.engine.conv.codegen import conv_jit
    from tuinet.engine.conv.microkernels import _colsum8

    @conv_jit()
    def sums(g, j0, out):
        _colsum8(g, j0, out)

    rng = np.random.default_rng(rows)
    wide = rng.standard_normal((rows, 40)).astype(np.float32)
    for g, j0 in ((np.ascontiguousarray(wide[:, :24]), 8), (wide[:, 8:], 16)):  # a copy, and a strided view
        out0 = rng.standard_normal(g.shape[1]).astype(np.float32)
        out = out0.copy()
        sums(g, j0, out)
        want = out0.astype(np.float64)
        want[j0:j0 + 8] += g[:, j0:j0 + 8].astype(np.float64).sum(axis=0)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)
        assert np.array_equal(np.delete(out, np.s_[j0:j0 + 8]), np.delete(out0, np.s_[j0:j0 + 8]))


@pytest.mark.parametrize("src_w,dst_w", [(8, 6), (6, 8), (16, 12), (12, 16), (24, 3), (5, 5)])
def test_narrow_row_copies_copy_the_narrower_width_and_nothing_else(src_w, dst_w):
    """``_copy_cols`` (masked eight-float loads and stores, :func:`_copy_lanes8`) copies the first min(widths)
    columns of each of dst's rows, and writes nothing else: the rest of each row, and the guard values around dst
    in memory, stay as they were (the NaN guards around src would show in dst if a lane past a row were stored)."""
    from tuinet.engine.conv.kernels import _copy_cols

    rng = np.random.default_rng(src_w * 31 + dst_w)
    rows = 7
    sbuf = np.full(rows * src_w + 16, np.nan, np.float32)
    dbuf = np.full(rows * dst_w + 16, -7.0, np.float32)
    src = sbuf[8:8 + rows * src_w].reshape(rows, src_w)
    src[...] = rng.standard_normal(src.shape)
    dst = dbuf[8:8 + rows * dst_w].reshape(rows, dst_w)
    _copy_cols(src, dst)
    w = min(src_w, dst_w)
    np.testing.assert_array_equal(dst[:, :w], src[:, :w])
    assert (dst[:, w:] == -7.0).all() and (dbuf[:8] == -7.0).all() and (dbuf[8 + rows * dst_w:] == -7.0).all()


def test_micro_kernel_column_groups_fit_the_registers():
    """Every tile shape the kernels use, with either vector width, runs in passes whose accumulators, vectors of B
    and one broadcast fit in the registers; with AVX-512's 32 registers every tile is one pass."""
    from tuinet.engine.conv import codegen
    from tuinet.engine.conv.microkernels import column_groups, row_vectors, vector_registers

    for lanes, table, rows48 in ((8, codegen._ROWS_256, codegen._ROWS48_256), (16, codegen._ROWS_512,
                                                                              codegen._ROWS48_512)):
        regs = vector_registers(lanes)
        for width, rows in list(table.items()) + [(48, rows48)]:
            nvec = len(row_vectors(width, lanes))
            groups = column_groups(rows, nvec, regs)
            assert [k for g0, g1 in groups for k in range(g0, g1)] == list(range(nvec))  # each vector once, in order
            assert all(rows * (g1 - g0) + (g1 - g0) + 1 <= regs for g0, g1 in groups), (lanes, width, groups)
            assert lanes == 8 or len(groups) == 1
            assert 8 % rows48 == 0 and 16 % rows48 == 0  # the transposed weight gradient's rows: Cout 8 or 16
    assert column_groups(6, 4, 16) == [(0, 2), (2, 4)] and column_groups(4, 6, 16) == [(0, 3), (3, 6)]


def test_conv_microkernel_is_vectorized(tmp_path):
    """The micro-kernels keep their tile in vector registers: packed FMAs only, no scalar fallback, and no
    accumulator kept on the stack in the loop over the taps.

    Numba compiles for the host, so the register width depends on the CPU (xmm/ymm on AVX2, ymm or zmm on
    AVX-512) and so does the tile the kernels use (R x W, R chosen for the width); the properties checked are
    that the packed FMAs of one reduction step cover the whole tile of each micro-kernel in use, and that no
    loop with an FMA (from its label to the jump back to it) moves a vector register to or from the stack (with
    16 ymm registers a one-pass 3 x 32 tile needed 17: LLVM kept one accumulator on the stack, a store and a load
    in every step; the tile now runs in column groups). Integer reloads are not counted: with AVX-512 the 12 x 16
    tile's row pointers outnumber the general registers and LLVM reloads four of them each step.
    """
    import subprocess
    import sys

    flags = open("/proc/cpuinfo").read()
    if " fma" not in flags:
        pytest.skip("needs an x86 CPU with FMA")
    code = (
        "import re, numpy as np\n"
        "from numba import njit\n"
        "from tuinet.engine.conv import kernels as k\n"
        "lanes = {'xmm': 4, 'ymm': 8, 'zmm': 16}\n"
        "for W, R, MK in ((32, k.R32, k.MK32), (24, k.R24, k.MK24), (16, k.R16, k.MK16), (8, k.R8, k.MK8)):\n"
        "    @njit(fastmath={'contract'})\n"
        "    def run(x, u, r0, v, b, j0, c, bias, acc):\n"
        "        MK(x, u, r0, v, b, j0, c, r0, j0, bias, acc)\n"
        "    x = np.ones(64, np.float32); u = np.zeros(R, np.int64); v = np.zeros(4, np.uint64)\n"
        "    b = np.ones((4, W), np.float32); c = np.zeros((R, W), np.float32)\n"
        "    run(x, u, 0, v, b, 0, c, np.zeros(W, np.float32), x.size > 0)\n"
        "    assert (c == 4.0).all(), c\n"
        "    asm = run.inspect_asm(run.signatures[0])\n"
        "    packed = re.findall(r'vfmadd\\w*ps\\s+[^\\n]*?([xyz]mm)', asm)\n"
        "    loops = [m.group(2) for m in re.finditer(r'\\n(\\.LBB\\w+):(.*?)\\n\\s*j\\w+\\s+\\1\\n', asm, re.S)]\n"
        "    spills = sum(1 for body in loops if 'vfmadd' in body for ln in body.split('\\n')\n"
        "                 if '(%rsp)' in ln and re.search(r'%[xyz]mm', ln))\n"
        "    assert any('vfmadd' in body for body in loops), asm\n"
        "    print(W, R, sum(lanes[r] for r in packed), len(re.findall(r'vfmadd\\w*ss', asm)), spills)\n"
        "from numba import types as T\n"  # the panel GEMM itself, where all four tiles share one function
        "f1, f2 = T.Array(T.float32, 1, 'C'), T.Array(T.float32, 2, 'C')\n"
        "sig = (f1, T.Array(T.int64, 1, 'C'), T.int64, T.Array(T.uint64, 1, 'C'), f2, f2, f1, T.boolean,\n"
        "       T.Array(T.int64, 2, 'C'))\n"
        "k._panel_gemm.compile(sig)\n"
        "asm = k._panel_gemm.inspect_asm(sig)\n"
        "loops = [m.group(2) for m in re.finditer(r'\\n(\\.LBB\\w+):(.*?)\\n\\s*j\\w+\\s+\\1\\n', asm, re.S)]\n"
        "spills = sum(1 for body in loops if 'vfmadd' in body for ln in body.split('\\n')\n"
        "             if '(%rsp)' in ln and re.search(r'%[xyz]mm', ln))\n"
        "print(0, 0, 0, 0, spills)\n"
    )
    env = dict(__import__("os").environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1])).stdout
    lines = out.split("\n")
    assert len([ln for ln in lines if ln.strip()]) == 5, out
    for line in lines:
        if line.strip():
            width, rows, lanes, scalar, spills = (int(v) for v in line.split())
            assert lanes >= rows * width and scalar == 0 and spills == 0, out


def test_conv_geometry_matches_torch_and_tensorflow_rules():
    assert conv_geometry(28, 5, 1, "valid") == (24, 0, 0)
    assert conv_geometry(28, 3, 1, "same") == (28, 1, 1)
    assert conv_geometry(28, 3, 2, "same") == (14, 0, 1)  # TensorFlow: extra pixel after
    assert conv_geometry(7, 3, 2, "same") == (4, 1, 1)
    assert conv_geometry(28, 5, 1, 2) == (28, 2, 2)
    assert conv_geometry(10, 3, 3, 1) == (4, 1, 1)
    with pytest.raises(ModelError):
        conv_geometry(3, 5, 1, "valid")


@pytest.mark.parametrize("bad", [dict(padding="full"), dict(padding=-1), dict(stride=0), dict(kernel_size=0),
                                 dict(filters=0)])
def test_conv2d_rejects_bad_options(bad):
    args = dict(filters=4, kernel_size=3, stride=1, padding="valid") | bad
    with pytest.raises(ModelError):
        Conv2D(**args)


def test_conv2d_rejects_flat_input():
    with pytest.raises(ModelError, match="height, width, channels"):
        Conv2D(4).build((784,), np.random.default_rng(0))


# --- pooling ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,k,s", [((6, 6, 3), 2, None), ((7, 5, 2), 2, None), ((7, 7, 3), 3, 2),
                                       ((5, 6, 4), (2, 3), (1, 2)), ((6, 7, 9), 2, 1), ((7, 8, 24), 2, (3, 2)),
                                       ((5, 7, 16), 2, None)])
def test_maxpool_gradients(shape, k, s):
    layer = MaxPool2D(k, s)
    # distinct values far apart so finite differences never cross a tie
    kk = layer.pool_size
    ss = layer.stride

    def ref(x, p):
        return ref_pool(x, kk, ss, np.max)

    check_layer(layer, shape, ref)


@pytest.mark.parametrize("shape,k,s", [((6, 6, 3), 2, None), ((7, 5, 2), 3, 2), ((5, 6, 4), (2, 3), (1, 2))])
def test_avgpool_gradients(shape, k, s):
    layer = AvgPool2D(k, s)
    kk, ss = layer.pool_size, layer.stride
    check_layer(layer, shape, lambda x, p: ref_pool(x, kk, ss, np.mean))


def test_maxpool_routes_gradient_to_the_winner_only():
    layer = MaxPool2D(2)
    layer.build((2, 2, 1), None)
    x = np.array([[[[1.0], [4.0]], [[3.0], [2.0]]]], np.float32)
    assert layer.forward(x, True).reshape(-1).tolist() == [4.0]
    dx = layer.backward(np.array([[[[5.0]]]], np.float32))
    assert dx.reshape(-1).tolist() == [0.0, 5.0, 0.0, 0.0]


FUSED_CASES = [
    # (input_shape, filters, kernel, stride, padding, pool, pool stride)
    ((28, 28, 1), 24, 5, 1, "valid", 2, None),   # the cnn preset's first pair (no input gradient needed)
    ((12, 12, 24), 32, 3, 1, "valid", 2, None),  # its second pair (100 output rows: not a multiple of the tiles)
    ((9, 8, 3), 12, 3, 2, "same", 3, 2),         # Cout padded to 16, the general pooling kernel, odd sizes
    ((7, 9, 2), 8, (2, 3), 1, 1, (2, 2), (1, 2)),  # overlapping 2x2 windows, integer padding
    ((8, 8, 1), 6, 3, 1, "same", 2, None),       # one channel: the weight gradient paired, the fused forward not
    ((11, 9, 3), 16, 3, 1, "valid", 2, None),    # 2x2 windows over an odd 9 x 7 output: a row and a column in none
]


@pytest.mark.parametrize("shape,filters,k,s,pad,pool,pool_stride", FUSED_CASES)
@pytest.mark.parametrize("need_dx", [True, False])
def test_conv_maxpool_fused_equals_the_two_layers(shape, filters, k, s, pad, pool, pool_stride, need_dx):
    """forward_fused/backward_fused give the same arrays, bit for bit, as Conv2D then MaxPool2D (both directions);
    the layers' own backward passes still work after a fused forward."""
    rng = np.random.default_rng(0)
    conv, mp = Conv2D(filters, k, s, pad), MaxPool2D(pool, pool_stride)
    mp.build(conv.build(shape, np.random.default_rng(1)), None)
    assert conv.can_fuse(mp) and not conv.can_fuse(AvgPool2D(pool))
    conv.params[1][...] = rng.standard_normal(filters).astype(np.float32)
    x = rng.standard_normal((5,) + shape).astype(np.float32)
    y = mp.forward(conv.forward(x, True), True)
    arg = mp.argmax.copy()
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = conv.backward(mp.backward(dy), need_dx)
    grads = [g.copy() for g in conv.grads]

    yf = conv.forward_fused(x, True, mp)
    np.testing.assert_array_equal(yf, y)
    np.testing.assert_array_equal(mp.argmax, arg)
    _assert_same_gradients(conv, grads, conv.backward_fused(dy, mp, need_dx=need_dx), dx, need_dx)
    conv.forward_fused(x, True, mp)
    _assert_same_gradients(conv, grads, conv.backward(mp.backward(dy), need_dx), dx, need_dx)


def _assert_same_gradients(conv, grads, got_dx, dx, need_dx):
    """The layer's parameter gradients equal ``grads`` and its input gradient ``dx``, bit for bit (None without
    ``need_dx``)."""
    for g, got in zip(grads, conv.grads):
        np.testing.assert_array_equal(got, g)
    if need_dx:
        np.testing.assert_array_equal(got_dx, dx)
    else:
        assert got_dx is None


RELU_CASES = [
    ((28, 28, 1), 6, 5, 1, "same"),    # LeNet's first convolution: one channel (paired GEMM rows), Cout padded to 8
    ((14, 14, 6), 16, 5, 1, "valid"),  # its second: the tiles written in place
    ((9, 8, 3), 12, 3, 2, "same"),     # strided, Cout padded to 16, odd sizes
    ((6, 6, 2), 8, 1, 1, "valid"),     # 1x1
]


@pytest.mark.parametrize("shape,filters,k,s,pad", RELU_CASES)
@pytest.mark.parametrize("need_dx", [True, False])
def test_conv_relu_fused_equals_the_two_layers(shape, filters, k, s, pad, need_dx):
    """A Conv2D and the ReLU after it in one pass give the same arrays, bit for bit, as the two layers (both
    directions), the ReLU's output kept for its own backward pass; a model runs them as one unit."""
    rng = np.random.default_rng(0)
    conv, relu = Conv2D(filters, k, s, pad), ReLU()
    relu.build(conv.build(shape, np.random.default_rng(1)), None)
    assert conv.can_fuse(relu) and not conv.can_fuse_relu(relu, ReLU())
    conv.params[1][...] = rng.standard_normal(filters).astype(np.float32)
    x = rng.standard_normal((5,) + shape).astype(np.float32)
    y = relu.forward(conv.forward(x, True), True)
    assert (y == 0).any() and (y > 0).any()
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = conv.backward(relu.backward(dy), need_dx)
    grads = [g.copy() for g in conv.grads]

    relu._cache = None
    yf = conv.forward_fused(x, True, relu)
    np.testing.assert_array_equal(yf, y)
    np.testing.assert_array_equal(relu.output, y)
    _assert_same_gradients(conv, grads, conv.backward_fused(dy, relu, need_dx=need_dx), dx, need_dx)
    # the layers' own passes after a fused forward
    _assert_same_gradients(conv, grads, conv.backward(relu.backward(dy), need_dx), dx, need_dx)


def test_models_run_a_conv_and_its_relu_as_one_unit_except_by_winograd():
    from tuinet.engine import build_model
    from tuinet.engine.conv.codegen import LANES

    m = build_model("conv5x5x6psame,relu,avgpool2,conv5x5x16,relu,avgpool2,flatten,dense10", (28, 28, 1), 10)
    assert m.fused_groups == {0: 2, 3: 2}
    w = build_model(f"conv3x3x{LANES}psame,relu,conv3x3x{LANES}psame,relu,gap", (12, 12, 3), 10)
    assert w.layers[0]._wino is None and w.layers[2]._wino is not None
    assert w.fused_groups == {0: 2}  # the Winograd one runs the ReLU's own pass


@pytest.mark.parametrize("channels", [6, 9, 16])
@pytest.mark.parametrize("stride", [(2, 2), (1, 1), (1, 2)])
def test_maxpool_2x2_path_matches_the_general_kernel_on_ties_and_nans(stride, channels):
    """The 2x2 kernel picks the same winner as the general one: the first maximum in row-major window order (eight
    channels at a time, masked for the last ones)."""
    from tuinet.engine.conv import kernels

    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, (3, 7, 6, channels)).astype(np.float32)  # many ties
    x[0, 0, 0, :3] = np.nan
    x[1, 1, 1, 3:6] = np.nan
    layer = MaxPool2D(2, stride)
    layer.build(x.shape[1:], None)
    out = layer.forward(x, True)
    arg = layer.argmax
    ref_out, ref_arg = np.empty_like(out), np.empty_like(arg)
    for n in range(x.shape[0]):
        kernels._maxpool_fwd_sample.py_func(x[n], ref_out[n], ref_arg[n], 2, 2, *stride)
    np.testing.assert_array_equal(arg, ref_arg)
    np.testing.assert_array_equal(out, ref_out)  # NaNs in the same places


@pytest.mark.parametrize("shape", [(24, 24, 24), (7, 9, 16), (6, 6, 8), (3, 5, 8), (28, 28, 6), (5, 7, 12)])
@pytest.mark.parametrize("relu", [False, True])
def test_maxpool_2x2_backward_writes_what_the_scatter_adds(shape, relu):
    """2x2 windows with stride 2 (8 channels at a time, masked for the rest): the backward pass writes each input
    gradient once, the winner's gradient or 0 (0 too in an odd last row or column, in no window), the numbers the
    general kernel's zeroing and scatter give; with ``relu`` (a fused ReLU after the pooling) the gradient is 0 where
    its output is."""
    from tuinet.engine.conv import kernels

    rng = np.random.default_rng(sum(shape))
    x = rng.integers(0, 4, (3,) + shape).astype(np.float32)  # ties
    layer = MaxPool2D(2)
    layer.build(shape, None)
    assert layer._two_by_two()
    y = layer.forward(x, True)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    out = np.maximum(y - 1, 0)  # a ReLU's output, 0 in places
    n, (h, w, c) = x.shape[0], shape
    got = np.full((n, h * w, c), np.nan, np.float32)
    for i in range(n):
        kernels._maxpool2x2_bwd_sample(dy[i].reshape(-1), out[i].reshape(-1), layer.argmax[i].reshape(-1), relu, w,
                                       got[i])
    g = np.where(out > 0, dy, 0).astype(np.float32) if relu else dy
    ref = np.full((n, h * w * c), np.nan, np.float32)
    for i in range(n):
        kernels._maxpool_bwd_sample.py_func(g[i].reshape(-1), layer.argmax[i].reshape(-1), ref[i])
    np.testing.assert_array_equal(got.reshape(n, -1), ref)
    if not relu:
        np.testing.assert_array_equal(layer.backward(dy).reshape(n, -1), ref)  # the layer's own pass, in parallel


@pytest.mark.parametrize("shape", [(28, 28, 6), (7, 9, 16), (5, 4, 1), (2, 3, 33)])
def test_avgpool_2x2_path_matches_the_general_kernel_bit_for_bit(shape):
    """2x2 windows with stride 2 run their own kernels (the sum in registers; each input gradient written once): the
    same numbers as the general kernels, an odd last row or column included (no window: gradient 0)."""
    from tuinet.engine.conv import kernels

    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((3,) + shape).astype(np.float32)
    layer = AvgPool2D(2)
    layer.build(shape, None)
    out = layer.forward(x, True)
    dy = rng.standard_normal(out.shape).astype(np.float32)
    dx = layer.backward(dy)
    ref_out, ref_dx = np.empty_like(out), np.full_like(x, np.nan)
    scale = np.float32(0.25)
    for n in range(x.shape[0]):
        kernels._avgpool_fwd_sample.py_func(x[n], ref_out[n], 2, 2, 2, 2, scale)
        kernels._avgpool_bwd_sample.py_func(dy[n], ref_dx[n], 2, 2, 2, 2, scale)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(dx, ref_dx)


@pytest.mark.parametrize("shape", [(5, 3, 4), (1, 1, 2)])
def test_global_avg_pool_gradients(shape):
    layer = GlobalAvgPool()
    check_layer(layer, shape, lambda x, p: x.mean(axis=(1, 2)))


# --- BatchNorm -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,batch", [((6,), 7), ((4, 5, 3), 2), ((3, 3, 5), 4)])
def test_batchnorm_train_gradients(shape, batch):
    layer = BatchNorm()
    check_layer(layer, shape, lambda x, p: ref_bn(x, p[0], p[1]), batch=batch, rtol=5e-3, atol=5e-4)


@pytest.mark.parametrize("shape,batch", [((7, 9, 5), 3), ((16,), 100)])
def test_batchnorm_many_rows_match_float64_reference(shape, batch):
    """More rows than one 32-row float32 block per thread, with a partial last block: forward and backward."""
    rng = np.random.default_rng(2)
    layer = BatchNorm()
    layer.build(shape, None)
    layer.params[0][:] = rng.uniform(0.5, 1.5, shape[-1])
    layer.params[1][:] = rng.standard_normal(shape[-1])
    x = (rng.standard_normal((batch,) + shape) * 2 + 3).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y = layer.forward(x, training=True)
    dx = layer.backward(dy)
    g, b = layer.params[0].astype(np.float64), layer.params[1].astype(np.float64)
    x64, dy64 = x.reshape(-1, shape[-1]).astype(np.float64), dy.reshape(-1, shape[-1]).astype(np.float64)
    mu, var = x64.mean(0), x64.var(0)
    xhat = (x64 - mu) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(y.reshape(x64.shape), xhat * g + b, rtol=1e-4, atol=1e-5)
    dbeta, dgamma = dy64.sum(0), (dy64 * xhat).sum(0)
    np.testing.assert_allclose(layer.grads[1], dbeta, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.grads[0], dgamma, rtol=1e-4, atol=1e-4)
    ref_dx = g / np.sqrt(var + 1e-5) * (dy64 - dbeta / len(x64) - xhat * dgamma / len(x64))
    np.testing.assert_allclose(dx.reshape(x64.shape), ref_dx, rtol=1e-3, atol=1e-4)


def test_batchnorm_running_stats_follow_torch_and_drive_evaluation():
    rng = np.random.default_rng(0)
    layer = BatchNorm(momentum=0.1)
    layer.build((2, 2, 3), None)
    x = (rng.standard_normal((4, 2, 2, 3)) * 3 + 5).astype(np.float32)
    layer.forward(x, training=True)
    flat = x.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.1 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(layer.buffers["running_var"], 0.9 + 0.1 * flat.var(0, ddof=1), rtol=1e-5)
    y = layer.forward(x, training=False)
    rm, rv = layer.buffers["running_mean"], layer.buffers["running_var"]
    np.testing.assert_allclose(y, (x - rm) / np.sqrt(rv + 1e-5), rtol=1e-4, atol=1e-5)


def test_batchnorm_statistics_survive_a_large_offset():
    """One pass over x: the sums are shifted by a value of the batch, so a mean far from 0 costs no precision."""
    rng = np.random.default_rng(1)
    x = (1000.0 + 0.01 * rng.standard_normal((3000, 4))).astype(np.float32)
    layer = BatchNorm()
    layer.build((4,), None)
    layer.forward(x, training=True)
    flat = x.astype(np.float64)
    np.testing.assert_allclose(layer._mean, flat.mean(0), rtol=1e-7)
    np.testing.assert_allclose(layer._var, flat.var(0), rtol=1e-5)  # unshifted float64 sums: 7e-5 off


def test_batchnorm_config_and_errors():
    layer = BatchNorm(momentum=0.05, eps=1e-3)
    assert BatchNorm.from_config(layer.config()).config() == layer.config()
    with pytest.raises(ModelError):
        BatchNorm(momentum=2)
    layer.build((3,), None)
    with pytest.raises(ModelError, match="batch of 1"):
        layer.forward(np.ones((1, 3), np.float32), training=True)


# --- ResidualBlock ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,filters,stride", [((5, 5, 4), 4, 1), ((6, 6, 3), 4, 1), ((7, 7, 2), 3, 2),
                                                  ((6, 6, 2), 2, 2), ((5, 5, 16), 8, 2)])
def test_residual_block_gradients(shape, filters, stride):
    """Against the float64 reference and finite differences; the last block's conv1 adds its projection's input
    gradient (16 input channels: see :meth:`Conv2D.takes_projection`)."""
    block = ResidualBlock(filters, stride)
    check_layer(block, shape, lambda x, p: ref_block(block, x, p), batch=3, n_checks=12, rtol=5e-3, atol=5e-4,
                positive_gamma=True)
    assert block.has_projection == (stride != 1 or shape[2] != filters)
    s = block.sublayers
    assert block.has_projection and s["conv1"].takes_projection(s["proj"]) or shape[2] != 16


def test_residual_block_exposes_sublayers_and_round_trips():
    block = ResidualBlock(8, stride=2)
    block.build((6, 6, 4), np.random.default_rng(0))
    assert set(block.sublayers) == {"conv1", "bn1", "relu1", "conv2", "bn2", "proj", "proj_bn"}
    assert len(block.params) == len(block.grads) == len(block.param_names)
    assert block.params[0] is block.sublayers["conv1"].params[0]
    assert set(block.penalized) == {"conv1.W", "conv2.W", "proj.W"}
    assert block.buffers["bn1.running_mean"] is block.sublayers["bn1"].buffers["running_mean"]
    again = ResidualBlock.from_config(block.config())
    assert again.config() == block.config()
    again.build((6, 6, 4), np.random.default_rng(0))
    assert again.param_names == block.param_names
    identity = ResidualBlock(4)
    identity.build((6, 6, 4), np.random.default_rng(0))
    assert not identity.has_projection


@pytest.mark.parametrize("shape,filters,stride", [((9, 9, 4), 4, 1), ((8, 8, 3), 5, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_residual_block_fused_bn_relu_matches_the_layers_one_by_one(shape, filters, stride, training):
    """BN+ReLU and BN+skip+ReLU run fused in the block: same outputs and gradients as the sub-layers in turn."""
    rng = np.random.default_rng(3)
    block = ResidualBlock(filters, stride)
    block.build(shape, rng)
    s = block.sublayers
    for name in ("bn1", "bn2", "proj_bn"):
        if name in s:
            s[name].params[0][:] = rng.uniform(0.5, 1.5, filters)
            s[name].params[1][:] = rng.standard_normal(filters)
            s[name].buffers["running_mean"][:] = rng.standard_normal(filters)
            s[name].buffers["running_var"][:] = rng.uniform(0.5, 2.0, filters)
    x = rng.standard_normal((6,) + shape).astype(np.float32)
    y = block.forward(x, training)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = block.backward(dy) if training else None
    grads = [g.copy() for g in block.grads]
    if training:  # the same again, bit for bit
        np.testing.assert_array_equal(block.forward(x, training), y)
        np.testing.assert_array_equal(block.backward(dy), dx)
        for again, first in zip(block.grads, grads):
            np.testing.assert_array_equal(again, first)
    h = x
    for key in ("conv1", "bn1", "relu1", "conv2", "bn2"):
        h = s[key].forward(h, training)
    skip = s["proj_bn"].forward(s["proj"].forward(x, training), training) if block.has_projection else x
    ref = np.maximum(h + skip, np.float32(0))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    if not training:
        return
    d = np.where(ref > 0, dy, np.float32(0))
    g = d
    for key in ("bn2", "conv2", "relu1", "bn1", "conv1"):
        g = s[key].backward(g, True)
    if block.has_projection:
        g = g + s["proj"].backward(s["proj_bn"].backward(d, True), True)
    else:
        g = g + d
    np.testing.assert_allclose(dx, g, rtol=1e-4, atol=1e-4)
    for fused, one_by_one in zip(grads, block.grads):
        np.testing.assert_allclose(fused, one_by_one, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("with_bn", [False, True])
@pytest.mark.parametrize("shape,k,padding,filters", [((8, 8, 16), 3, "same", 24), ((7, 7, 16), 3, "same", 16),
                                                   ((9, 9, 32), 1, "valid", 8)])
def test_a_convolution_makes_a_projections_backward_pass_in_its_own(shape, k, padding, filters, with_bn):
    """A strided convolution's backward pass makes the backward pass of a 1x1 projection of the same input (same
    stride and output grid; with a BatchNorm after it, ``with_bn``) as it reads each sample: the projection's input
    gradient added into its own, in its padded buffer (3x3 "same": the projection's pixels sit one row and column
    in where the padding is odd) or straight in dx (1x1 "valid"), the projection's (and the BatchNorm's) weight
    gradients set. The same numbers as the layers' own backward passes, bit for bit (the same additions in the same
    order)."""
    rng = np.random.default_rng(12)
    conv, proj = Conv2D(filters, k, 2, padding, use_bias=False), Conv2D(32, 1, 2, "valid", use_bias=False)
    conv.build(shape, rng)
    proj.build(shape, rng)
    bn = BatchNorm()
    bn.build(proj.output_shape, None)
    bn.params[0][:] = rng.uniform(0.5, 1.5, 32)
    conv.kernel_ext = proj.kernel_ext = True
    assert conv.takes_projection(proj)
    x = rng.standard_normal((5,) + shape).astype(np.float32)
    dy = rng.standard_normal((5,) + conv.output_shape).astype(np.float32)
    dp = rng.standard_normal((5,) + proj.output_shape).astype(np.float32)
    conv.forward(x, True)
    hp = proj.forward(x, True)
    if with_bn:
        bn.forward_act(hp, True)
    alone = conv.backward(dy, True) + proj.backward(bn.backward(dp, True) if with_bn else dp, True)
    layers = [conv, proj] + ([bn] if with_bn else [])
    grads = [g.copy() for layer in layers for g in layer.grads]
    for layer in layers:
        for g in layer.grads:
            g[...] = np.nan
    fused = conv.backward(dy, True, proj=(proj, dp, bn) if with_bn else (proj, dp))
    np.testing.assert_array_equal(fused, alone)
    for a, b in zip([g for layer in layers for g in layer.grads], grads):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="cannot add the input gradient"):
        conv.backward(dy, False, proj=(proj, dp))
    if not with_bn:
        return
    # dp as a ReLU's output gradient, masked as the kernel reads it, the BatchNorm's sums gathered before
    mask = (rng.random(dp.shape) > 0.4).astype(np.uint8)
    masked = np.where(mask != 0, dp, np.float32(0))
    alone = conv.backward(dy, True) + proj.backward(bn.backward(masked, True), True)
    grads = [g.copy() for layer in layers for g in layer.grads]
    bn.backward_terms(masked)  # (its first pass: the sums a skip's BatchNorm gathers for it)
    sums = tuple(np.copy(a) for a in bn.sums_target()[-2:])
    np.testing.assert_array_equal(conv.backward(dy, True, proj=(proj, dp, bn, mask, sums)), alone)
    for a, b in zip([g for layer in layers for g in layer.grads], grads):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="masked projection gradient"):
        conv.backward(dy, True, proj=(proj, dp, bn, mask, None))


@pytest.mark.parametrize("shape,k,padding,filters", [((8, 8, 16), 3, "same", 24), ((7, 7, 16), 3, "same", 16),
                                                   ((9, 9, 32), 1, "valid", 8)])
def test_a_convolution_computes_a_projection_in_its_forward_pass(shape, k, padding, filters):
    """The projection's output and its output statistics computed in the convolution's pass from the same (padded)
    input: the projection's own forward pass's, bit for bit; training only, and not with an input transform."""
    rng = np.random.default_rng(13)
    conv, proj = Conv2D(filters, k, 2, padding, use_bias=False), Conv2D(32, 1, 2, "valid", use_bias=False)
    conv.build(shape, rng)
    proj.build(shape, rng)
    conv.kernel_ext = proj.kernel_ext = True
    x = rng.standard_normal((5,) + shape).astype(np.float32)
    y_alone, hp_alone = conv.forward(x, True, stats=True), proj.forward(x, True, stats=True)
    stats = [np.copy(getattr(proj.stats, f)) for f in ("sums", "sqs", "shifts", "counts")] + [proj.stats.fold]
    proj.stats = proj._x = None
    y, hp = conv.forward(x, True, stats=True, proj=proj)
    np.testing.assert_array_equal(y, y_alone)
    np.testing.assert_array_equal(hp, hp_alone)
    assert proj._x is x and proj.stats is not None and proj.stats.fold == stats[-1]
    for name, want in zip(("sums", "sqs", "shifts", "counts"), stats):
        np.testing.assert_array_equal(getattr(proj.stats, name), want, err_msg=name)
    _, hp = conv.forward(x, True, proj=proj)  # without statistics
    np.testing.assert_array_equal(hp, hp_alone)
    assert proj.stats is None
    for kwargs in ({"training": False}, {"training": True, "pre": (np.ones(shape[2]), np.zeros(shape[2]))}):
        with pytest.raises(ValueError, match="cannot compute"):
            conv.forward(x, proj=proj, **kwargs)


@pytest.mark.parametrize("shape,k,stride,need_dx", [((8, 8, 1), 3, 1, False), ((9, 9, 8), 3, 2, True),
                                                  ((6, 6, 16), 1, 1, True)])
def test_a_convolution_makes_the_next_batchnorms_input_gradient(shape, k, stride, need_dx):
    """``bn_relu``: the convolution's backward pass makes the input gradient of the BatchNorm + ReLU after it per
    sample as it uses it (the paired GEMM of one input channel, a strided and a 1x1 convolution): the gradients of
    the two layers' own backward passes, bit for bit."""
    rng = np.random.default_rng(19)
    conv = Conv2D(16, k, stride, "same")
    conv.build(shape, rng)
    conv.kernel_ext = True
    bn = BatchNorm()
    bn.build(conv.output_shape, None)
    bn.params[0][:] = rng.uniform(0.5, 1.5, 16)
    bn.params[1][:] = rng.uniform(-0.5, 0.5, 16)
    x = rng.standard_normal((5,) + shape).astype(np.float32)
    y = bn.forward_act(conv.forward(x, True), True, relu=True)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    assert conv.takes_batchnorm(bn)
    dx = conv.backward(bn.backward_act(dy, y, True)[0], need_dx)
    grads = [g.copy() for g in conv.grads + bn.grads]
    for g in conv.grads + bn.grads:
        g[...] = np.nan
    dx2 = conv.backward(dy, need_dx, bn_relu=bn)
    if need_dx:
        np.testing.assert_array_equal(dx2, dx)
    else:
        assert dx2 is None and dx is None
    for a, b in zip(conv.grads + bn.grads, grads):
        np.testing.assert_array_equal(a, b)
    other = BatchNorm()
    other.build(conv.output_shape, None)  # never ran forward: nothing to make its gradient from
    assert not conv.takes_batchnorm(other)
    with pytest.raises(ValueError, match="cannot make the input gradient"):
        conv.backward(dy, need_dx, bn_relu=other)


def test_which_projections_a_convolution_takes():
    """Only a 1x1 unpadded convolution without bias of the same input with the same stride and output grid, beside a
    strided convolution whose input gradient is a scatter GEMM (kernel rows of whole panels: 16 input channels
    here)."""
    def built(layer, shape=(8, 8, 16)):
        layer.build(shape, np.random.default_rng(0))
        return layer

    def proj(*args, shape=(8, 8, 16), bias=False):
        return built(Conv2D(*args, use_bias=bias), shape)

    conv = built(Conv2D(16, 3, 2, "same"))
    assert conv.takes_projection(proj(32, 1, 2, "valid"))
    assert not conv.takes_projection(proj(32, 1, 2, "valid", bias=True))
    assert not conv.takes_projection(proj(32, 1, 1, "valid"))  # another stride and grid
    assert not conv.takes_projection(proj(32, 3, 2, "same"))  # not 1x1
    assert not conv.takes_projection(proj(32, 1, 2, 1))  # padded
    assert not conv.takes_projection(proj(32, 1, 2, "valid", shape=(8, 8, 8)))  # another input
    assert not built(Conv2D(8, 3, 2, "same"), (8, 8, 8)).takes_projection(proj(8, 1, 2, "valid", shape=(8, 8, 8)))
    assert not built(Conv2D(16, 3, 1, "same")).takes_projection(proj(16, 1, 1, "valid"))  # not strided
    conv.forward(np.ones((2, 8, 8, 16), np.float32), True)
    with pytest.raises(ValueError, match="cannot add the input gradient"):
        conv.backward(np.ones((2, 4, 4, 16), np.float32), True, proj=(proj(8, 1, 1, "valid"), None))


def test_identity_block_skip_gradient_is_masked_by_conv1(monkeypatch):
    """An identity block whose conv1 runs by Winograd: bn2 writes no masked skip gradient, conv1 masks dy as it adds
    it; the block's gradients are those of the path where bn2 writes it and conv1 adds it, bit for bit."""
    block = ResidualBlock(16, 1)
    block.build((8, 8, 16), np.random.default_rng(16))
    s = block.sublayers
    rng = np.random.default_rng(17)
    x, dy = (rng.standard_normal((4, 8, 8, 16)).astype(np.float32) for _ in range(2))
    seen = []
    backward_act = BatchNorm.backward_act

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("mask_only", False))
        return backward_act(self, *args, **kwargs)

    monkeypatch.setattr(BatchNorm, "backward_act", spy)
    block.forward(x, True)
    dx = block.backward(dy, True)
    grads = [g.copy() for g in block.grads]
    assert seen[0] is True
    monkeypatch.setattr(Conv2D, "takes_masked_add", lambda self: False)
    seen.clear()
    block.forward(x, True)
    np.testing.assert_array_equal(block.backward(dy, True), dx)
    assert seen[0] is False
    for name, a, b in zip(block.param_names, block.grads, grads):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert s["conv1"]._wino is not None


@pytest.mark.parametrize("shape,filters", [((8, 8, 16), 16), ((7, 7, 16), 32)])
def test_residual_block_projection_backward_is_made_by_conv1(monkeypatch, shape, filters):
    """A block with a projection whose conv1 takes it: conv1's backward pass makes the projection's and proj_bn's
    (neither runs its own); the block's gradients are those of the path where each layer runs its own backward pass
    and conv1 adds the projection's input gradient, bit for bit."""
    block = ResidualBlock(filters, 2)
    block.build(shape, np.random.default_rng(5))
    s = block.sublayers
    assert s["conv1"].takes_projection(s["proj"])
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4,) + shape).astype(np.float32)
    dy = rng.standard_normal((4,) + block.output_shape).astype(np.float32)
    calls = []
    backward = Conv2D.backward

    def spy(self, d, need_dx=True, dx_add=None, bn=None, proj=None, **kwargs):
        calls.append((self.name, need_dx, proj is not None, dx_add is not None))
        return backward(self, d, need_dx, dx_add, bn, proj, **kwargs)

    monkeypatch.setattr(Conv2D, "backward", spy)
    bn_calls = []
    backward_act = BatchNorm.backward_act

    def bn_spy(self, *args, **kwargs):
        bn_calls.append((self.name, kwargs.get("mask_only", False), kwargs.get("skip_sums") is not None))
        return backward_act(self, *args, **kwargs)

    monkeypatch.setattr(BatchNorm, "backward_act", bn_spy)
    forward = Conv2D.forward
    monkeypatch.setattr(Conv2D, "forward", lambda self, *a, **k: calls.append((self.name, "forward", k.get("proj")))
                        or forward(self, *a, **k))
    before = [b.copy() for b in block.buffers.values()]
    y = block.forward(x, True)
    assert [c[0] for c in calls] == ["conv1", "conv2"] and calls[0][2] is s["proj"]
    running = [b.copy() for b in block.buffers.values()]
    calls.clear()
    dx = block.backward(dy, True)
    assert calls == [("conv2", True, False, False), ("conv1", True, True, False)]
    assert bn_calls[0] == ("bn2", True, True)  # no masked skip gradient written; proj_bn's sums gathered
    grads = [g.copy() for g in block.grads]
    monkeypatch.setattr(Conv2D, "takes_projection", lambda self, proj: False)
    for b, r in zip(block.buffers.values(), before):  # the same forward pass from the same running statistics
        b[...] = r
    np.testing.assert_array_equal(block.forward(x, True), y)
    for b, r in zip(block.buffers.values(), running):
        np.testing.assert_array_equal(b, r)
    calls.clear()
    np.testing.assert_array_equal(block.backward(dy, True), dx)
    assert ("proj", True, False, False) in calls and ("conv1", True, False, True) in calls
    for name, a, b in zip(block.param_names, block.grads, grads):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("shape,filters,stride", [((8, 8, 16), 32, 2), ((8, 8, 12), 12, 1), ((8, 8, 12), 16, 1)])
@pytest.mark.parametrize("need_dx", [True, False])
def test_residual_block_direct_conv1_makes_bn1_input_gradient(monkeypatch, shape, filters, stride, need_dx):
    """A block whose conv1 is a direct convolution (strided with a projection, or not a Winograd shape): conv1's
    backward pass makes bn1 + relu1's input gradient from the sums conv2 gathered (bn1 runs no backward pass of its
    own, so that gradient is never written); the block's gradients are those of bn1's own pass, bit for bit."""
    block = ResidualBlock(filters, stride)
    block.build(shape, np.random.default_rng(7))
    s = block.sublayers
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4,) + shape).astype(np.float32)
    dy = rng.standard_normal((4,) + block.output_shape).astype(np.float32)
    seen = []
    backward_act = BatchNorm.backward_act

    def spy(self, *args, **kwargs):
        seen.append(self.name)
        return backward_act(self, *args, **kwargs)

    monkeypatch.setattr(BatchNorm, "backward_act", spy)
    before = [b.copy() for b in block.buffers.values()]
    y = block.forward(x, True)
    assert s["conv1"].takes_batchnorm(s["bn1"]) and s["conv1"]._wino is None
    dx = block.backward(dy, need_dx)
    assert "bn1" not in seen
    grads = [g.copy() for g in block.grads]
    monkeypatch.setattr(Conv2D, "takes_batchnorm", lambda self, bn: False)
    for b, r in zip(block.buffers.values(), before):
        b[...] = r
    np.testing.assert_array_equal(block.forward(x, True), y)
    seen.clear()
    other = block.backward(dy, need_dx)
    assert "bn1" in seen
    if need_dx:
        np.testing.assert_array_equal(other, dx)
    else:
        assert dx is None and other is None
    for name, a, b in zip(block.param_names, block.grads, grads):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("with_skip", [True, False])
def test_batchnorm_fused_relu_backward_masks_and_keeps_the_masked_gradient(need_dx, with_skip):
    """The ReLU's mask in the backward pass: the one the forward pass kept (with a skip input), or, after a forward
    pass that kept none, the one made from the output given."""
    rng = np.random.default_rng(4)
    layer = BatchNorm()
    layer.build((5, 5, 6), None)
    x = rng.standard_normal((4, 5, 5, 6)).astype(np.float32)
    skip = rng.standard_normal(x.shape).astype(np.float32) if with_skip else None
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y = layer.forward_act(x, True, relu=True, skip=skip)
    assert (layer._msk is not None) == with_skip
    masked = np.where(y > 0, dy, np.float32(0))
    dx, kept = layer.backward_act(dy, y, need_dx, keep_masked=True)
    np.testing.assert_array_equal(kept, masked)
    grads = [g.copy() for g in layer.grads]
    ref_dx = layer.backward(masked, True)
    for fused, plain in zip(grads, layer.grads):
        np.testing.assert_allclose(fused, plain, rtol=1e-6, atol=1e-6)
    if need_dx:
        np.testing.assert_allclose(dx, ref_dx, rtol=1e-6, atol=1e-6)
    else:
        assert dx is None


def test_batchnorm_backward_can_leave_the_skip_gradient_unwritten():
    """``mask_only``: the input gradient and parameter gradients of the pass that also writes the masked gradient,
    bit for bit, with the masked gradient not written (its user masks dy with ``skip_mask``); it needs the mask of
    a forward pass with a skip input and the input gradient."""
    rng = np.random.default_rng(14)
    layer = BatchNorm()
    layer.build((5, 5, 16), None)
    x, skip, dy = (rng.standard_normal((4, 5, 5, 16)).astype(np.float32) for _ in range(3))
    y = layer.forward_act(x, True, relu=True, skip=skip)
    dx, kept = layer.backward_act(dy, y, True, keep_masked=True)
    grads = [g.copy() for g in layer.grads]
    dx2, none = layer.backward_act(dy, y, True, keep_masked=True, mask_only=True)
    assert none is None
    np.testing.assert_array_equal(dx2, dx)
    for a, b in zip(layer.grads, grads):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.where(layer.skip_mask().reshape(dy.shape) != 0, dy, np.float32(0)), kept)
    with pytest.raises(ValueError, match="mask_only"):
        layer.backward_act(dy, y, False, keep_masked=True, mask_only=True)
    layer.forward_act(x, True, relu=True)  # no skip input: no mask kept
    assert layer.skip_mask() is None
    with pytest.raises(ValueError, match="mask_only"):
        layer.backward_act(dy, y, True, keep_masked=True, mask_only=True)


def test_batchnorm_backward_gathers_the_skip_batchnorms_sums():
    """``skip_sums``: the skip input's BatchNorm's first-pass sums over the masked gradient, gathered in the dx pass
    of the BatchNorm after it: that BatchNorm's own pass's, bit for bit (its gradients and terms alike)."""
    rng = np.random.default_rng(18)
    shape = (7, 7, 32)
    bn, bnp = BatchNorm(), BatchNorm()
    bn.build(shape, None)
    bnp.build(shape, None)
    h, hp, dy = (rng.standard_normal((5,) + shape).astype(np.float32) for _ in range(3))
    bnp.forward_act(hp, True)
    y = bn.forward_act(h, True, relu=True, skip=hp, skip_bn=bnp)
    dx, d = bn.backward_act(dy, y, True, keep_masked=True)
    own = [np.copy(t) for t in bnp.backward_terms(d)[2:]] + [g.copy() for g in bnp.grads]
    target = bnp.sums_target()
    dx2, none = bn.backward_act(dy, y, True, keep_masked=True, mask_only=True, skip_sums=target)
    assert none is None
    np.testing.assert_array_equal(dx2, dx)
    for g in bnp.grads:
        g[...] = np.nan
    gathered = [np.copy(t) for t in bnp.backward_terms(dy, sums=target[-2:])[2:]] + [g.copy() for g in bnp.grads]
    for a, b in zip(gathered, own):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="skip_sums"):
        bn.backward_act(dy, y, True, keep_masked=True, skip_sums=target)


def test_winograd_input_gradient_masks_the_gradient_it_adds():
    """A Winograd convolution's backward pass with ``dx_add_mask``: the input gradient with the masked ``dx_add``
    added, bit for bit; a direct convolution does not take the mask."""
    rng = np.random.default_rng(15)
    conv = Conv2D(16, 3, 1, "same", use_bias=False)
    conv.build((8, 8, 16), rng)
    assert conv.takes_masked_add()
    x, add = (rng.standard_normal((3, 8, 8, 16)).astype(np.float32) for _ in range(2))
    dy = rng.standard_normal((3, 8, 8, 16)).astype(np.float32)
    mask = (rng.random((3, 8, 8, 16)) > 0.5).astype(np.uint8)
    conv.forward(x, True)
    want = conv.backward(dy, True, dx_add=np.where(mask != 0, add, np.float32(0)))
    np.testing.assert_array_equal(conv.backward(dy, True, dx_add=add, dx_add_mask=mask.reshape(-1, 64)), want)
    with pytest.raises(ValueError, match="cannot mask"):
        conv.backward(dy, True, dx_add_mask=mask)
    direct = Conv2D(16, 3, 2, "same")
    direct.build((8, 8, 16), rng)
    assert not direct.takes_masked_add()


@pytest.mark.parametrize("shape,batch", [((5, 5, 6), 4), ((7, 7, 16), 3)])
def test_batchnorm_normalizes_its_skip_input_with_the_skip_batchnorm(shape, batch):
    """A projection's BatchNorm that stores nothing, applied by the next BatchNorm as it adds the skip input: the
    outputs, mask and gradients of the two layers with the projection's output stored and added."""
    rng = np.random.default_rng(11)
    h = rng.standard_normal((batch,) + shape).astype(np.float32)
    hp = (rng.standard_normal((batch,) + shape) * 3 + 1).astype(np.float32)
    dy = rng.standard_normal(h.shape).astype(np.float32)
    pairs = []
    for _ in range(2):
        bn, bnp = BatchNorm(), BatchNorm()
        bn.build(shape, None)
        bnp.build(shape, None)
        bn.params[1][:] = rng.uniform(-0.3, 0.3, shape[-1]) if not pairs else pairs[0][0].params[1]
        pairs.append((bn, bnp))
    (bn_a, bnp_a), (bn_b, bnp_b) = pairs
    skip = bnp_a.forward_act(hp, True)
    y_a = bn_a.forward_act(h, True, relu=True, skip=skip)
    bnp_b.forward_act(hp, True)
    y_b = bn_b.forward_act(h, True, relu=True, skip=hp, skip_bn=bnp_b)
    np.testing.assert_allclose(y_b, y_a, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(bn_b._msk.reshape(h.shape), (y_b > 0).astype(np.uint8))
    for key in bn_a.buffers:
        np.testing.assert_array_equal(bn_b.buffers[key], bn_a.buffers[key])
    dx_a, d_a = bn_a.backward_act(dy, y_a, True, keep_masked=True)
    dx_b, d_b = bn_b.backward_act(dy, y_b, True, keep_masked=True)
    np.testing.assert_allclose(dx_b, dx_a, rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelError, match="training only"):
        bn_b.forward_act(h, False, relu=True, skip=hp, skip_bn=bnp_b)


@pytest.mark.parametrize("shape,batch", [((5, 5, 6), 4), ((6, 6, 16), 8), ((40,), 33)])
def test_batchnorm_relu_backward_recomputes_exactly_the_forward_mask(shape, batch):
    """BatchNorm + ReLU's backward finds the ReLU's mask from x (not from the output): the same elements, exactly.

    With dy = 1 everywhere, dbeta is the number of positive outputs per channel (an exact float32 integer), and dx
    equals the backward pass of plain BatchNorm given the masked gradient. Values around 0 are many: beta is set
    so that about half of each channel is cut, a few exactly at the threshold.
    """
    rng = np.random.default_rng(9)
    layer = BatchNorm()
    layer.build(shape, None)
    layer.params[1][:] = rng.uniform(-0.2, 0.2, shape[-1])
    x = rng.standard_normal((batch,) + shape).astype(np.float32)
    x.reshape(-1, shape[-1])[:3] = x.reshape(-1, shape[-1])[3:6]  # repeated values: ties at the same output
    y = layer.forward_act(x, True, relu=True)
    ones = np.ones_like(x)
    dx, _ = layer.backward_act(ones, y, True)
    np.testing.assert_array_equal(layer.grads[1], (y > 0).reshape(-1, shape[-1]).sum(0).astype(np.float32))
    masked = np.where(y > 0, ones, np.float32(0))
    np.testing.assert_allclose(dx, layer.backward(masked, True), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape,filters,offset", [((6, 6, 8), 16, 0.0), ((7, 7, 16), 32, 1000.0), ((5, 5, 8), 64, 0.0)])
def test_conv_output_statistics_give_batchnorm_its_batch_statistics(shape, filters, offset, threads):
    """A convolution's per-chunk output sums (each chunk its own shift) give the BatchNorm after it the statistics
    and outputs it computes itself, also far from zero (outputs near 1000 with unit spread) and with two chunks."""
    import numba

    from tuinet.engine.threads import configure_threads

    before = numba.get_num_threads()
    configure_threads(None, "numba")
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        rng = np.random.default_rng(5)
        conv = Conv2D(filters, 3, 1, "same")
        conv.build(shape, rng)
        conv.params[1][:] = offset + rng.standard_normal(filters).astype(np.float32)
        x = rng.standard_normal((5,) + shape).astype(np.float32)
        h = conv.forward(x, True, stats=True)
        assert conv.stats is not None and conv.stats.sums.shape[0] == min(threads, numba.get_num_threads(), 5)
        bn_a, bn_b = BatchNorm(), BatchNorm()
        for bn in (bn_a, bn_b):
            bn.build(h.shape[1:], None)
            bn.params[0][:] = np.linspace(0.5, 1.5, filters)
            bn.params[1][:] = np.linspace(-0.3, 0.3, filters)
        y_a = bn_a.forward_act(h, True, relu=True, stats=conv.stats)
        y_b = bn_b.forward_act(h, True, relu=True)
        h64 = h.reshape(-1, filters).astype(np.float64)
        np.testing.assert_allclose(bn_a._mean, h64.mean(0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(bn_a._var, h64.var(0), rtol=1e-4, atol=1e-5)
        # near 1000 a float32 mean is exact to 6e-5 only (one ulp), and the normalized outputs inherit that
        np.testing.assert_allclose(y_a, y_b, rtol=1e-5, atol=1e-5 + 2 * float(np.spacing(np.float32(offset))))
        for key in ("running_mean", "running_var"):
            np.testing.assert_allclose(bn_a.buffers[key], bn_b.buffers[key], rtol=1e-5, atol=1e-5)
    finally:
        numba.set_num_threads(before)


def test_conv_input_transform_is_the_batchnorm_relu_it_replaces():
    """Conv2D with ``pre`` (relu(x * scale + shift) applied while padding) gives the outputs and gradients of the
    convolution of that transformed input; bn1's backward pass without a stored output masks the same way."""
    rng = np.random.default_rng(8)
    for shape, k, s, pad in (((7, 7, 16), 3, 1, "same"), ((8, 8, 8), 3, 2, "same"), ((6, 6, 8), 1, 1, "valid")):
        x = rng.standard_normal((4,) + shape).astype(np.float32)
        bn = BatchNorm()
        bn.build(shape, None)
        bn.params[1][:] = rng.uniform(-0.3, 0.3, shape[-1])
        a = bn.forward_act(x, True, relu=True)  # the output the transform replaces
        scale, shift = bn.channel_transform()
        a_ref = np.maximum(x.astype(np.float64) * scale + shift, 0)
        np.testing.assert_allclose(a, a_ref, rtol=1e-5, atol=1e-6)
        plain, fused = Conv2D(8, k, s, pad), Conv2D(8, k, s, pad)
        plain.build(shape, np.random.default_rng(1))
        fused.build(shape, np.random.default_rng(1))
        y_plain = plain.forward(a, True)
        y_fused = fused.forward(x, True, pre=(scale, shift))
        np.testing.assert_allclose(y_fused, y_plain, rtol=1e-5, atol=1e-5)
        dy = rng.standard_normal(y_plain.shape).astype(np.float32)
        dx_plain = plain.backward(dy)
        dx_fused = fused.backward(dy)
        np.testing.assert_allclose(dx_fused, dx_plain, rtol=1e-5, atol=1e-5)
        for gp, gf in zip(plain.grads, fused.grads):
            np.testing.assert_allclose(gf, gp, rtol=1e-4, atol=1e-4)
        g_none, _ = bn.backward_act(dx_plain, None, True, relu=True)  # no output stored: the mask from x
        g_ref = bn.backward(np.where(a > 0, dx_plain, np.float32(0)), True)  # mask from the output, plain BN
        np.testing.assert_allclose(g_none, g_ref, rtol=1e-5, atol=1e-5)


def test_batchnorm_fold_factor():
    assert fold_factor(256 * 784, 16) == 4  # 64-wide rows
    assert fold_factor(256 * 196, 32) == 2
    assert fold_factor(256 * 49, 64) == 1 and fold_factor(1000, 100) == 1
    assert fold_factor(6, 16) == 2  # the largest power of two dividing the rows
    assert fold_factor(189, 5) == 1  # odd rows: not folded


@pytest.mark.parametrize("mode", ["plain", "relu", "skip"])
@pytest.mark.parametrize("shape,batch", [((4, 4, 16), 8), ((3, 3, 6), 6), ((12,), 40)])
def test_batchnorm_folded_rows_give_the_unfolded_results(monkeypatch, mode, shape, batch):
    """The kernels see several rows of a few channels as one wide row (fold_factor); statistics, outputs, running
    statistics, evaluation and every gradient stay those of the one-row-per-row kernels."""
    import tuinet.engine.norm as norm

    rng = np.random.default_rng(5)
    x = (rng.standard_normal((batch,) + shape) * 2 + 1).astype(np.float32)
    skip = rng.standard_normal(x.shape).astype(np.float32) if mode == "skip" else None
    dy = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for width in (norm.FOLD_WIDTH, 0):
        monkeypatch.setattr(norm, "FOLD_WIDTH", width)
        layer = BatchNorm()
        layer.build(shape, None)
        layer.params[0][:] = rng.uniform(0.5, 1.5, shape[-1]) if not results else results[0]["gamma"]
        layer.params[1][:] = rng.standard_normal(shape[-1]) if not results else results[0]["beta"]
        relu = mode != "plain"
        y = layer.forward_act(x, True, relu=relu, skip=skip)
        dx, kept = layer.backward_act(dy, y if relu else None, True, keep_masked=mode == "skip")
        results.append({"fold": layer._fold, "gamma": layer.params[0].copy(), "beta": layer.params[1].copy(),
                        "y": y, "dx": dx, "kept": kept, "grads": [g.copy() for g in layer.grads],
                        "running": [b.copy() for b in layer.buffers.values()],
                        "eval": layer.forward_act(x, False, relu=relu, skip=skip)})
    folded, plain = results
    assert folded["fold"] > 1 and plain["fold"] == 1
    for key in ("y", "dx", "eval"):
        np.testing.assert_allclose(folded[key], plain[key], rtol=1e-5, atol=1e-5)
    if mode == "skip":
        np.testing.assert_array_equal(folded["kept"], plain["kept"])
    for a, b in zip(folded["grads"] + folded["running"], plain["grads"] + plain["running"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


_CONV_SCRIPT = """
import numpy as np
from tuinet.engine import gemm, threads
from tuinet.engine.conv import kernels
from tuinet.engine.conv.layers import Conv2D, MaxPool2D
print(kernels.LANES)
rng = np.random.default_rng(0)
out = {}
for i, (shape, f, k, pad, s) in enumerate([((9, 9, 3), 16, 3, "same", 1), ((11, 10, 24), 32, 3, "valid", 2),
                                           ((7, 7, 40), 56, 3, 1, 1), ((12, 12, 5), 24, 5, "valid", 1),
                                           ((10, 10, 1), 6, 5, "same", 1), ((8, 8, 1), 16, 3, "same", 1),
                                           ((9, 9, 16), 32, 3, "same", 2), ((9, 8, 16), 16, 3, "same", 1),
                                           # Winograd with either width; the last with 8-float vectors only
                                           ((8, 8, 16), 16, 3, "same", 1), ((7, 7, 32), 16, 3, "same", 1),
                                           ((12, 11, 8), 8, 3, "same", 1)]):
    c = Conv2D(f, k, stride=s, padding=pad)
    c.build(shape, rng)
    x = rng.standard_normal((5,) + shape).astype(np.float32)
    y = c.forward(x, True)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = c.backward(dy)
    out[f"y{i}"], out[f"dx{i}"], out[f"dw{i}"] = y, dx, c.grads[0]
    out.setdefault("wino", []).append(c._wino is not None)
before = threads.current_mode()
threads.configure_threads(mode="numba")  # the Dense products on the micro-kernels
a = rng.standard_normal((70, 300)).astype(np.float32)
b = rng.standard_normal((300, 264)).astype(np.float32)
out["mm"] = gemm.matmul(a, b)
out["mm_t"] = gemm.matmul(a, np.ascontiguousarray(b.T), trans_b=True)
threads.configure_threads(mode=before or "blas")
np.savez(OUT, **out)
"""


@pytest.mark.slow
def test_conv_kernels_agree_across_vector_widths(tmp_path):
    """The 256-bit tiles (what an AVX2 CPU runs) and this host's choice give the same convolutions.

    A child process compiles for Haswell (AVX2: 8-float vectors, 3x32 ... 8x8 tiles); on an AVX-512 host this
    process uses 16-float vectors and taller tiles, so both tile sets are checked on one machine. The last three
    convolutions run by Winograd in the 256-bit build (its transforms on 8-float vectors; with 16-float vectors the
    last one, 8 channels, runs direct).
    """
    import os
    import subprocess
    import sys

    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    exec(_CONV_SCRIPT.replace("OUT", repr(str(tmp_path / "host.npz"))), {})  # this host's kernels, in-process
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    env.update(NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="+avx,+avx2,+fma,+f16c,+bmi,+bmi2",
               NUMBA_CACHE_DIR=str(tmp_path / "cache-avx2"))
    code = _CONV_SCRIPT.replace("OUT", repr(str(tmp_path / "avx2.npz")))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=str(root)).stdout
    assert int(out.split()[-1]) == 8
    a, b = np.load(tmp_path / "host.npz"), np.load(tmp_path / "avx2.npz")
    assert b["wino"][-3:].all()  # the 256-bit build runs these three by Winograd
    for key in (k for k in a.files if k != "wino"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-4, err_msg=key)


_BOUNDS_SCRIPT = r"""
import numpy as np
from tuinet.engine.conv import dense, kernels
rng = np.random.default_rng(0)
# a partial last tile of a 16-wide panel (fewer rows than the 16-wide tile's height, which depends on the vector
# width), accumulated into a c of exactly its rows and width (the tile buffer is 32 wide: its copy of c's rows must
# take 16 values, not 32)
rows, taps = kernels.R16 - 1, 7
xf = rng.standard_normal(64).astype(np.float32)
u = np.arange(rows + kernels.TILE_ROWS, dtype=np.int64)
v = np.arange(taps, dtype=np.uint64)
b = rng.standard_normal((taps, 16)).astype(np.float32)
c = rng.standard_normal((rows, 16)).astype(np.float32)
want = c + xf[u[:rows, None] + v[None, :].astype(np.int64)] @ b
tile = np.empty((kernels.TILE_ROWS, 32), np.float32)
kernels._tail_tile(xf, u, 0, rows, v, b, 0, 16, c, np.zeros(16, np.float32), True, tile)
assert np.allclose(c, want, atol=1e-4)
# an 8-wide last panel of B packed (a 32-wide panel row must take 8 values of B's row, not 32), B as given and
# transposed, and a last tile of fewer rows than the 32-wide tile's
aa = rng.standard_normal((kernels.R32 * 2 + 1, 3)).astype(np.float32)
bb = rng.standard_normal((3, 40)).astype(np.float32)
for trans in (False, True):
    out = np.empty((aa.shape[0], 40), np.float32)
    dense.panel_matmul(aa, np.ascontiguousarray(bb.T) if trans else bb, out, False, trans)
    assert np.allclose(out, aa @ bb, atol=1e-5)
# the bias and ReLU on an 8-wide last panel's rows, and the masked packing (its writes of dz and db) of one
bias = rng.standard_normal(40).astype(np.float32)
dense.panel_matmul(aa, bb, out, False, False, bias=bias, relu=True)
assert np.allclose(out, np.maximum(aa @ bb + bias, 0), atol=1e-5)
y = rng.standard_normal((aa.shape[0], 40)).astype(np.float32)
dy = rng.standard_normal((aa.shape[0], 40)).astype(np.float32)
dz, db, dw = np.empty_like(dy), np.empty(40, np.float32), np.empty((3, 40), np.float32)
dense.panel_matmul(aa, dy, dw, True, False, mask=(y, dz, db, True))
assert np.allclose(dz, np.where(y > 0, dy, 0)) and np.allclose(db, dz.sum(0), atol=1e-5)
assert np.allclose(dw, aa.T @ dz, atol=1e-5)
# a 16-wide last panel (56 columns: 32, 16, 8) and a last tile of fewer rows than the 16-wide tile's
b56 = rng.standard_normal((3, 56)).astype(np.float32)
a16 = rng.standard_normal((kernels.R16 + 3, 3)).astype(np.float32)
out = np.empty((a16.shape[0], 56), np.float32)
dense.panel_matmul(a16, b56, out, False, False, bias=np.zeros(56, np.float32), relu=True)
assert np.allclose(out, np.maximum(a16 @ b56, 0), atol=1e-5)
# a weight gradient of a wide input, transposed first (ragged 8 x 8 blocks on both sides)
xw = rng.standard_normal((dense.TRANSPOSE_TAPS + 3, dense.TRANSPOSE_ROWS + 5)).astype(np.float32)
dzw = rng.standard_normal((xw.shape[0], 40)).astype(np.float32)
dww = np.empty((xw.shape[1], 40), np.float32)
dense.panel_matmul(xw, dzw, dww, True, False)
assert np.allclose(dww, xw.T @ dzw, atol=1e-4)
print("ok")
"""


def test_partial_tiles_and_narrow_panels_stay_in_bounds(tmp_path):
    """With Numba's bounds checks on, the copies around a partial last tile and the packing (plain or masked by a
    ReLU) of a narrow panel read only their own rows (they copied a 32-wide buffer's length out of 16- and 8-wide slices: reads past a
    row, and past the array at its last row)."""
    import os
    import subprocess
    import sys

    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", _BOUNDS_SCRIPT], env=env, capture_output=True, text=True,
                         cwd=str(root))
    assert out.returncode == 0 and out.stdout.split()[-1] == "ok", out.stderr[-2000:]
