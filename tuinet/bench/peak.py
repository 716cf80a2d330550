"""The machine's measured limits, so every benchmark can say how far from them it runs.

Two figures, measured at the start of a benchmark rather than taken from a datasheet:

* the FMA peak: loops of independent vector fused multiply-adds (8-16 accumulators kept in registers), once at the
  CPU's widest vector width (LLVM IR naming the width) and once as a small Numba kernel compiled like every tuinet
  kernel (512-bit vectors on AVX-512 CPUs: see ``runtime.configure_vector_width``), on one thread and on every
  core at once;
* the sgemm rate: a large single-precision matrix product through the same BLAS the dense layers call (``np.dot``
  inside ``@njit``, SciPy's OpenBLAS), on one thread and on every core.

It also says what ran: the CPU model, the vector width LLVM compiles for, the BLAS kernel threadpoolctl reports
(``internal_api``, ``architecture``, threads) and the ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` settings found
in the environment (OpenBLAS reads them when it loads; this module never changes them).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
from numba import njit

from tuinet.engine.threads import cores

FAST = {"reassoc", "contract", "arcp", "nsz"}
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


@njit(cache=True, nogil=True, fastmath=FAST)
def _fma_chains_64(acc, n, mul, add):
    """``n`` rounds of ``acc = acc * mul + add`` over 64 floats: 8 ymm or 4 zmm independent FMA chains."""
    for _ in range(n):
        for j in range(64):
            acc[j] = acc[j] * mul + add


@njit(cache=True, nogil=True, fastmath=FAST)
def _fma_chains_128(acc, n, mul, add):
    """The same over 128 floats: 16 ymm or 8 zmm chains (enough to cover the FMA latency on either width)."""
    for _ in range(n):
        for j in range(128):
            acc[j] = acc[j] * mul + add


_FMA_KERNELS = ((_fma_chains_64, 64), (_fma_chains_128, 128))


def _fma_ir(lanes: int, chains: int = 12) -> str:
    """LLVM IR of a loop of ``chains`` independent ``<lanes x float>`` FMAs, stored to ``out`` at the end."""
    vt = f"<{lanes} x float>"

    def splat(value: str) -> str:
        return "<" + ", ".join([f"float {value}"] * lanes) + ">"

    mul, add, one = splat("0x3FEFFFFFC0000000"), splat("0x3EB0C6F7A0000000"), splat("1.0")
    phis = "\n".join(f"  %a{k} = phi {vt} [{one}, %entry], [%b{k}, %loop]" for k in range(chains))
    fmas = "\n".join(f"  %b{k} = call {vt} @llvm.fma.v{lanes}f32({vt} %a{k}, {vt} {mul}, {vt} {add})"
                     for k in range(chains))
    stores = "\n".join(f"  %p{k} = getelementptr {vt}, ptr %out, i64 {k}\n  store {vt} %b{k}, ptr %p{k}, align 4"
                       for k in range(chains))
    return (f"declare {vt} @llvm.fma.v{lanes}f32({vt}, {vt}, {vt})\n"
            f"define void @fma_loop(ptr %out, i64 %n) {{\nentry:\n  br label %loop\nloop:\n"
            f"  %i = phi i64 [0, %entry], [%i.next, %loop]\n{phis}\n{fmas}\n  %i.next = add i64 %i, 1\n"
            f"  %done = icmp sge i64 %i.next, %n\n  br i1 %done, label %exit, label %loop\nexit:\n{stores}\n"
            f"  ret void\n}}\n")


_IR_KERNELS: dict[int, tuple] = {}  # lanes -> (engine, function); the engine must outlive the function


def hardware_fma_peak(lanes: int, threads: int = 1, seconds: float = 0.3, rounds: int = 1_000_000) -> float:
    """GFLOP/s of FMAs on ``lanes``-wide vectors (16: 512-bit), compiled by LLVM directly for this CPU.

    This loop names its width explicitly, so it measures what the FMA units can do (the figure sgemm's AVX-512
    kernel aims at), whatever width LLVM would pick for a Numba kernel.
    """
    fn = ir_fma_kernel(lanes)
    outs = [np.zeros(12 * lanes, np.float32) for _ in range(threads)]  # ctypes releases the GIL during the call
    return _best_gflops(lambda: _on_threads(lambda i: fn(outs[i].ctypes.data, rounds), threads),
                        2.0 * 12 * lanes * rounds * threads, seconds)


def ir_fma_kernel(lanes: int):
    """The compiled FMA loop of :func:`hardware_fma_peak`: ``fn(out_address, n)`` writes its 12 x ``lanes`` floats."""
    import ctypes

    import llvmlite.binding as ll

    if lanes not in _IR_KERNELS:
        ll.initialize_native_target()
        ll.initialize_native_asmprinter()
        tm = ll.Target.from_default_triple().create_target_machine(
            cpu=ll.get_host_cpu_name(), features=ll.get_host_cpu_features().flatten(), opt=2)
        mod = ll.parse_assembly(_fma_ir(lanes))
        mod.verify()
        engine = ll.create_mcjit_compiler(mod, tm)  # owns the target machine
        engine.finalize_object()
        fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(engine.get_function_address("fma_loop"))
        _IR_KERNELS[lanes] = (engine, fn)
    return _IR_KERNELS[lanes][1]


@njit(cache=True, nogil=True)
def _sgemm(a, b):
    return np.dot(a, b)


def _best_gflops(fn, flops: float, seconds: float) -> float:
    """Highest GFLOP/s of ``fn`` over repeats lasting about ``seconds`` in all (the best run is the least disturbed)."""
    fn()
    best, t_end = 0.0, time.perf_counter() + seconds
    while True:
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best = max(best, flops / dt / 1e9)
        if time.perf_counter() > t_end:
            return best


def _on_threads(fn, threads: int) -> None:
    """Run ``fn(i)`` for i < ``threads`` on that many Python threads at once (the kernels release the GIL)."""
    if threads == 1:
        fn(0)
        return
    ts = [threading.Thread(target=fn, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def fma_peak(threads: int = 1, seconds: float = 0.3, rounds: int = 1_000_000) -> float:
    """GFLOP/s of independent vector FMAs on ``threads`` threads (2 FLOP per FMA lane; the best kernel width)."""
    best = 0.0
    mul, add = np.float32(0.999999), np.float32(1e-6)
    for kernel, width in _FMA_KERNELS:
        accs = [np.ones(width, np.float32) for _ in range(threads)]

        def run(kernel=kernel, accs=accs):
            _on_threads(lambda i: kernel(accs[i], rounds, mul, add), threads)

        best = max(best, _best_gflops(run, 2.0 * width * rounds * threads, seconds))
    return best


def sgemm_rate(threads: int, n: int = 1536, seconds: float = 0.5) -> float:
    """GFLOP/s of an ``n`` x ``n`` float32 matrix product through the engine's BLAS with ``threads`` threads."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        return _best_gflops(lambda: _sgemm(a, b), 2.0 * n ** 3, seconds)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def vector_width() -> dict[str, Any]:
    """What LLVM compiles Numba kernels for: the CPU name and the widest float vector (bits)."""
    import llvmlite.binding as ll

    features = ll.get_host_cpu_features()
    from tuinet.engine import runtime

    bits = 512 if features.get("avx512f") else 256 if features.get("avx2") or features.get("avx") else 128
    kernel_bits = 512 if runtime.wide_vectors() else min(bits, 256)
    return {"llvm_cpu": ll.get_host_cpu_name(), "vector_bits": bits, "kernel_vector_bits": kernel_bits,
            "fma": bool(features.get("fma"))}


