"""Subnormal floats flushed to zero in the threads that train (FTZ and DAZ), as TensorFlow's and XLA's CPU threads do.

A float32 below 1.18e-38 is *subnormal*, and x86 CPUs compute with such numbers in microcode, 50-150 times slower
than with normal ones. Training makes them: a weight that only a penalty or weight decay moves (a pixel MNIST
never lights) shrinks towards zero step after step, and the optimizer's products with it (its gradient 2 * l2 * w,
that squared in Adam's second moment) fall below the normal range. On a 3,000-digit MNIST run with L2 0.001 (Adam,
`python -m benchmarks.denormals`) the `mlp` trained its last 20 of 60 epochs at 54-57k samples/s instead of 85-87k
(the optimizer's step 0.48 instead of 0.17 ms); with them flushed, the steps keep their speed. Flushing changes only results below 1.18e-38, which are 0 then.

The setting is each thread's own (the SSE control register MXCSR: FTZ, bit 15, writes zero for a subnormal result;
DAZ, bit 6, reads a subnormal operand as zero). A thread starts with its creator's setting, and a trainer's Numba
threads are started by the trainer's thread, so :func:`flush_denormals` is called by the trainer's thread before its
first step and by :func:`tuinet.engine.threads.configure_threads` in whatever thread trains (``TUINET_FLUSH_DENORMALS=0``
leaves them alone, to measure the difference). On CPUs other than x86-64 it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading

#: MXCSR's flush-to-zero and denormals-are-zero bits
FTZ_DAZ = 0x8040

_IR = r"""
declare void @llvm.x86.sse.stmxcsr(ptr)
declare void @llvm.x86.sse.ldmxcsr(ptr)

define i32 @tuinet_get_mxcsr() {
  %p = alloca i32, align 4
  call void @llvm.x86.sse.stmxcsr(ptr %p)
  %v = load i32, ptr %p, align 4
  ret i32 %v
}

define void @tuinet_set_mxcsr(i32 %v) {
  %p = alloca i32, align 4
  store i32 %v, ptr %p, align 4
  call void @llvm.x86.sse.ldmxcsr(ptr %p)
  ret void
}
"""

_lock = threading.Lock()
_fns: tuple | None = None  # (engine, get, set) once compiled; () where the CPU is not x86-64


def _mxcsr():
    """The compiled get/set functions of MXCSR, or None on a CPU without it."""
    global _fns
    with _lock:
        if _fns is None:
            if platform.machine().lower() not in ("x86_64", "amd64"):
                _fns = ()
            else:
                import llvmlite.binding as ll

                ll.initialize_native_target()
                ll.initialize_native_asmprinter()
                mod = ll.parse_assembly(_IR)
                mod.verify()
                engine = ll.create_mcjit_compiler(mod, ll.Target.from_default_triple().create_target_machine())
                engine.finalize_object()
                get = ctypes.CFUNCTYPE(ctypes.c_uint32)(engine.get_function_address("tuinet_get_mxcsr"))
                put = ctypes.CFUNCTYPE(None, ctypes.c_uint32)(engine.get_function_address("tuinet_set_mxcsr"))
                _fns = (engine, get, put)
    return _fns or None


def flush_denormals(on: bool | None = None) -> bool:
    """Flush subnormal floats to zero (``on``) or compute with them (``off``) in the calling thread, and in the
    threads it starts from now on; ``None``: flush unless ``TUINET_FLUSH_DENORMALS=0`` (for measuring what it
    saves). Returns False where the CPU has no such setting (not x86-64)."""
    if on is None:
        on = os.environ.get("TUINET_FLUSH_DENORMALS", "1") != "0"
    fns = _mxcsr()
    if fns is None:
        return False
    _, get, put = fns
    now = get()
    wanted = now | FTZ_DAZ if on else now & ~FTZ_DAZ
    if wanted != now:
        put(wanted)
    return True


def denormals_flushed() -> bool | None:
    """Whether the calling thread flushes subnormal floats to zero (None where the CPU has no such setting)."""
    fns = _mxcsr()
    return None if fns is None else bool(fns[1]() & FTZ_DAZ == FTZ_DAZ)
