"""How the Conv2D kernels are compiled: the tile shapes for the vector width and two compiler settings.

The micro-kernels (:mod:`tuinet.engine.conv.microkernels`) are emitted as LLVM IR with explicit vector types,
R x W tiles with R chosen here for the vector width Numba compiles for (``runtime.wide_vectors()``: 512-bit on
AVX-512 hosts, 256-bit otherwise). The settings, specific to the convolution kernels:

* SLP vectorization is off in Numba by default (``NUMBA_SLP_VECTORIZE=0``). The conv kernels are compiled by
  :class:`SLPCompiler` (``conv_jit``), which turns it on for the duration of their own compilation
  only (whatever they compile along, such as the helpers they call, gets it too): the copies rely on it. Cached
  machine code keeps it, so loading from the cache needs nothing.
* ``_panel_gemm`` and ``_panel_gemm_taps`` are compiled ``noinline`` (:class:`SLPNoInlineCompiler`): the conv
  kernels call them (once per sample and GEMM) instead of inlining a copy at each call site.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numba
from numba.core import lowering
from numba.core.compiler import Compiler
from numba.core.compiler_machinery import register_pass
from numba.core.typed_passes import NativeLowering

from tuinet.engine import runtime
from tuinet.engine.kernels import FASTMATH, cached

# Panel width -> rows per tile. With 256-bit vectors (16 registers): 6 x 32 as two passes of 6 x 16 (12 ymm
# accumulators each, + 2 of B + 1 broadcast; microkernels.column_groups), 3 x 24 (9), 6 x 16 (12) and 7 x 8 (7: with
# 8 rows LLVM's schedule kept one accumulator on the stack, 44 against 81 GFLOP/s on one Zen 3 core). With
# 512-bit vectors (32 registers; runtime.wide_vectors()): 12 zmm for 32 columns, 6 zmm + 6 ymm for 24, 12 zmm
# for 16 and 8 ymm for 8: an FMA has 4 cycles of latency and two issue every cycle, so a tile needs at least
# 8 independent accumulators to keep both FMA units busy.
_ROWS_256 = {32: 6, 24: 3, 16: 6, 8: 7}
_ROWS_512 = {32: 6, 24: 6, 16: 12, 8: 8}
# the 48-wide tiles of the transposed weight gradient (ConvPlan.tdw; the height must divide 8 and 16): 8 x 3 zmm, or
# 4 x 48 as two passes of 4 x 24 ymm (12 accumulators each)
_ROWS48_256, _ROWS48_512 = 4, 8
LANES = 16 if runtime.wide_vectors() else 8  #: floats per vector register the micro-kernels use
_MK_ROWS = _ROWS_512 if LANES == 16 else _ROWS_256
ROWS48 = _ROWS48_512 if LANES == 16 else _ROWS48_256


@contextmanager
def slp_vectorize():
    """Enable LLVM's SLP vectorizer for whatever Numba compiles inside the block.

    Numba reads ``numba.config.SLP_VECTORIZE`` when it builds its optimization passes, and re-reads its whole
    configuration from the ``NUMBA_*`` environment variables at the start of each compilation whenever they
    changed, so both the variable and ``numba.config`` are set, and both restored afterwards.
    """
    old_env = os.environ.get("NUMBA_SLP_VECTORIZE")
    old = numba.config.SLP_VECTORIZE
    os.environ["NUMBA_SLP_VECTORIZE"] = "1"
    numba.config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("NUMBA_SLP_VECTORIZE", None)
        else:
            os.environ["NUMBA_SLP_VECTORIZE"] = old_env
        numba.config.SLP_VECTORIZE = old


class SLPCompiler(Compiler):
    """Numba's default compiler pipeline, run with the SLP vectorizer on (see :func:`slp_vectorize`).

    A dispatcher built with ``pipeline_class=SLPCompiler`` compiles each of its signatures this way; the
    setting holds only while that compilation runs (Numba compiles under its global compiler lock, so no other
    compilation sees it). Loading a signature from the cache does not compile and needs no setting.
    """

    def compile_extra(self, func):
        with slp_vectorize():
            return super().compile_extra(func)


class _NoInlineLower(lowering.Lower):
    """Numba's lowering, with LLVM's ``noinline`` attribute on the function it emits."""

    def pre_lower(self):
        super().pre_lower()
        self.builder.function.attributes.add("noinline")


@register_pass(mutates_CFG=True, analysis_only=False)
class NoInlineNativeLowering(NativeLowering):
    """Numba's native lowering pass, emitting the function as ``noinline``."""

    _name = "tuinet_noinline_native_lowering"

    @property
    def lowering_class(self):
        return _NoInlineLower


class SLPNoInlineCompiler(SLPCompiler):
    """:class:`SLPCompiler` for a kernel that its callers call instead of inlining.

    Numba links a callee's optimized IR into every caller, where LLVM inlines it at each call site and optimizes
    and emits it again: ``_panel_gemm``, with its four micro-kernels inlined, was built again at each of its three
    call sites in ``conv2d_forward`` and with ``_panel_gemm_taps`` at three in ``conv2d_backward``, which made most
    of the convolution kernels' cold compile. With ``noinline`` each caller keeps one call (made once per sample and
    GEMM, so its cost is nothing next to the GEMM) and the callee's body is emitted once per caller module.
    """

    def define_pipelines(self):
        pipelines = super().define_pipelines()
        for pm in pipelines:
            pm.passes[:] = [(NoInlineNativeLowering if cls is NativeLowering else cls, desc)
                            for cls, desc in pm.passes]
            pm.finalize()
        return pipelines


def conv_jit(parallel: bool = False, noinline: bool = False):
    """:func:`tuinet.engine.kernels.jit` for the convolution kernels: compiled with the SLP vectorizer on.

    ``noinline``: callers call the kernel instead of inlining it (:class:`SLPNoInlineCompiler`).
    """
    return cached(nogil=True, fastmath=FASTMATH, parallel=parallel, error_model="numpy",
                  pipeline_class=SLPNoInlineCompiler if noinline else SLPCompiler)
