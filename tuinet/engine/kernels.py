"""Numba kernels for the dense engine: activations, bias, losses, penalties and dropout, and the decorators
(``jit``, ``chunked``) the other kernel modules use.

Every kernel works on float32 arrays that are C-contiguous and writable; element-wise kernels take flat 1-D
views (``a.reshape(-1)``) so each one compiles exactly one specialization. Constants are written as
``np.float32(...)`` so Numba never promotes the arithmetic to float64.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from tuinet.engine import runtime

runtime.configure()

# The guide's fastmath subset: no 'nnan'/'ninf', so NaN checks survive for the divergence guard.
FASTMATH = {"reassoc", "contract", "arcp", "nsz"}
CHUNK = 8192  # elements per parallel chunk: small arrays run as one chunk

F0 = np.float32(0.0)
F1 = np.float32(1.0)
FHALF = np.float32(0.5)
INV_SQRT2 = np.float32(1.0 / math.sqrt(2.0))
INV_SQRT_2PI = np.float32(1.0 / math.sqrt(2.0 * math.pi))


def jit(parallel: bool | dict = False):
    """The decorator every tuinet kernel uses (``parallel`` as Numba takes it: a bool or a dict of options)."""
    return cached(nogil=True, fastmath=FASTMATH, parallel=parallel, error_model="numpy")


def cached(**options):
    """``njit(**options)`` with Numba's on-disk cache, each entry valid while no engine source file changes
    (:func:`tuinet.engine.runtime.cache_with_tree`); every kernel decorator of the engine goes through it."""
    def decorate(fn):
        return runtime.cache_with_tree(njit(**options)(fn), runtime.ENGINE_DIR)
    return decorate


# --- chunked parallel kernels (flat arrays) -------------------------------------------------------------------
# An element-wise kernel is a serial loop over whole (sliced) arrays, which LLVM vectorizes, run over chunk
# slices by a parallel wrapper that chunked() builds (a loop written directly inside prange, or one over
# range(start, stop), does not vectorize: Numba cannot prove the index is non-negative).


def _cut(a, s, e):
    """``a[s:e]`` for an array, ``a`` itself for a scalar (callable inside kernels only)."""
    raise TypeError("_cut is only callable from Numba-compiled code")


@overload(_cut)
def _cut_overload(a, s, e):
    if isinstance(a, types.Array):
        return lambda a, s, e: a[s:e]
    return lambda a, s, e: a


_CHUNKED_SOURCE = """
def {name}({args}):
    n = {first}.size
    nchunks = (n + CHUNK - 1) // CHUNK
    if nchunks <= 1:
        serial({args})
        return
    for c in prange(nchunks):
        s = c * CHUNK
        e = min(n, s + CHUNK)
        serial({chunk_args})
"""

_CHUNKED_SUM_SOURCE = """
def {name}({args}):
    n = {first}.size
    nchunks = (n + CHUNK - 1) // CHUNK
    if nchunks <= 1:
        return serial({args})
    parts = np.zeros(nchunks, dtype=np.float64)
    for c in prange(nchunks):
        s = c * CHUNK
        e = min(n, s + CHUNK)
        parts[c] = serial({chunk_args})
    return parts.sum()
