"""The convolution and pooling layers on NHWC float32 images, and their shape helpers.

A Conv2D followed by a MaxPool2D runs fused when the model calls :meth:`Conv2D.forward_fused` /
:meth:`Conv2D.backward_fused` (``Sequential`` does for every such pair): each sample's convolution output
(and, backward, its gradient) lives only in a per-thread buffer, so the full-size activation never goes
through memory; a ReLU after the MaxPool2D joins the unit (applied to each sample's pooled values in cache).
Results are bit-for-bit those of the layers run one after the other.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numba
import numpy as np

from tuinet.engine.conv.kernels import (
    avgpool_backward, avgpool_forward, conv2d_backward, conv2d_forward, gap_backward, gap_forward, maxpool_backward,
    maxpool_forward,
)
from tuinet.engine.conv import winograd
from tuinet.engine.conv.plan import ConvPlan, _padded_offsets
from tuinet.engine.conv.winograd import WinogradPlan, winograd_forward
from tuinet.engine.layers import Layer, ReLU, init_weights, register
from tuinet.engine.norm import _NO_MASK, OutputStats, fold_factor
from tuinet.errors import ModelError

# --- shape helpers ---------------------------------------------------------------------------------------------


def _pair(v, what: str) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ModelError(f"{what} needs one or two integers, got {v}")
        a, b = int(v[0]), int(v[1])
    else:
        a = b = int(v)
    if a < 1 or b < 1:
        raise ModelError(f"{what} must be at least 1, got {v}")
    return a, b


def conv_geometry(size: int, k: int, stride: int, padding) -> tuple[int, int, int]:
    """Output size and (before, after) padding of one spatial axis.

    ``padding`` is ``"valid"`` (none), ``"same"`` (output = ceil(size / stride); the extra pixel of an odd
    total padding goes after, as in TensorFlow) or an integer applied on both sides (as in PyTorch).
    """
    if padding == "valid":
        before = after = 0
    elif padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        before, after = total // 2, total - total // 2
    else:
        before = after = int(padding)
    out = (size + before + after - k) // stride + 1
    if out < 1:
        raise ModelError(f"a {k}-wide window with stride {stride} and padding {padding!r} does not fit an input "
                         f"of size {size}")
    return out, before, after


def _check_padding(padding):
    if isinstance(padding, str):
        p = padding.lower()
        if p not in ("same", "valid"):
            raise ModelError(f"padding must be 'same', 'valid' or an integer, got '{padding}'")
        return p
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ModelError(f"padding must be 'same', 'valid' or an integer >= 0, got {padding!r}")
    return int(padding)



def torch_uniform_init(shape, fan_in: int, rng: np.random.Generator) -> np.ndarray:
    """PyTorch's default Conv2d/Linear initialization: kaiming_uniform_(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return np.ascontiguousarray(rng.uniform(-bound, bound, size=shape), dtype=np.float32)


# --- layers ----------------------------------------------------------------------------------------------------


def _threads() -> int:
    return max(1, numba.get_num_threads())


