"""The machine's measured limits: FLOP counts from shapes, FMA kernels that really are vector FMAs, the report.

No figure is asserted (speeds differ from machine to machine); what is checked is the arithmetic, the code the
kernels compile to on whichever CPU runs the test, and that nothing in the environment is changed.
"""

from __future__ import annotations

import os
import platform
import re

import numba
import numpy as np
import pytest

from tuinet.bench import peak
from tuinet.bench.flops import forward_macs, model_training_flops
from tuinet.engine import build_model

X86 = platform.machine().lower() in ("x86_64", "amd64")


def test_mlp_flops_by_hand():
    # 784-256-128-10: forward 2 x (784*256 + 256*128 + 128*10) FLOP; backward twice that, less the input
    # gradient of the first layer (784*256 multiply-adds)
    macs = 784 * 256 + 256 * 128 + 128 * 10
    assert model_training_flops(build_model("mlp", (28, 28, 1), 10)) == 2 * (3 * macs - 784 * 256)


@pytest.mark.parametrize("spec", ["mlp", "conv3x3x4,relu,res4", "conv3x3x4,maxpool2,res8s2,gap"])
def test_the_gemm_ceiling_runs_the_models_training_flop(spec):
    """The GEMM-only ceiling's products (forward, weight and input gradients; convolutions in im2col form) add up
    to the model's training FLOP; each product has the shapes of the layer's own."""
    from tuinet.bench.gemm import GemmCeiling, gemm_flops, gemm_shapes

    m = build_model(spec, (12, 12, 2) if spec != "mlp" else (28, 28, 1), 10)
    assert gemm_flops(gemm_shapes(m, 3)) == 3 * model_training_flops(m)
    ceiling = GemmCeiling(m, 3)
    assert ceiling.covered == 1.0 and ceiling.flops == 3 * model_training_flops(m)
    assert ceiling.run(2) > 0
    for a, b, out in ceiling._calls:
        assert a.shape[1] == b.shape[0] and out.shape == (a.shape[0], b.shape[1]) and np.isfinite(out).all()
    assert GemmCeiling(m, 3, max_elements=1).covered == 0.0


def test_conv_and_residual_flops_by_hand():
    m = build_model("conv3x3x4,relu,res4", (6, 6, 2), 3)
    conv, block = m.layers[0], m.layers[2]
    assert forward_macs(conv) == 4 * 4 * 4 * 3 * 3 * 2  # valid padding: 4x4 outputs, 4 filters, 3x3x2 each
    assert forward_macs(block) == 2 * (4 * 4 * 4 * 3 * 3 * 4)  # two same-padded 3x3 convs, no projection
    dense = m.layers[-1]
    assert model_training_flops(m) == 2 * (3 * forward_macs(conv) - forward_macs(conv)) \
        + 2 * 3 * forward_macs(block) + 2 * 3 * forward_macs(dense)


@pytest.mark.skipif(not X86, reason="x86 instruction names")
def test_numba_fma_loop_is_packed_vector_fmas_at_the_host_width():
    fresh = numba.njit(nogil=True, fastmath=peak.FAST)(peak._fma_chains_128.py_func)  # cached code hides its asm
    for kernel in (peak._fma_chains_128, fresh):
        acc = np.ones(128, np.float32)
        kernel(acc, 3, np.float32(0.5), np.float32(1.0))
        assert np.all(acc == np.float32(1.875))  # 1 -> 1.5 -> 1.75 -> 1.875
    asm = fresh.inspect_asm(fresh.signatures[0])
    packed = re.findall(r"vfmadd\w*ps\s", asm)
    scalar = re.findall(r"vfmadd\w*ss\s", asm)
    assert len(packed) >= 8 and not scalar  # vector FMAs of whatever width LLVM chose; no scalar fallback


def test_ir_fma_kernel_computes_the_loop_at_the_widest_width():
    lanes = peak.vector_width()["vector_bits"] // 32
    fn = peak.ir_fma_kernel(lanes)
    out = np.zeros(12 * lanes, np.float32)
    fn(out.ctypes.data, 3)
    expect = np.float32(1.0)
    for _ in range(3):
        expect = np.float32(expect * np.float32(0.9999998807907104) + np.float32(9.999999974752427e-07))
    np.testing.assert_allclose(out, expect, rtol=1e-6)


def test_measure_machine_reports_everything_and_changes_no_setting(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    m = peak.measure_machine(seconds=0.02)
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell" and "OPENBLAS_L2_SIZE" not in os.environ  # read, never set
    assert m["env"] == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": None}
    for key in ("peak_gflops_1", "peak_gflops", "fma_gflops_1", "fma_gflops", "sgemm_gflops_1", "sgemm_gflops"):
        assert m[key] > 0
    assert m["vector_bits"] in (128, 256, 512) and m["cores"] >= 1
    text = "\n".join(peak.describe_machine(m))
    assert m["cpu"] in text and "OPENBLAS_CORETYPE=Haswell" in text and "OPENBLAS_L2_SIZE=unset" in text
    assert all(b["internal_api"] for b in m["blas"])
