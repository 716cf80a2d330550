"""The dense layers' matrix products, on Numba's threads when the cores belong to Numba.

In the "numba" thread mode (models with convolutions, and dense models where the thread tuner finds it faster:
:mod:`tuinet.engine.threads`) BLAS keeps one thread: its
worker threads and Numba's both spin while they wait, so giving BLAS a second thread around a Dense layer's
products made a ``cnn`` step 2.7x slower (24 -> 65 ms). The products of the Dense layers would then run on one
core. :func:`matmul` runs them instead on the convolutions' register-tile micro-kernels
(:mod:`tuinet.engine.conv.microkernels`, driven by :mod:`tuinet.engine.conv.dense`), the rows split over Numba's
threads, each thread copying B into 32-column panels: read in place, rows of B a power-of-two number of floats
apart (a layer of 256 or 512 units) all fall into the same few cache sets, and a 256x256 by 256x512 product ran
at 14 GFLOP/s instead of 110.

Each element of the result is one micro-kernel's sum over the whole reduction, in order, whatever the number of
threads: the numbers depend on the thread mode (BLAS sums in another order) but not on the thread count. In the
other modes, and for shapes the micro-kernels do not take (an output width that is not a multiple of 8, inputs
that are not C-contiguous float32), the product goes to BLAS (``np.dot``).
"""

from __future__ import annotations

import numpy as np

from tuinet.engine import kernels as K
from tuinet.engine import threads

#: below this many multiply-adds a product stays with BLAS (threads and packing would cost more than they save)
MIN_FMAS = 1 << 20


def on_numba_threads() -> bool:
    """True when the Dense products run on Numba's threads (the current thread mode is "numba")."""
    return threads.current_mode() == "numba"


def numba_products_ready() -> bool:
    """True when the "numba" mode's product kernel needs no compile: compiled in this process, or in Numba's cache
    for this CPU (the thread tuner then starts a dense model on Numba's threads: compiling the kernel takes about
    2 s, loading it 0.1-0.2 s).

    Reads the cache's index through Numba's cache objects (``_cache._cache_file._load_index``, which is empty when
    the source changed since); anything unexpected there reads as not ready."""
    from tuinet.engine.conv.dense import _gemm_panels

    if _gemm_panels.signatures:
        return True
    try:
        magic = _gemm_panels.targetctx.codegen().magic_tuple()
        index = _gemm_panels._cache._cache_file._load_index()
        return any(key[1] == magic for key in index)
    except Exception:  # noqa: BLE001 - another Numba, no cache: the tuner starts on BLAS's threads, nothing breaks
        return False


def _takes(a: np.ndarray, b: np.ndarray, out: np.ndarray, m: int) -> bool:
    return (m % 8 == 0 and a.dtype == b.dtype == out.dtype == np.float32 and a.flags.c_contiguous
            and b.flags.c_contiguous and out.flags.c_contiguous and out.flags.writeable)


def _on_micro_kernels(n: int, k: int, m: int, a: np.ndarray, b: np.ndarray, out: np.ndarray,
                      *more: np.ndarray) -> bool:
    """True when an n x k by k x m product runs on the micro-kernels (the "numba" mode, enough multiply-adds,
    operands they take); ``more``: other arrays the fused kernels read or write, C-contiguous float32 too."""
    return (on_numba_threads() and n * k * m >= MIN_FMAS and _takes(a, b, out, m)
            and all(x.dtype == np.float32 and x.flags.c_contiguous for x in more))


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None, trans_a: bool = False,
           trans_b: bool = False) -> np.ndarray:
    """``op(a) @ op(b)`` into ``out`` (a new array when None), op transposing when ``trans_a`` / ``trans_b``.

    ``a`` and ``b`` are 2-D and stored as given (``trans_a``: a is (K, N) and its transpose is used). On Numba's
    threads in the "numba" thread mode (see the module doc), with BLAS otherwise.
    """
    n, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    m = b.shape[0] if trans_b else b.shape[1]
    if out is None:
        out = np.empty((n, m), dtype=np.result_type(a, b))
    if not _on_micro_kernels(n, k, m, a, b, out):
        return np.dot(a.T if trans_a else a, b.T if trans_b else b, out=out)
    from tuinet.engine.conv.dense import panel_matmul  # the kernels load on first use (not at import)

    return panel_matmul(a, b, out, trans_a, trans_b)


def matmul_bias(a: np.ndarray, w: np.ndarray, bias: np.ndarray, out: np.ndarray | None = None,
                relu: bool = False) -> np.ndarray:
    """``a @ w + bias`` into ``out`` (a new array when None): a Dense layer's forward pass; with ``relu``
    ``max(a @ w + bias, 0)``, the Dense layer and the ReLU after it. On Numba's threads (as :func:`matmul`) the
    micro-kernel adds the bias as it stores each register tile (the add the separate pass makes) and the ReLU goes
    over each panel's rows once they are written, else the product and then one pass over it
    (:func:`tuinet.engine.kernels.add_bias` or :func:`~tuinet.engine.kernels.bias_relu`): the same numbers either
    way for a given product."""
    n, k = a.shape
    m = w.shape[1]
    if out is None:
        out = np.empty((n, m), dtype=np.result_type(a, w))
    if _on_micro_kernels(n, k, m, a, w, out, bias):
        from tuinet.engine.conv.dense import panel_matmul

        return panel_matmul(a, w, out, False, False, bias=bias, relu=relu)
    np.dot(a, w, out=out)
    if relu:
        K.bias_relu(out, bias)
    else:
        K.add_bias(out, bias)
    return out


def relu_grad_matmul(x: np.ndarray, dy: np.ndarray, y: np.ndarray, dz: np.ndarray, db: np.ndarray,
                     dw: np.ndarray, keep: bool = True) -> np.ndarray:
    """A ReLU's and its Dense layer's backward pass up to the input gradient: ``dz = dy`` where the ReLU's output
    ``y > 0``, else 0; ``db`` = dz's column sums (the bias gradient); ``dw = x^T @ dz``. On Numba's threads the mask
    and the sums are taken as the product packs dz's columns (``keep=False``: dz itself is then not written, for a
    first layer that needs no input gradient), else by :func:`tuinet.engine.kernels.relu_grad_bias` before the
    product: the same numbers either way for a given product."""
    k, n = x.shape
    m = dy.shape[1]
    if _on_micro_kernels(n, k, m, x, dy, dw, y, dz, db) and y.shape == dy.shape == dz.shape:
        from tuinet.engine.conv.dense import panel_matmul

        return panel_matmul(x, dy, dw, True, False, mask=(y, dz, db, keep))
    K.relu_grad_bias(dy, y, dz, db)
    return matmul(x, dz, dw, trans_a=True)