@register
class Conv2D(Layer):
    """2-D convolution on NHWC images, weights (KH, KW, Cin, Cout).

    Args:
        filters: number of output channels.
        kernel_size: window size, an int or (height, width).
        stride: step between windows, an int or (height, width).
        padding: ``"valid"`` (default, as PyTorch's 0), ``"same"`` or an integer on every side.
        use_bias: add one bias per filter (True).
        init: ``he`` (default: He-normal weights, zero bias), ``xavier``, or ``torch`` (PyTorch's default:
            weights and bias uniform in +-1/sqrt(fan_in)).
    """

    numba_parallel: ClassVar[bool] = True
    penalized = ("W",)
    #: run on the kernels' extended variant even where this layer needs none of its extras (set for every
    #: convolution of a model with residual blocks, so that such a model compiles one variant, not both)
    kernel_ext = False

    def __init__(self, filters: int, kernel_size=3, stride=1, padding="valid", use_bias: bool = True,
                 init: str | None = None):
        super().__init__()
        if int(filters) < 1:
            raise ModelError(f"Conv2D needs at least 1 filter, got {filters}")
        if init not in (None, "he", "xavier", "torch"):
            raise ModelError(f"unknown initialization '{init}' (use he, xavier or torch)")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "Conv2D kernel_size")
        self.stride = _pair(stride, "Conv2D stride")
        self.padding = _check_padding(padding)
        self.use_bias = bool(use_bias)
        self.init = init
        self._x: np.ndarray | None = None

    @property
    def param_names(self):  # type: ignore[override]
        return ("W", "b") if self.use_bias else ("W",)

    def build(self, input_shape, rng):
        if len(input_shape) != 3:
            raise ModelError(f"Conv2D expects (height, width, channels) inputs, got shape {tuple(input_shape)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        h, w, c = self.input_shape
        kh, kw = self.kernel_size
        sh, sw = self.stride
        oh, pt, pb = conv_geometry(h, kh, sh, self.padding)
        ow, pl, pr = conv_geometry(w, kw, sw, self.padding)
        fan_in, fan_out = kh * kw * c, kh * kw * self.filters
        if self.init == "torch":
            wgt = torch_uniform_init((kh, kw, c, self.filters), fan_in, rng)
            bias = torch_uniform_init((self.filters,), fan_in, rng)
        else:
            wgt = init_weights((kh, kw, c, self.filters), fan_in, fan_out, self.init or "he", rng)
            bias = np.zeros(self.filters, np.float32)
        self.params = [wgt] + ([bias] if self.use_bias else [])
        self.grads = [np.zeros_like(p) for p in self.params]
        self.output_shape = (oh, ow, self.filters)
        plan = self._plan = ConvPlan.build(self.input_shape, self.output_shape, self.kernel_size, self.stride,
                                           (pt, pb, pl, pr))
        # work buffers: the padded bias, the weights as a (KH*KW*Cin, Cout padded) matrix and flipped for dX
        self._bp = np.zeros(plan.cp, np.float32)
        self._wk = np.zeros((fan_in, plan.cp), np.float32)
        self._wf = np.zeros((fan_out, plan.cin_p) if not plan.dx_gemm else (1, 8), np.float32)
        self._wt = np.zeros((self.filters, plan.kp) if plan.dx_gemm else (1, 8), np.float32)
        # the paired GEMMs' weights and bias (ConvPlan.pair): (KH*(KW+1), 2*Cp) and 2*Cp
        self._wk2 = np.zeros((kh * (kw + 1), 2 * plan.cp) if plan.pair else (1, 8), np.float32)
        self._bp2 = np.zeros(2 * plan.cp, np.float32)
        self._parts: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # dW, db, paired dW partials
        self._st: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # output statistics: shift, sums, squares
        self._pre: tuple[np.ndarray, np.ndarray] | None = None  # the input transform's scale and shift, per column
        self.stats: OutputStats | None = None
        # 3x3 stride-1 "same" convolutions over whole vectors of channels run all three passes by Winograd
        use = (winograd.eligible(self.kernel_size, self.stride, (pt, pb, pl, pr), self.input_shape, self.output_shape)
               and plan.direct and not plan.pair)
        self._wino = WinogradPlan.build(self.input_shape, self.output_shape) if use else None
        # and the input gradient: the same convolution of dy with the flipped kernel (padded by 2 - the padding)
        self._wino_dx = WinogradPlan.build(self.output_shape, self.input_shape) if use else None
        self.bn_sums = None  # a BatchNorm's backward sums gathered by the last backward pass (see backward)
        self._proj_at: tuple | None = None  # a projection's pixels in the padded input (see _projection_offsets)
        self._wz: np.ndarray | None = None  # the Winograd weight gradient's per-thread sums
        return self.output_shape

    def _packed_weights(self) -> np.ndarray:
        k = self._wk.shape[0]
        wm = self.params[0].reshape(k, self.filters)
        if self._plan.cp == self.filters:
            return wm
        self._wk[:, :self.filters] = wm
        return self._wk

    def forward(self, x, training, stats=False, pre=None, proj=None):
        """The convolution of x.

        ``stats``: also gather a following BatchNorm's statistics of the output, sample by sample while each is in
        cache (:attr:`stats`: an :class:`~tuinet.engine.norm.OutputStats`, or None where this layer's layout
        does not allow it). ``pre`` (per-channel ``(scale, shift)``): the layer's input is relu(x * scale + shift),
        a BatchNorm + ReLU whose output is never stored; x is then that BatchNorm's input, and the input
        gradient returned by :meth:`backward` is the gradient of the transformed input.

        ``proj`` (training, no ``pre``): a layer that :meth:`takes_projection`, whose output (with its statistics
        when ``stats``) is computed in this pass, from each sample's input while it is in cache: returns (this
        layer's output, ``proj``'s output), and ``proj`` is left as after its own ``forward(x, True, stats)``.
        """
        self._x = x
        n = x.shape[0]
        oh, ow, cout = self.output_shape
        out = np.empty((n, oh * ow, cout), np.float32)
        self._pre = None
        if pre is not None:
            w = self.input_shape[1]
            self._pre = (np.tile(np.asarray(pre[0], np.float32), w), np.tile(np.asarray(pre[1], np.float32), w))
        if proj is not None and not (training and pre is None and self.takes_projection(proj)):
            raise ValueError(f"{self.describe()} cannot compute {proj.describe()} in its forward pass")
        self._gather_stats(n, stats)
        args = None
        if proj is not None:
            proj._x, proj._pre = x, None
            proj._gather_stats(n, stats)
            args = self._projection_forward_args(proj, n)
        self._run_forward(x, out, False, _NO_POOL, _NO_ARG, (1, 1), (1, 1), self.stats is not None, proj=args)
        out = out.reshape((n,) + self.output_shape)
        return out if proj is None else (out, args[0].reshape((n,) + proj.output_shape))

    def _gather_stats(self, n: int, stats: bool) -> None:
        """Set :attr:`stats` for a forward pass over ``n`` samples that gathers them (``stats``, where the layout
        allows it), else None."""
        oh, ow, cout = self.output_shape
        self.stats = None
        if stats and self._plan.direct and not self._plan.pair:
            parts = min(_threads(), n)
            fold = fold_factor(oh * ow, cout)
            width = fold * cout
            if self._st is None or self._st[0].shape != (_threads(), width):
                t = _threads()
                self._st = (np.empty((t, width), np.float32), np.empty((t, width)), np.empty((t, width)))
            counts = np.array([((p + 1) * n // parts - p * n // parts) * (oh * ow // fold) for p in range(parts)],
                              np.float64)
            self.stats = OutputStats(self._st[1][:parts], self._st[2][:parts], self._st[0][:parts], counts, fold)

    def _projection_forward_args(self, proj: "Conv2D", n: int) -> tuple:
        """The ``proj`` arguments of :func:`conv2d_forward` (see :meth:`forward`), its output array first."""
        theirs = proj._plan
        at, _, _, _ = self._projection_offsets(proj)
        out = np.empty((n, proj.output_shape[0] * proj.output_shape[1], proj.filters), np.float32)
        st = proj._st if proj.stats is not None else _NO_ST
        return (out, at, theirs.off_u, proj._packed_weights(), proj._bp, theirs.panels_out,
                proj.stats is not None, proj.stats.fold if proj.stats is not None else 1, st[0], st[1], st[2])

    def can_fuse(self, nxt) -> bool:
        """True when ``nxt`` is a MaxPool2D, or a ReLU (where this layer runs direct, not by Winograd), that
        :meth:`forward_fused` can compute along with this layer."""
        if tuple(getattr(nxt, "input_shape", ())) != tuple(self.output_shape):
            return False
        return type(nxt) is MaxPool2D or (type(nxt) is ReLU and self._wino is None)

    def can_fuse_relu(self, pool, relu) -> bool:
        """True when ``relu`` (after this layer's fused MaxPool2D ``pool``) can run in the same pass."""
        return type(pool) is MaxPool2D and type(relu) is ReLU and self.can_fuse(pool)

    def forward_fused(self, x, training, pool: "MaxPool2D | ReLU", relu: ReLU | None = None):
        """This convolution and the MaxPool2D ``pool`` after it in one pass (the model calls it for such pairs),
        and the ``relu`` after that when given (Conv2D, MaxPool2D, ReLU: the model calls it for such triples).

        ``pool`` a ReLU (Conv2D, ReLU): the convolution's output rectified in place, each sample while it is in
        cache, instead of in a pass of the ReLU's own over the whole batch; returns it, and the ReLU keeps it as
        its output (the same numbers as the two layers' own passes).

        Returns the pooled output (rectified with ``relu``); the layers keep what their backward passes need, so
        either :meth:`backward_fused` or the layers' own ``backward`` can follow. Same results as
        ``pool.forward(self.forward(x))`` (and ``relu.forward`` of that) bit for bit, without the convolution's
        output ever being stored, and with ``relu`` without a second pass over the pooled output (``relu.output``
        is set as its own forward pass would set it; the pooled output before the ReLU is never stored).
        """
        self._x = x
        self._pre = None
        self.stats = None
        n = x.shape[0]
        if type(pool) is ReLU:
            oh, ow, cout = self.output_shape
            y = np.empty((n, oh * ow, cout), np.float32)
            self._run_forward(x, y, False, _NO_POOL, _NO_ARG, (1, 1), (1, 1), pool_relu=True)
            pool._cache = y = y.reshape((n,) + self.output_shape)
            return y
        out = np.empty((n,) + pool.output_shape, np.float32)
        arg = np.empty((n,) + pool.output_shape, np.int32)
        self._run_forward(x, _NO_OUT, True, out, arg, pool.pool_size, pool.stride, pool_relu=relu is not None)
        pool._arg = arg
        if relu is not None:
            relu._cache = out
        return out

    def _paired_weights(self) -> np.ndarray:
        """W''[(kh, kw''), (j, co)] = W[kh, kw'' - j, 0, co] (0 outside the kernel), bias repeated for j = 0, 1."""
        kh, kw = self.kernel_size
        cp, cout = self._plan.cp, self.filters
        w2 = self._wk2.reshape(kh, kw + 1, 2, cp)
        w = self.params[0][:, :, 0, :]
        w2[:, :kw, 0, :cout] = w
        w2[:, 1:, 1, :cout] = w
        self._bp2[:cp] = self._bp
        self._bp2[cp:] = self._bp
        return self._wk2

    def _run_forward(self, x, out, pooled, pool_out, pool_arg, pool_size, pool_stride, stats=False, pool_relu=False,
                     proj=None):
        oh, ow, cout = self.output_shape
        if self.use_bias:
            self._bp[:cout] = self.params[1]
        plan = self._plan
        st = self._st if stats else _NO_ST
        pre = self._pre if self._pre is not None else _NO_PRE
        if self._wino is not None and not pooled:
            winograd_forward(x, winograd.transform_weights(self.params[0]), out.reshape(x.shape[0], oh, ow, cout),
                             self._bp, self.use_bias, _NO_WADD, False, plan.pt, plan.pl, self._wino, _threads(), stats,
                             self.stats.fold if stats else 1, st[0], st[1], st[2], self._pre is not None, pre[0],
                             pre[1])
            return
        wk2 = self._paired_weights() if plan.pair and not pooled else self._wk2
        ext = self.kernel_ext or stats or self._pre is not None or proj is not None
        conv2d_forward(ext, x, self._packed_weights(), self._bp, out, plan.base_i, plan.off_u, plan.panels_out, plan.pt,
                       plan.pb, plan.pl, plan.pr, plan.direct, _threads(), oh, ow, cout, pooled, pool_out, pool_arg,
                       pool_relu, pool_size[0], pool_size[1], pool_stride[0], pool_stride[1], plan.pair, wk2, self._bp2,
                       plan.pbase_i, plan.poff_u, plan.panels_pair, stats, self.stats.fold if stats else 1, st[0],
                       st[1], st[2], self._pre is not None, pre[0], pre[1], proj=proj)

    def takes_projection(self, proj: "Conv2D") -> bool:
        """True when :meth:`forward` and :meth:`backward` can make the passes of ``proj`` (``proj=``) in their own:
        a built 1x1 convolution without padding or bias of the same input, with this layer's stride and output grid,
        beside this strided convolution whose input is not transformed, whose output channels are the GEMM's columns
        and whose input gradient is a scatter GEMM (kernel rows of whole panels), ``proj``'s too, its weight gradient
        a plain one (a residual block's projection beside its first convolution)."""
        mine, theirs = self._plan, proj._plan
        return (self._wino is None and self._pre is None and mine.dx_gemm and mine.scat and theirs.scat
                and mine.direct and not mine.pair
                and theirs.direct and not (theirs.pair or theirs.tdw or proj.use_bias)
                and tuple(proj.kernel_size) == (1, 1) and theirs.pt + theirs.pb + theirs.pl + theirs.pr == 0
                and tuple(proj.stride) == tuple(self.stride)
                and tuple(proj.input_shape) == tuple(self.input_shape)
                and tuple(proj.output_shape[:2]) == tuple(self.output_shape[:2]))

    def _projection_offsets(self, proj: "Conv2D") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Where ``proj`` (:meth:`takes_projection`) reads and writes in this layer's padded input and input
        gradient: the flat offset of each output position's pixel as GEMM rows (padded, as ``proj``'s own rows, to
        its tile height) and as a reduction (unsigned, one per position), then zeros as wide as ``proj``'s W^T and as
        its output (made once)."""
        if self._proj_at is None or self._proj_at[0] != id(proj):
            plan = self._plan
            wp = self.input_shape[1] + plan.pl + plan.pr
            at = plan.base_u.astype(np.int64) + (plan.pt * wp + plan.pl) * self.input_shape[2]
            self._proj_at = (id(proj), _padded_offsets(at, proj._plan.base_i.size, int(at[-1])),
                             at.astype(np.uint64), np.zeros(proj._wt.shape[1], np.float32),
                             np.zeros(proj.filters, np.float32))
        return self._proj_at[1:]

    def _projection_args(self, proj: "Conv2D", dy2: np.ndarray, bn=None, mask=None, sums=None) -> tuple:
        """The ``proj`` arguments of :func:`conv2d_backward` for :meth:`takes_projection`'s ``proj`` and its output's
        gradient ``dy2`` (or with ``bn``, the gradient of that BatchNorm's output, the BatchNorm's own input
        gradient made by the kernel, where its folded rows split into whole samples; with ``mask`` and ``sums``,
        dy2 is masked as the kernel reads it and ``bn``'s first-pass sums were gathered: see :meth:`backward`);
        fills ``proj``'s W^T."""
        theirs = proj._plan
        k = proj._wk.shape[0]
        proj._wt[:, :k] = proj.params[0].reshape(k, proj.filters).T
        proj._partial_buffers()
        cu, cu_u, zk, zc = self._projection_offsets(proj)
        n = dy2.shape[0]
        positions = self.output_shape[0] * self.output_shape[1]
        if mask is not None and not (bn is not None and sums is not None and positions % bn._fold == 0):
            raise ValueError("a masked projection gradient needs its BatchNorm's gathered sums and whole samples")
        if bn is not None and positions % bn._fold == 0:
            g, x2, *terms = bn.backward_terms(dy2, sums)
            head = (g, positions // bn._fold, True, x2, *terms)
        else:
            if bn is not None:
                dy2 = bn.backward(dy2, True)
            g = np.ascontiguousarray(dy2, np.float32).reshape(n * positions, proj.filters)
            head = (g, positions, False, g, zc, zc, zc, zc)
        msk = _NO_MASK if mask is None else mask.reshape(head[0].shape)
        return head + (theirs.qbase_i, theirs.co_u, proj._wt, cu, theirs.panels_s, zk, proj._parts[0], theirs.off_i,
                       int(theirs.off_u.size), cu_u, theirs.panels_out, zc, mask is not None, msk)

    def takes_batchnorm(self, bn) -> bool:
        """True when :meth:`backward` can make the input gradient of ``bn``, the BatchNorm (+ ReLU) after this layer,
        itself as it uses it (``bn_relu=``): a direct convolution whose output's positions split into whole folded
        rows of the BatchNorm."""
        oh, ow, _ = self.output_shape
        return (self._wino is None and getattr(bn, "_x", None) is not None
                and tuple(bn.input_shape) == tuple(self.output_shape) and (oh * ow) % bn._fold == 0)

    def takes_masked_add(self) -> bool:
        """True when :meth:`backward` takes ``dx_add_mask`` (the input gradient by Winograd)."""
        return self._wino is not None

    def backward(self, dy, need_dx=True, dx_add=None, bn=None, proj=None, dx_add_mask=None, bn_relu=None,
                 bn_sums=None):
        """The layer's backward pass; ``dx_add`` (the input's shape) is added into the input gradient, sample by
        sample while it is still in cache (a residual block's skip-path gradient), instead of in a pass after.

        ``bn``: the BatchNorm + ReLU (mode 1: the mask from its input) whose output is this layer's input. Where the
        input gradient is computed by Winograd, the sums of that BatchNorm's backward pass are gathered while each
        sample's gradient is in cache, and ``self.bn_sums`` holds them for its :meth:`BatchNorm.backward_act`
        (``sums``); else ``self.bn_sums`` is None.

        ``proj``: ``(layer, its output's gradient)`` or ``(layer, dy2, bn)``, ``dy2`` the gradient of the output of
        ``bn``, a BatchNorm after ``layer``, for a ``layer`` that :meth:`takes_projection`: its backward pass (and
        ``bn``'s) made in this one, sample by sample while each sample's input is in cache: its weight gradient set,
        its input gradient added into this layer's (never written), ``bn``'s gradients set and its input gradient
        made per sample as it is used. ``layer.backward`` (and ``bn``'s) must then not be run. Needs ``need_dx``.
        ``(layer, dy2, bn, mask, sums)``: dy2 taken as 0 where the uint8 ``mask`` is 0, and ``bn``'s first-pass
        sums over the masked dy2 already gathered (:meth:`BatchNorm.sums_target`, by the pass that made dy2).

        ``dx_add_mask`` (uint8, as many values as ``dx_add``, where :meth:`takes_masked_add`): ``dx_add`` is added
        only where the mask is not 0 (``dx_add`` is a ReLU's output gradient, masked as it is added).

        ``bn_relu``: the BatchNorm after this layer, fused with a ReLU (where :meth:`takes_batchnorm`): ``dy`` is that
        ReLU's output gradient, and the BatchNorm's backward pass is made here (its parameter gradients set, its input
        gradient made sample by sample as this layer uses it, never written); its own must then not be run.
        ``bn_sums``: that BatchNorm's first-pass sums, already gathered by the layer that wrote ``dy``
        (:meth:`BatchNorm.relu_sums_inputs`), so that pass is not made."""
        n = dy.shape[0]
        oh, ow, cout = self.output_shape
        self.bn_sums = None
        if proj is not None and not (need_dx and self.takes_projection(proj[0])):
            raise ValueError(f"{self.describe()} cannot add the input gradient of {proj[0].describe()}")
        if dx_add_mask is not None and not (dx_add is not None and self.takes_masked_add()):
            raise ValueError(f"{self.describe()} cannot mask the gradient it adds")
        bn_args = None
        if bn_relu is not None:
            if not self.takes_batchnorm(bn_relu):
                raise ValueError(f"{self.describe()} cannot make the input gradient of the BatchNorm after it")
            g, x2, mean_w, k, a, b = bn_relu.backward_terms(dy, sums=bn_sums, relu=True)
            bn_args = (x2, g, (oh * ow) // bn_relu._fold, mean_w, k, a, b, bn_relu._scale, bn_relu._offset, 1)
        return self._run_backward(np.ascontiguousarray(dy).reshape(n, oh * ow, cout), False, _NO_DY, _NO_ARG2,
                                  need_dx, dx_add, bn=bn, proj=proj,
                                  add_mask=None if dx_add_mask is None else dx_add_mask.reshape(n, -1),
                                  bn_args=bn_args)

    def backward_fused(self, dy, pool: "MaxPool2D | ReLU", relu: ReLU | None = None, need_dx=True):
        """Backward pass of :meth:`forward_fused`: ``dy`` is the gradient of the pooled output, or of the ReLU's
        output when ``relu`` was fused too (its mask is applied as the pooled gradient is scattered). ``pool`` a
        ReLU: ``dy`` is its output's gradient, its mask applied to each sample's gradient as this pass uses it."""
        n = dy.shape[0]
        if type(pool) is ReLU:
            oh, ow, cout = self.output_shape
            return self._run_backward(np.ascontiguousarray(dy).reshape(n, oh * ow, cout), False, _NO_DY, _NO_ARG2,
                                      need_dx, pool_relu=True, pool_y=pool.output.reshape(n, -1))
        pool_y = _NO_DY if relu is None else relu.output.reshape(n, -1)
        return self._run_backward(_NO_OUT, True, np.ascontiguousarray(dy).reshape(n, -1), pool.argmax.reshape(n, -1),
                                  need_dx, pool_relu=relu is not None, pool_y=pool_y,
                                  pool2=pool._two_by_two())

    def _partial_buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The backward pass's per-thread partial sums: dW (or nothing), db, and dW^T or the paired dW (or nothing)."""
        plan = self._plan
        p = _threads()
        if self._parts is None or self._parts[0].shape[0] != p:
            if plan.pair:
                two = (p, plan.poff_i.size, 2 * plan.cp)
            elif plan.tdw:
                two = (p, plan.cp, plan.kp)  # dW^T
            else:
                two = (1, 1, 8)
            self._parts = (np.empty((p, plan.off_i.size if not (plan.pair or plan.tdw) else 1, plan.cp), np.float32),
                           np.empty((p, plan.cp), np.float32), np.empty(two, np.float32))
        return self._parts

    def _run_backward(self, dy, pooled, pool_dy, pool_arg, need_dx, dx_add=None, pool_relu=False, pool_y=None,
                      bn=None, proj=None, add_mask=None, bn_args=None, pool2=False):
        x = self._x
        if self._wino is not None and not pooled:  # (before the direct passes' partial buffers are made)
            return self._winograd_backward(dy.reshape((x.shape[0],) + self.output_shape), need_dx, dx_add, bn,
                                           add_mask)
        oh, ow, cout = self.output_shape
        plan = self._plan
        p = _threads()
        dw_parts, db_parts, dw2_parts = self._partial_buffers()
        k = self._wk.shape[0]
        kh, kw = self.kernel_size
        if need_dx and plan.dx_gemm:  # W^T: (Cout, KH*KW*Cin)
            self._wt[:, :k] = self.params[0].reshape(k, cout).T
            dx = np.empty_like(x)
        elif need_dx:  # W flipped in both spatial axes, channel axes swapped: (KH*KW*Cout, Cin)
            wflip = self.params[0][::-1, ::-1].transpose(0, 1, 3, 2).reshape(kh * kw * cout, -1)
            self._wf[:, :self.input_shape[2]] = wflip
            dx = np.empty_like(x)
        else:
            dx = _NO_DX  # same array type as a real dx, so no second specialization is compiled
        ext = (self.kernel_ext or plan.tdw or (plan.scat and need_dx) or self._pre is not None or dx_add is not None
               or proj is not None or bn_args is not None)
        proj_args = None if proj is None else self._projection_args(*proj)
        conv2d_backward(ext, x, dy, self._wf, dw_parts, db_parts, dx, plan.base_i, plan.base_u, plan.off_i,
                        plan.off_u, plan.dbase_i, plan.doff_u, plan.dtap_lo, plan.dtap_hi, plan.panels_out,
                        plan.panels_in, ow, self.stride[0], self.stride[1], kh, kw, plan.pt, plan.pb, plan.pl, plan.pr,
                        plan.fh, plan.fw,
                        plan.direct_dx, need_dx, p, cout, pooled, pool_dy, pool_arg, pool_relu,
                        _NO_DY if pool_y is None else pool_y, pool2, plan.dx_gemm,
                        self._wt,
                        plan.qbase_i, plan.co_u, plan.panels_k, plan.pair, dw2_parts, plan.poff_i, plan.pbase_u,
                        plan.panels_pair, plan.scat, plan.panels_s, plan.tdw, plan.panels_t, plan.co_i, plan.pos_u,
                        need_dx and dx_add is not None,
                        _NO_DX if dx_add is None else np.ascontiguousarray(dx_add, np.float32).reshape(x.shape),
                        self._pre is not None, *(self._pre if self._pre is not None else _NO_PRE),
                        proj=proj_args, bn=bn_args)
        if plan.pair:  # dW[kh, kw] = D[(kh, kw), j=0] + D[(kh, kw + 1), j=1]
            d = dw2_parts[0, :kh * (kw + 1)].reshape(kh, kw + 1, 2, plan.cp)
            np.add(d[:, :kw, 0, :cout], d[:, 1:, 1, :cout], out=self.grads[0][:, :, 0, :])
        elif plan.tdw:
            self.grads[0][...] = dw2_parts[0, :cout, :k].T.reshape(self.grads[0].shape)
        else:
            self.grads[0][...] = dw_parts[0, :k, :cout].reshape(self.grads[0].shape)
        if self.use_bias:
            self.grads[1][...] = db_parts[0, :cout]
        if proj is not None:  # (the projection's partial sums were added into its part 0)
            layer = proj[0]
            layer.grads[0][...] = layer._parts[0][0, :layer._wk.shape[0], :layer.filters].reshape(layer.grads[0].shape)
        return dx if need_dx else None

    def _winograd_backward(self, dy, need_dx, dx_add, bn=None, add_mask=None):
        """The backward pass by Winograd: the weight gradient by F(3x3, 4x4), the input gradient by F(4x4, 3x3) (the
        convolution of dy with the flipped kernel, padded by 2 - the forward padding), with ``bn``'s backward sums
        (see :meth:`backward`)."""
        x = self._x
        plan = self._plan
        p = _threads()
        if self._wz is None or self._wz.shape[0] < p:
            self._wz = np.empty((p, winograd.XI, self.filters, self.input_shape[2]), np.float32)
        pre = self._pre if self._pre is not None else _NO_PRE
        db = np.empty((p, self.filters), np.float32) if self.use_bias else None
        self.grads[0][...] = winograd.winograd_weight_grad(x, dy, self._wz, plan.pt, plan.pl, self._wino, p,
                                                           self._pre is not None, pre[0], pre[1], db)
        if self.use_bias:  # the parts' sums added in part order
            self.grads[1][...] = db[:min(p, x.shape[0])].astype(np.float64).sum(axis=0)
        if not need_dx:
            return None
        flipped = self.params[0][::-1, ::-1].transpose(0, 1, 3, 2)
        dx = np.empty_like(x)
        add = _NO_WADD if dx_add is None else np.ascontiguousarray(dx_add, np.float32).reshape(x.shape)
        bsums = None if bn is None else bn.relu_sums_inputs(min(p, x.shape[0]), x.shape[0])
        gather = bsums is not None
        bsums = bsums if gather else winograd._NO_BSUMS
        winograd_forward(dy, winograd.transform_weights(flipped), dx, self._bp, False, add, dx_add is not None,
                         2 - plan.pt, 2 - plan.pl, self._wino_dx, p, False, 1, _NO_ST[0], _NO_ST[1], _NO_ST[2], False,
                         _NO_PRE[0], _NO_PRE[1], bsums, add_mask)
        if gather:
            self.bn_sums = bsums[-2:]
        return dx

    def config(self):
        pad = self.padding
        return {"type": "Conv2D", "filters": self.filters, "kernel_size": list(self.kernel_size),
                "stride": list(self.stride), "padding": pad, "use_bias": self.use_bias, "init": self.init}

    def describe(self):
        kh, kw = self.kernel_size
        extra = f", s{self.stride[0]}" if self.stride != (1, 1) else ""
        extra += f", {self.padding}" if self.padding != "valid" else ""
        return f"Conv2D({self.filters}, {kh}x{kw}{extra})"


# placeholders of the right array types for the arguments a kernel call does not use (no second specialization)
_NO_DX = np.zeros((1, 1, 1, 1), np.float32)
_NO_OUT = np.zeros((1, 1, 1), np.float32)
_NO_DY = np.zeros((1, 1), np.float32)
_NO_POOL = _NO_DX
_NO_ARG = np.zeros((1, 1, 1, 1), np.int32)
_NO_ARG2 = np.zeros((1, 1), np.int32)
_NO_ST = (np.zeros((1, 1), np.float32), np.zeros((1, 1)), np.zeros((1, 1)))
_NO_PRE = (np.zeros(1, np.float32), np.zeros(1, np.float32))
_NO_WADD = _NO_DX  # no array to add to a Winograd pass's output


def convolution_algorithms(layers) -> list[tuple[str, str]]:
    """(name, algorithm) of every Conv2D among ``layers`` and their sublayers (a residual block's, named like
    ``ResidualBlock(16) conv1``), in order: ``"winograd"`` for the built layers that run by F(4x4, 3x3), else
    ``"direct"``."""
    out = []
    for layer in layers:
        subs = getattr(layer, "sublayers", None)
        named = [(f"{layer.describe()} {key}", sub) for key, sub in subs.items()] if isinstance(subs, dict) else [
            (layer.describe(), layer)]
        out += [(name, "winograd" if getattr(conv, "_wino", None) is not None else "direct")
                for name, conv in named if isinstance(conv, Conv2D)]
    return out


class _Pool(Layer):
    """Shared set-up of the windowed pooling layers (no padding)."""

    def __init__(self, pool_size=2, stride=None):
        super().__init__()
        self.pool_size = _pair(pool_size, f"{type(self).__name__} pool_size")
        self.stride = _pair(stride, f"{type(self).__name__} stride") if stride is not None else self.pool_size

    def build(self, input_shape, rng):
        if len(input_shape) != 3:
            raise ModelError(f"{self.kind} expects (height, width, channels) inputs, got {tuple(input_shape)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        h, w, c = self.input_shape
        oh, _, _ = conv_geometry(h, self.pool_size[0], self.stride[0], "valid")
        ow, _, _ = conv_geometry(w, self.pool_size[1], self.stride[1], "valid")
        self.output_shape = (oh, ow, c)
        return self.output_shape

    def config(self):
        return {"type": self.kind, "pool_size": list(self.pool_size), "stride": list(self.stride)}

    def describe(self):
        s = f", s{self.stride[0]}" if self.stride != self.pool_size else ""
        return f"{self.kind}({self.pool_size[0]}x{self.pool_size[1]}{s})"


@register
class MaxPool2D(_Pool):
    """Maximum over pool windows; remembers the winner of each window for the backward pass.

    Args:
        pool_size: window size, an int or (height, width).
        stride: step between windows (default: the window size).
    """

    numba_parallel: ClassVar[bool] = True

    def _two_by_two(self) -> bool:
        """True when the backward pass writes each input gradient once: 2x2 windows with stride 2 (which never
        overlap)."""
        return tuple(self.pool_size) == tuple(self.stride) == (2, 2)

    @property
    def argmax(self) -> np.ndarray:
        """For each output element of the last forward pass, the flat index (int32) of the input element that
        won within its sample; read it, do not write to it."""
        return self._arg

    def forward(self, x, training):
        n = x.shape[0]
        out = np.empty((n,) + self.output_shape, np.float32)
        arg = np.empty((n,) + self.output_shape, np.int32)
        maxpool_forward(x, out, arg, self.pool_size[0], self.pool_size[1], self.stride[0], self.stride[1])
        self._arg = arg
        return out

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        n = dy.shape[0]
        dx = np.empty((n,) + self.input_shape, np.float32)
        h, w, c = self.input_shape
        maxpool_backward(dy.reshape(n, -1), self._arg.reshape(n, -1), dx.reshape(n, -1), w, c, self._two_by_two())
        return dx


@register
class AvgPool2D(_Pool):
    """Mean over pool windows.

    Args:
        pool_size: window size, an int or (height, width).
        stride: step between windows (default: the window size).
    """

    numba_parallel: ClassVar[bool] = True

    def _scale(self):
        return np.float32(1.0 / (self.pool_size[0] * self.pool_size[1]))

    def forward(self, x, training):
        out = np.empty((x.shape[0],) + self.output_shape, np.float32)
        avgpool_forward(x, out, self.pool_size[0], self.pool_size[1], self.stride[0], self.stride[1],
                        self._scale())
        return out

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        dx = np.empty((dy.shape[0],) + self.input_shape, np.float32)
        avgpool_backward(dy, dx, self.pool_size[0], self.pool_size[1], self.stride[0], self.stride[1],
                         self._scale())
        return dx


@register
class GlobalAvgPool(Layer):
    """Mean over all positions of each channel: (H, W, C) -> (C,)."""

    numba_parallel: ClassVar[bool] = True

    def build(self, input_shape, rng):
        if len(input_shape) != 3:
            raise ModelError(f"GlobalAvgPool expects (height, width, channels) inputs, got {tuple(input_shape)}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.output_shape = (self.input_shape[2],)
        return self.output_shape

    def _scale(self):
        return np.float32(1.0 / (self.input_shape[0] * self.input_shape[1]))

    def forward(self, x, training):
        n, h, w, c = x.shape
        out = np.empty((n, c), np.float32)
        gap_forward(x.reshape(n, h * w, c), out, self._scale())
        return out

    def backward(self, dy, need_dx=True):
        if not need_dx:
            return None
        n = dy.shape[0]
        h, w, c = self.input_shape
        dx = np.empty((n, h * w, c), np.float32)
        gap_backward(dy, dx, self._scale())
        return dx.reshape((n,) + self.input_shape)