"""


def chunked(serial, name: str, doc: str | None = None, *, sums: bool = False):
    """The parallel kernel ``name`` that runs the serial kernel ``serial`` over chunks of its arrays.

    The result takes the parameters of ``serial``; the first must be an array (its size is the element count),
    every array argument is cut into the same CHUNK-element slices and the others are passed as they are. Small
    arrays (one chunk) run in one call. With ``sums``, ``serial`` returns a float and the kernel returns the
    float64 sum over the chunks.

    The kernel's source is one of the two templates above with ``serial``'s parameter names filled in (explicit
    parameters: a ``*args`` function costs every call an extra argument repacking in Numba's dispatcher); it
    finds ``serial`` among its globals, not in a closure: Numba's cache keys a closure by its pickled cell
    contents, and a pickled dispatcher carries a per-process id, so a closure would never be found in the cache
    by the next process (and would add an entry per run). It is compiled as if written in ``serial``'s file at
    ``serial``'s line, so it is cached next to ``serial`` (one cache entry per kernel) and recompiled when that
    file changes; tracebacks and ``inspect`` point at ``serial``.
    """
    code = serial.py_func.__code__
    params = list(inspect.signature(serial.py_func).parameters)
    template = _CHUNKED_SUM_SOURCE if sums else _CHUNKED_SOURCE
    source = template.format(name=name, args=", ".join(params), first=params[0],
                             chunk_args=", ".join(f"_cut({p}, s, e)" for p in params))
    namespace = {"__name__": serial.py_func.__module__, "CHUNK": CHUNK, "np": np, "prange": prange, "_cut": _cut,
                 "serial": serial}
    exec(compile("\n" * (code.co_firstlineno - 2) + source, code.co_filename, "exec"), namespace)
    fn = namespace[name]
    fn.__doc__ = doc
    # no loop fusion: fused into the chunk loop, the final sum would add the chunks' results in another order
    return jit(parallel={"fusion": False})(fn)


# --- activations (flat arrays) -------------------------------------------------------------------------------


@jit()
def _relu_fwd(x, out):
    for i in range(x.size):
        v = x[i]
        out[i] = v if v > F0 else F0


relu_forward = chunked(_relu_fwd, "relu_forward", "out = max(x, 0).")


@jit()
def _relu_bwd(dy, y, dx):
    for i in range(dy.size):
        dx[i] = dy[i] if y[i] > F0 else F0


relu_backward = chunked(_relu_bwd, "relu_backward", "dx = dy where the ReLU output y > 0, else 0.")


@jit()
def _leaky_fwd(x, out, slope):
    for i in range(x.size):
        v = x[i]
        out[i] = v if v > F0 else v * slope


leaky_relu_forward = chunked(_leaky_fwd, "leaky_relu_forward", "out = x where x > 0, else slope * x.")


@jit()
def _leaky_bwd(dy, x, dx, slope):
    for i in range(dy.size):
        dx[i] = dy[i] if x[i] > F0 else dy[i] * slope


leaky_relu_backward = chunked(_leaky_bwd, "leaky_relu_backward", "dx = dy where x > 0, else slope * dy.")


@jit()
def sigmoid_forward(x, out):
    """Logistic function without overflow for large |x|."""
    for i in range(x.size):
        v = x[i]
        if v >= F0:
            out[i] = F1 / (F1 + np.exp(-v))
        else:
            e = np.exp(v)
            out[i] = e / (F1 + e)


@jit()
def sigmoid_backward(dy, y, dx):
    for i in range(dy.size):
        dx[i] = dy[i] * y[i] * (F1 - y[i])


@jit()
def tanh_forward(x, out):
    for i in range(x.size):
        out[i] = np.tanh(x[i])


@jit()
def tanh_backward(dy, y, dx):
    for i in range(dy.size):
        dx[i] = dy[i] * (F1 - y[i] * y[i])


@jit()
def gelu_forward(x, out):
    """Exact GELU, x * Phi(x), as torch.nn.GELU() computes it."""
    for i in range(x.size):
        v = x[i]
        out[i] = FHALF * v * (F1 + math.erf(v * INV_SQRT2))


@jit()
def gelu_backward(dy, x, dx):
    for i in range(dy.size):
        v = x[i]
        cdf = FHALF * (F1 + math.erf(v * INV_SQRT2))
        pdf = INV_SQRT_2PI * np.exp(-FHALF * v * v)
        dx[i] = dy[i] * (cdf + v * pdf)


# --- dense helpers (2-D arrays) ------------------------------------------------------------------------------


@jit()
def add_bias(z, b):
    """z[i, :] += b for every row, in place."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            z[i, j] += b[j]


@jit()
def bias_relu(z, b):
    """z[i, :] = max(z[i, :] + b, 0) in place: a Dense layer's bias and the ReLU after it in one pass."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            v = z[i, j] + b[j]
            z[i, j] = v if v > F0 else F0


@jit()
def relu_grad_bias(dy, y, dz, db):
    """dz = dy where the ReLU output y > 0, else 0; db[j] = sum_i dz[i, j] (the bias gradient), in one pass.

    The same numbers as relu_backward followed by column_sum (the sums run in the same order).
    """
    n, m = dy.shape
    for j in range(m):
        db[j] = F0
    for i in range(n):
        for j in range(m):
            d = dy[i, j] if y[i, j] > F0 else F0
            dz[i, j] = d
            db[j] += d


@jit()
def column_sum(dz, out):
    """out[j] = sum_i dz[i, j] (the bias gradient)."""
    n, m = dz.shape
    for j in range(m):
        out[j] = F0
    for i in range(n):
        for j in range(m):
            out[j] += dz[i, j]


# --- dropout (flat arrays) -----------------------------------------------------------------------------------


# Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011), the
# counter-based generator behind dropout in PyTorch's and TensorFlow's GPU kernels: four 32-bit words of output
# from a 128-bit counter and a 64-bit key, nothing carried from one call to the next. Checked against Random123's
# published known-answer vectors (tests/engine/test_gradients.py).
_PHILOX_M0 = np.uint64(0xD2511F53)
_PHILOX_M1 = np.uint64(0xCD9E8D57)
_PHILOX_W0 = np.uint32(0x9E3779B9)
_PHILOX_W1 = np.uint32(0xBB67AE85)
_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


def _inlined():
    """The decorator of a small kernel that other kernels inline at the Numba IR level (``inline="always"``):
    Philox's ten rounds called as a function ran the dropout kernel at half the speed."""
    return cached(nogil=True, fastmath=FASTMATH, error_model="numpy", inline="always")


@_inlined()
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of the counter (c0, c1, c2, c3) under the key (k0, k1), all uint32: four uint32."""
    c0, c1, c2, c3 = np.uint32(c0), np.uint32(c1), np.uint32(c2), np.uint32(c3)
    k0, k1 = np.uint32(k0), np.uint32(k1)
    for r in range(10):
        if r > 0:  # the key schedule: the Weyl increments between rounds
            k0 = np.uint32(k0 + _PHILOX_W0)
            k1 = np.uint32(k1 + _PHILOX_W1)
        p0 = _PHILOX_M0 * np.uint64(c0)
        p1 = _PHILOX_M1 * np.uint64(c2)
        c0, c1, c2, c3 = (np.uint32(np.uint32(p1 >> _SHIFT32) ^ c1 ^ k0), np.uint32(p1 & _LOW32),
                          np.uint32(np.uint32(p0 >> _SHIFT32) ^ c3 ^ k1), np.uint32(p0 & _LOW32))
    return c0, c1, c2, c3


@_inlined()
def _keep(word, threshold, scale, zero):
    return scale if np.uint64(word) < threshold else zero


@jit()
def dropout_forward(x, key, threshold, scale, out, mask):
    """Inverted dropout of flat ``x``: element i is kept when the i-th 32-bit word of the Philox4x32-10 stream under
    ``key`` (a uint64: counter i // 4 as a 64-bit number, word i % 4) is below ``threshold`` (the keep probability times 2^32), and
    then scaled by ``scale`` (1 / keep); ``mask`` gets that scale, or 0. The same key gives the same mask."""
    k0 = np.uint32(key & _LOW32)
    k1 = np.uint32(key >> _SHIFT32)
    zero = scale - scale
    n = x.size
    z = np.uint32(0)
    for j in range(n // 4):  # the counter (j's low and high 32 bits, 0, 0)
        r0, r1, r2, r3 = philox4x32(np.uint32(j & _LOW32), np.uint32(j >> _SHIFT32), z, z, k0, k1)
        i = 4 * j
        m = _keep(r0, threshold, scale, zero)
        mask[i] = m
        out[i] = x[i] * m
        m = _keep(r1, threshold, scale, zero)
        mask[i + 1] = m
        out[i + 1] = x[i + 1] * m
        m = _keep(r2, threshold, scale, zero)
        mask[i + 2] = m
        out[i + 2] = x[i + 2] * m
        m = _keep(r3, threshold, scale, zero)
        mask[i + 3] = m
        out[i + 3] = x[i + 3] * m
    j = n // 4
    if 4 * j < n:  # the last, partial block of four
        r0, r1, r2, r3 = philox4x32(np.uint32(j & _LOW32), np.uint32(j >> _SHIFT32), z, z, k0, k1)
        for q in range(n - 4 * j):
            word = r0 if q == 0 else (r1 if q == 1 else r2)
            m = _keep(word, threshold, scale, zero)
            mask[4 * j + q] = m
            out[4 * j + q] = x[4 * j + q] * m


@jit()
def multiply(a, b, out):
    """out = a * b element-wise."""
    for i in range(a.size):
        out[i] = a[i] * b[i]


# --- losses (2-D logits) -------------------------------------------------------------------------------------


@jit()
def softmax_cross_entropy(logits, labels, dlogits, row_loss):
    """Mean softmax cross-entropy; writes d(mean loss)/d(logits) into dlogits and each row's loss into row_loss.

    Stable: subtracts each row's max before exponentiating and takes log-sum-exp, never log(softmax).
    Returns (mean loss as float64, number of rows whose argmax equals the label).
    """
    n, k = logits.shape
    inv_n = F1 / np.float32(n)
    correct = 0
    total = 0.0
    for i in range(n):
        mx = logits[i, 0]
        arg = 0
        for j in range(1, k):
            if logits[i, j] > mx:
                mx = logits[i, j]
                arg = j
        s = F0
        for j in range(k):
            e = np.exp(logits[i, j] - mx)
            dlogits[i, j] = e
            s += e
        inv_s = F1 / s
        lab = labels[i]
        li = np.log(s) - (logits[i, lab] - mx)
        row_loss[i] = li
        total += li
        for j in range(k):
            dlogits[i, j] = dlogits[i, j] * inv_s * inv_n
        dlogits[i, lab] -= inv_n
        if arg == lab:
            correct += 1
    return total / n, correct


@jit()
def softmax_rows(logits, out):
    """Row-wise stable softmax."""
    n, k = logits.shape
    for i in range(n):
        mx = logits[i, 0]
        for j in range(1, k):
            mx = max(mx, logits[i, j])
        s = F0
        for j in range(k):
            e = np.exp(logits[i, j] - mx)
            out[i, j] = e
            s += e
        for j in range(k):
            out[i, j] /= s


@jit()
def mean_squared_error(pred, target, dpred):
    """Mean over all elements of (pred - target)^2, as torch.nn.MSELoss(); writes the gradient into dpred."""
    n = pred.size
    scale = np.float32(2.0) / np.float32(n)
    total = 0.0
    for i in range(n):
        d = pred[i] - target[i]
        total += d * d
        dpred[i] = scale * d
    return total / n


@jit()
def bce_with_logits(logits, target, dlogits):
    """Mean binary cross-entropy on logits, stable form max(x,0) - x*t + log(1 + exp(-|x|))."""
    n = logits.size
    inv_n = F1 / np.float32(n)
    total = 0.0
    for i in range(n):
        x = logits[i]
        t = target[i]
        total += max(x, F0) - x * t + np.log1p(np.exp(-abs(x)))
        if x >= F0:
            s = F1 / (F1 + np.exp(-x))
        else:
            e = np.exp(x)
            s = e / (F1 + e)
        dlogits[i] = (s - t) * inv_n
    return total / n


# --- weight penalties and checks (flat arrays) -------------------------------------------------------------------


@jit()
def _penalty_range(w, g, l1, l2):
    two_l2 = np.float32(2.0) * l2
    acc = 0.0
    for i in range(w.size):
        v = w[i]
        sign = F1 if v > F0 else (-F1 if v < F0 else F0)
        g[i] += l1 * sign + two_l2 * v
        acc += l1 * abs(v) + l2 * v * v
    return acc


add_penalty_grad = chunked(
    _penalty_range, "add_penalty_grad",
    "add_penalty_grad(w, g, l1, l2): add the gradient of l1*sum|w| + l2*sum w^2 to g in place; return the penalty.",
    sums=True)


@jit()
def sum_squares(a):
    """Sum of squares accumulated in float64 (for gradient and weight norms)."""
    acc = 0.0
    for i in range(a.size):
        v = np.float64(a[i])
        acc += v * v
    return acc


@jit()
def nonfinite_sum(a):
    """The sum of ``a * 0``: 0 when every element is finite, NaN otherwise (x * 0 is 0 for finite x and NaN for
    inf/NaN), so one vectorized sum answers for the whole array (no early exit, no branch in the loop; fastmath here
    keeps NaN semantics). The optimizers add it up over the pieces they update (see ``Optimizer.step``)."""
    acc = F0
    for i in range(a.size):
        acc += a[i] * F0
    return acc


@jit()
def all_finite(a):
    """True when every element is finite (the divergence guard's check before a run's first step)."""
    return nonfinite_sum(a) == F0
