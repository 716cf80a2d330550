"""What the trainer's first step reports while Numba compiles: the kernel's name, compiles only, this thread only."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
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


class _Features:
    def __init__(self, text):
        self.text = text

    def flatten(self):
        return self.text


def test_vector_width_turns_off_llvms_256_bit_preference_only_on_avx512_hosts(monkeypatch):
    import llvmlite.binding as ll

    from tuinet.engine.runtime import configure_vector_width

    for var in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES"):
        # setenv first, so that monkeypatch records the variable's state before the test (a delenv of an unset
        # variable records nothing: the AVX-512 string set below then outlived the test and every later child
        # process compiled AVX-512 code, killed by SIGILL on an AVX2 host)
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    monkeypatch.setattr(ll, "get_host_cpu_features", lambda: _Features("+avx,+avx2,+fma,+avx512f,+avx512bw"))
    assert configure_vector_width() is True
    assert __import__("os").environ["NUMBA_CPU_FEATURES"] == "+avx,+avx2,+fma,+avx512f,+avx512bw,-prefer-256-bit"
    monkeypatch.delenv("NUMBA_CPU_FEATURES")
    monkeypatch.setattr(ll, "get_host_cpu_features", lambda: _Features("+avx,+avx2,+fma,-avx512f"))
    assert configure_vector_width() is False
    assert "NUMBA_CPU_FEATURES" not in __import__("os").environ  # an AVX2 host: Numba's defaults untouched


def test_vector_width_keeps_what_the_user_set(monkeypatch):
    from tuinet.engine.runtime import configure_vector_width

    monkeypatch.setenv("NUMBA_CPU_FEATURES", "+avx,+avx2,+fma,+avx512f")
    assert configure_vector_width() is False  # the user's string, unchanged: LLVM keeps its 256-bit preference
    assert __import__("os").environ["NUMBA_CPU_FEATURES"] == "+avx,+avx2,+fma,+avx512f"
    monkeypatch.setenv("NUMBA_CPU_FEATURES", "+avx2,+avx512f,-prefer-256-bit")
    assert configure_vector_width() is True
    monkeypatch.delenv("NUMBA_CPU_FEATURES")
    monkeypatch.setenv("NUMBA_CPU_NAME", "haswell")
    assert configure_vector_width() is False and "NUMBA_CPU_FEATURES" not in __import__("os").environ


_FAULTS = """
import resource
import numpy as np
from tuinet.engine import runtime  # noqa: F401  (configures the allocator)
def step():
    arrays = [np.ones((64, 28, 28, 16), np.float32) * 2 for _ in range(6)]  # 3.2 MB each, freed at the end
    return sum(float(a[0, 0, 0, 0]) for a in arrays)
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_allocator_keeps_freed_activation_memory_for_the_next_step():
    """A step's freed arrays are reused by the next one, not faulted in afresh (glibc's heap kept)."""
    import os
    import platform
    import subprocess
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        import pytest

        pytest.skip("the allocator setting is for glibc on Linux")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    def faults(tuinet=True, **extra):
        code = _FAULTS if tuinet else _FAULTS.replace("from tuinet.engine import runtime", "import os as runtime")
        out = subprocess.run([sys.executable, "-c", code], env=dict(env, **extra), capture_output=True,
                             text=True, check=True).stdout.split()
        return int(out[-1])

    pages = 5 * 6 * 64 * 28 * 28 * 16 * 4 // 4096  # every array of 5 steps, if each were fresh memory
    assert faults(tuinet=False) > pages // 2  # glibc's defaults: the heap's top is given back after each step
    assert faults() < pages // 20  # with tuinet's setting: reused
    assert faults(MALLOC_TRIM_THRESHOLD_="0") > pages // 2  # a user's MALLOC_* setting is left as it is


_STEP = """
import sys
import numpy as np
from numba.core import event
compiled = []
class _L(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)
    def on_end(self, ev):
        pass
event.register("numba:compile", _L())
import numba
numba.njit(lambda v: v + 1)(1)  # never cached: proves the listener sees a compile
from tuinet.engine import build_model, make_optimizer
shape = tuple(int(d) for d in sys.argv[2].split("x"))
model = build_model(sys.argv[1], shape, 10)
opt = make_optimizer("adam", model.params)
rng = np.random.default_rng(0)
model.train_step(rng.random((32,) + shape, dtype=np.float32), rng.integers(0, 10, 32), opt)
print(",".join(compiled) or "-")
"""


