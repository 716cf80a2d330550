"""Subnormal floats flushed to zero in the threads that train (tuinet/engine/fpmode.py).

Each check runs in a thread of its own: the setting belongs to a thread and to the threads it starts.
"""

from __future__ import annotations

import platform
import threading

import numba
import numpy as np
import pytest
from numba import njit, prange

from tuinet.engine.fpmode import denormals_flushed, flush_denormals
from tuinet.engine.threads import configure_threads
from tuinet.training.config import TrainConfig
from tuinet.training.trainer import Trainer

X86 = platform.machine().lower() in ("x86_64", "amd64")
#: 1e-40, below float32's smallest normal number (1.18e-38), made from its bits: converting 1e-40 to float32 in a
#: thread that flushes subnormal numbers would give 0
SUBNORMAL = np.array([0x116C2], np.uint32).view(np.float32)[0]


def bits(x) -> int | np.ndarray:
    """A float32's (or an array's) bits: compared as integers, a subnormal number is not read as zero in a thread
    that flushes them (pytest's, after a test that trained in it)."""
    return np.asarray(x, np.float32).view(np.uint32)[()] if np.ndim(x) == 0 else np.asarray(x).view(np.uint32)


def in_thread(fn):
    """``fn()``'s result, computed in a new thread (its exception raised here)."""
    out: list = []

    def body():
        try:
            out.append(("ok", fn()))
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            out.append(("error", e))

    t = threading.Thread(target=body)
    t.start()
    t.join(120)
    kind, value = out[0]
    if kind == "error":
        raise value
    return value


@njit(parallel=True)
def _products(a, b, out):
    for i in prange(out.size):
        out[i] = a[i] * b[i]


def products_on_numba_threads():
    """1e-20 * 1e-20 (a subnormal result) and 1e-40 * 1 (a subnormal operand), computed across Numba's threads."""
    n = 4096
    a = np.full(n, 1e-20, np.float32)
    a[1::2] = SUBNORMAL
    b = np.full(n, 1e-20, np.float32)
    b[1::2] = 1.0
    out = np.empty(n, np.float32)
    _products(a, b, out)
    return out


def test_elsewhere_than_x86_it_says_it_cannot():
    if X86:
        assert in_thread(lambda: flush_denormals(True)) is True
    else:
        assert in_thread(lambda: (flush_denormals(True), denormals_flushed())) == (False, None)


@pytest.mark.skipif(not X86, reason="the flush-to-zero setting is x86's MXCSR")
def test_a_thread_computes_subnormal_results_as_zero_once_it_flushes():
    def check():
        flush_denormals(False)
        off = (bits(np.float32(1e-20) * np.float32(1e-20)), bits(SUBNORMAL * np.float32(1.0)), denormals_flushed())
        flush_denormals(True)
        on = (bits(np.float32(1e-20) * np.float32(1e-20)), bits(SUBNORMAL * np.float32(1.0)), denormals_flushed())
        return off, on

    off, on = in_thread(check)
    assert off[0] != 0 and off[1] == bits(SUBNORMAL) == 0x116C2 and off[2] is False
    assert on == (0, 0, True)


@pytest.mark.skipif(not X86, reason="the flush-to-zero setting is x86's MXCSR")
def test_numba_threads_started_by_a_thread_that_configured_them_flush(monkeypatch):
    def check():
        configure_threads(mode="numba")
        return denormals_flushed(), products_on_numba_threads()

    flushed, out = in_thread(check)
    assert flushed
    if numba.threading_layer() == "omp":
        # OpenMP (Numba's layer where libgomp is found) starts a pool of threads for each thread that launches a
        # parallel kernel, from it: every thread's products, subnormal results and operands alike, are 0
        assert not np.any(bits(out))
    else:  # one pool for the process, started by whichever thread came first: at least the calling thread's part
        assert not np.all(bits(out))

    monkeypatch.setenv("TUINET_FLUSH_DENORMALS", "0")  # the switch to measure what it saves: left alone

    def check_off():
        flush_denormals(False)
        configure_threads(mode="numba")
        return denormals_flushed(), products_on_numba_threads()

    flushed, out = in_thread(check_off)
    assert not flushed and (numba.threading_layer() != "omp" or np.all(bits(out) != 0))


@pytest.mark.skipif(not X86, reason="the flush-to-zero setting is x86's MXCSR")
@pytest.mark.parametrize("setting, expected", [(None, True), ("0", False)])
def test_the_trainers_thread_flushes_before_its_first_step(monkeypatch, setting, expected):
    if setting is not None:
        monkeypatch.setenv("TUINET_FLUSH_DENORMALS", setting)
    seen: list = []

    def train():
        flush_denormals(not expected)  # the thread starts the other way round
        cfg = TrainConfig(dataset="digits", model="16", epochs=1, batch_size=64, log_every=1)
        t = Trainer(cfg, run_dir=False, emit=lambda e: seen.append(denormals_flushed()) if e["event"] == "step"
                    else None)
        return t.run()["event"]

    assert in_thread(train) == "finished"
    assert seen and all(s is expected for s in seen)  # the events of its steps come from its own thread
