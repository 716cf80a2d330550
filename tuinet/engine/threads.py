"""Who gets the cores: BLAS threads or Numba threads, chosen per model.

On two cores, OpenBLAS worker threads and Numba's OpenMP threads both spin while they wait for work; when both
pools have two threads, each steals the other's core and a training step becomes 20-50x slower (measured:
1,200 vs 63,000 samples/s for the mlp preset at batch 64). So only one pool is ever wider than one thread:

* dense-only models spend their time in sgemm: BLAS gets every core, Numba kernels run on one thread;
* models with convolutions spend it in Numba's direct conv kernels: Numba gets every core, BLAS one thread.
"""

from __future__ import annotations

import os

import numba

from tuinet import _runtime


def cores() -> int:
    """Cores available to this process (``TUINET_THREADS`` overrides)."""
    env = os.environ.get("TUINET_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def uses_numba_parallel(model) -> bool:
    """True when the model has layers whose heavy work runs in parallel Numba kernels (convolutions)."""
    return any(getattr(layer, "numba_parallel", False) for layer in getattr(model, "all_layers", model.layers))


def configure_threads(model=None, mode: str | None = None) -> str:
    """Give the cores to BLAS or to Numba for ``model`` (call from the thread that trains); returns the mode.

    Args:
        model: the model to train; convolutional models give the cores to Numba.
        mode: force ``"blas"`` or ``"numba"`` (``TUINET_THREAD_MODE`` also forces it).
    """
    mode = mode or os.environ.get("TUINET_THREAD_MODE")
    if mode is None:
        mode = "numba" if model is not None and uses_numba_parallel(model) else "blas"
    n = cores()
    if mode == "numba":
        _runtime.limit_blas_threads(1)
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    elif mode == "blas":
        _runtime.limit_blas_threads(n)
        numba.set_num_threads(1)
    else:
        raise ValueError(f"thread mode must be 'blas' or 'numba', got {mode!r}")
    return mode
