"""What the trainer's first step reports while Numba compiles: the kernel's name, compiles only, this thread only."""

from __future__ import annotations

import threading

import numpy as np
from numba import njit

from tuinet.engine.runtime import watch_compiles


def test_watch_compiles_names_each_kernel_compiled_in_this_thread():
    @njit
    def inner_kernel(x):
        return x * np.float32(2)

    @njit
    def outer_kernel(x):
        return inner_kernel(x) + np.float32(1)

    seen: list[tuple[str, int]] = []
    with watch_compiles(lambda name, done: seen.append((name, done)), prefix=__name__):
        assert outer_kernel(np.float32(3)) == 7
        outer_kernel(np.float32(4))  # compiled already: no report
        other = threading.Thread(target=lambda: inner_kernel(np.int64(1)))  # another thread's compile: not ours
        other.start()
        other.join()
    names = [name.rsplit(".", 1)[-1] for name, _ in seen]
    assert names == ["outer_kernel", "inner_kernel"]  # the caller starts, the callee compiles inside it
    assert seen[0][1] == 0
    outer_kernel(np.float64(1))  # after the block: nothing is reported
    assert len(seen) == 2
    with watch_compiles(lambda name, done: seen.append((name, done)), prefix="tuinet"):
        outer_kernel(np.int32(1))  # a kernel outside the package (a test's, or Numba's own overloads): not reported
    assert len(seen) == 2