@pytest.mark.slow
@pytest.mark.parametrize("spec,shape", [("mlp", "784"), ("conv3x3x8,relu,maxpool2,conv3x3x8s2,relu,dense10", "10x10x1")])
def test_a_warm_process_compiles_nothing_for_a_training_step(spec, shape):
    """With the kernels in Numba's cache, a new process's first step compiles nothing, Numba's own helpers
    included (a typed list built from Python compiled Numba's list code in every process: 0.4 s of each start),
    for a dense model and a convolutional one (whose kernels once held a dispatcher in a closure cell, which
    entered Numba's cache key with its per-process id: every process compiled them again).

    The processes share the suite's own cache (an empty one would make this test compile every conv kernel
    once more): the first fills in whatever this step needs, the second must then compile only the script's
    one uncached function (the proof that its compile listener works)."""
    import subprocess
    import sys

    runs = [subprocess.run([sys.executable, "-c", _STEP, spec, shape], capture_output=True, text=True,
                           check=True).stdout.split()[-1] for _ in range(2)]
    assert runs[0].split(",")[0] == "<lambda>"  # the listener saw the uncached function compile first
    assert runs[1] == "<lambda>", runs[1]


# --- the kernels' cache follows the whole engine's sources ------------------------------------------------------

_DECO = ("from numba import njit\nfrom tuinet.engine.runtime import cache_with_tree\n\n\n"
         "def cached(fn):\n    return cache_with_tree(njit(fn), __file__.rsplit('/', 1)[0])\n")

_RUN = """
import sys
sys.path.insert(0, sys.argv[1])
from pkg.caller import kernel
print(kernel(), sum(kernel.stats.cache_hits.values()), sum(kernel.stats.cache_misses.values()))
"""


def test_a_cached_kernel_is_recompiled_when_a_kernel_it_calls_changes_in_another_file(tmp_path):
    """A kernel that calls a kernel from another file: after that file changes, the next process must run the new
    code. Numba's own cache checks only the caller's file and runs the old code from the cache (with
    ``njit(cache=True)`` this test gets 101 after the change: the crash of an update that changed only the conv
    tiles' file); :func:`cache_with_tree` recompiles, then loads from the cache again."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "deco.py").write_text(_DECO)
    (pkg / "caller.py").write_text("from pkg.deco import cached\nfrom pkg.helper import helper\n\n\n"
                                   "@cached\ndef kernel():\n    return helper() + 100\n")

    def write_helper(value: int) -> None:
        (pkg / "helper.py").write_text(f"from pkg.deco import cached\n\n\n@cached\ndef helper():\n    return {value}\n")

    def run() -> tuple[int, int, int]:
        out = subprocess.run([sys.executable, "-c", _RUN, str(tmp_path)], capture_output=True, text=True,
                             timeout=300, env=dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache")))
        assert out.returncode == 0, out.stderr[-2000:]
        value, hits, misses = (int(v) for v in out.stdout.split())
        return value, hits, misses

    write_helper(1)
    assert run() == (101, 0, 1)  # compiled and saved
    assert run() == (101, 1, 0)  # loaded from the cache
    write_helper(2)
    assert run() == (102, 0, 1)  # the caller recompiled with the new helper
    assert run() == (102, 1, 0)


def test_every_engine_kernel_carries_the_engine_sources_stamp():
    """Every kernel of the engine (dense, optimizers, norms, convolutions) is cached with the whole engine's stamp,
    so no kernel can outlive a change to the code it was generated from."""
    import numba

    import tuinet.engine.conv.dense  # noqa: F401
    import tuinet.engine.conv.kernels  # noqa: F401
    import tuinet.engine.norm  # noqa: F401
    import tuinet.engine.optim  # noqa: F401
    from tuinet.engine import runtime

    stamp = runtime.source_tree_stamp(runtime.ENGINE_DIR)
    kernels = [obj for name, mod in list(sys.modules.items()) if name.startswith("tuinet.engine")
               for obj in vars(mod).values()
               if isinstance(obj, numba.core.registry.CPUDispatcher) and obj.py_func.__module__.startswith("tuinet")]
    assert len(kernels) > 50
    unstamped = [k.py_func.__qualname__ for k in kernels
                 if k._cache._impl.locator.get_source_stamp()[1:] != (stamp,)]
    assert unstamped == []


def test_arrays_the_kernels_allocate_are_aligned_to_a_cache_line():
    """Numba aligns the arrays a kernel allocates to 32 bytes by default; the engine asks for 64 (a cache line, one
    512-bit vector): with 32, every 512-bit load and store of half the work buffers spanned two cache lines, and
    the thread that got them ran its part of a pass 10-25% slower than the other thread."""
    import numba

    from tuinet.engine import runtime

    runtime.configure()

    @numba.njit
    def alloc(n):
        return np.empty(n, np.float32)

    addresses = [alloc(n).ctypes.data for n in (1, 7, 100, 1000, 4096, 25000, 98304, 300000) for _ in range(3)]
    assert [a % 64 for a in addresses] == [0] * len(addresses)