def blas_info() -> list[dict[str, Any]]:
    """threadpoolctl's view of the loaded BLAS libraries: kernel (architecture), API, version, threads."""
    from threadpoolctl import threadpool_info

    _sgemm(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32))  # loads the BLAS the engine uses
    return [{k: d.get(k) for k in ("internal_api", "architecture", "version", "num_threads", "prefix")}
            for d in threadpool_info() if d.get("user_api") == "blas"]


def measure_machine(seconds: float = 0.3) -> dict[str, Any]:
    """Everything a benchmark report starts with: CPU, vector width, BLAS kernel, settings, measured peaks."""
    n = cores()
    out: dict[str, Any] = {"cpu": cpu_model(), "cores": n, **vector_width(), "blas": blas_info(),
                           "env": {k: os.environ.get(k) for k in OPENBLAS_VARS}}
    lanes = out["vector_bits"] // 32
    out["peak_gflops_1"] = hardware_fma_peak(lanes, 1, seconds)
    out["peak_gflops"] = hardware_fma_peak(lanes, n, seconds) if n > 1 else out["peak_gflops_1"]
    out["fma_gflops_1"] = fma_peak(1, seconds)
    out["fma_gflops"] = fma_peak(n, seconds) if n > 1 else out["fma_gflops_1"]
    out["sgemm_gflops_1"] = sgemm_rate(1, seconds=seconds)
    out["sgemm_gflops"] = sgemm_rate(n, seconds=seconds) if n > 1 else out["sgemm_gflops_1"]
    return out


def describe_machine(m: dict[str, Any]) -> list[str]:
    """The report lines for :func:`measure_machine`'s result."""
    blas = "; ".join(f"{b['internal_api']} {b['version']} kernel {b['architecture']}, {b['num_threads']} threads"
                     for b in m["blas"]) or "none found"
    env = ", ".join(f"{k}={'unset' if v is None else v}" for k, v in m["env"].items())
    return [
        f"CPU: {m['cpu']}, {m['cores']} cores; LLVM target {m['llvm_cpu']}, {m['vector_bits']}-bit vectors"
        f"{', FMA' if m['fma'] else ''}; tuinet's kernels use {m.get('kernel_vector_bits', m['vector_bits'])}-bit",
        f"BLAS: {blas}; {env}",
        f"measured peak GFLOP/s (1 thread / {m['cores']}): {m['vector_bits']}-bit FMA loop "
        f"{m['peak_gflops_1']:.0f} / {m['peak_gflops']:.0f}; Numba-compiled FMA loop {m['fma_gflops_1']:.0f} / "
        f"{m['fma_gflops']:.0f}; sgemm {m['sgemm_gflops_1']:.0f} / {m['sgemm_gflops']:.0f}",
    ]
