"""`tuinet bench` runs end to end and reports what it promises (numbers, not pass/fail timings)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tuinet.cli import main


@pytest.mark.parametrize("model", ["mlp", "conv3x3x4,maxpool2,relu"])
def test_bench_json_reports_samples_per_second(model):
    r = CliRunner().invoke(main, ["bench", "--model", model, "--batch-size", "8", "--steps", "3", "--rounds", "2",
                                  "--no-torch", "--no-peak", "--json"])  # the peak: the test below
    assert r.exit_code == 0, r.output
    out = json.loads(r.output.strip().splitlines()[-1])
    assert out["samples_per_second"] > 0 and out["tuinet_samples_per_second"] == out["samples_per_second"]
    assert out["batch_size"] == 8 and out["steps"] == 3 and out["params"] > 0
    if model != "mlp":
        assert [row["name"] for row in out["conv_layers"]][0].startswith("Conv2D")
        assert out["layer_rounds"] == 2  # the layers are timed every round, like the steps
        assert out["convolutions"] == 1 and out["winograd_layers"] == []  # 4 channels, fused with its pooling
    else:
        assert "conv_layers" not in out and "layer_rounds" not in out and "convolutions" not in out


def test_layer_rows_are_the_median_over_rounds_of_each_figure():
    from tuinet.bench.throughput import median_layer_rows

    def row(name, f, b):
        return {"name": name, "layer": name, "forward_ms": f, "backward_ms": b, "forward_backward_ms": f + b}

    rounds = [[row("conv", 1.0, 2.0), row("pool", 0.1, 0.1)],
              [row("conv", 9.0, 9.0), row("pool", 0.2, 0.3)],  # a round slowed by other work on the machine
              [row("conv", 1.2, 2.2), row("pool", 0.3, 0.2)]]
    conv, pool = median_layer_rows(rounds)
    assert conv == row("conv", 1.2, 2.2) and conv["forward_backward_ms"] == pytest.approx(3.4)
    assert pool["name"] == "pool" and pool["forward_ms"] == 0.2 and pool["backward_ms"] == 0.2
    assert pool["forward_backward_ms"] == 0.5  # each figure its own median: of 0.2, 0.5 and 0.5


def test_bench_bad_model_is_one_line():
    r = CliRunner().invoke(main, ["bench", "--model", "dense8,wobble", "--no-torch"])
    assert r.exit_code == 1 and "cannot read 'wobble'" in r.output and "Traceback" not in r.output


def test_bench_reports_flops_and_the_measured_peak_unless_told_not_to(monkeypatch):
    args = ["bench", "--model", "mlp", "--batch-size", "8", "--steps", "3", "--rounds", "1", "--no-torch", "--json"]
    out = out_peak = json.loads(CliRunner().invoke(main, args).output.strip().splitlines()[-1])
    assert out["mflop_per_sample"] == pytest.approx(1.007104)  # 784-256-128-10, see tests/bench/test_peak.py
    assert out["tuinet_gflops"] == pytest.approx(out["samples_per_second"] * 1.007104e-3)
    assert out["machine"]["sgemm_gflops"] > 0
    assert out["tuinet_share_of_peak"] == pytest.approx(out["tuinet_gflops"] / out["machine"]["peak_gflops"])
    # the GEMM-only ceiling: the model's products alone, timed in the same rounds
    assert out["gemm_ceiling_gflops"] > 0 and out["gemm_ceiling_covered"] == 1.0
    assert out["tuinet_share_of_gemm_ceiling"] == pytest.approx(out["tuinet_gflops"] / out["gemm_ceiling_gflops"])
    assert out["gemm_ceiling_samples_per_second"] == pytest.approx(out["gemm_ceiling_gflops"] / 1.007104e-3)
    assert out["gemm_ceiling_share_of_sgemm"] == pytest.approx(out["gemm_ceiling_gflops"]
                                                               / out["machine"]["sgemm_gflops"])
    out = json.loads(CliRunner().invoke(main, args + ["--no-peak", "--no-gemm"]).output.strip().splitlines()[-1])
    assert "machine" not in out and "tuinet_share_of_peak" not in out and out["tuinet_gflops"] > 0
    assert "gemm_ceiling_gflops" not in out
    machine = out_peak["machine"]
    monkeypatch.setattr("tuinet.bench.peak.measure_machine", lambda seconds=0.3: machine)  # measured above
    text = CliRunner().invoke(main, args[:-1]).output
    assert "measured peak GFLOP/s" in text and "MFLOP per training sample" in text and "of FMA peak" in text
    assert "of its GEMMs alone" in text and "GEMMs alone, back to back through BLAS" in text


def test_bench_picks_the_steps_for_about_two_seconds_a_round_unless_told():
    """Without --steps, each round runs about 2 s of tuinet's training, 5 to 300 steps: a fast dense model keeps
    300, `resnet` at batch 256 (a sixth of a second a step) gets 12 instead of a 50 s round."""
    from tuinet.bench.throughput import auto_steps

    assert auto_steps(0.0005) == 300 and auto_steps(1 / 6) == 12 and auto_steps(3.0) == 5 and auto_steps(0.0) == 300
    args = ["bench", "--model", "mlp", "--batch-size", "8", "--rounds", "1", "--no-torch", "--no-peak", "--no-gemm",
            "--json"]
    out = json.loads(CliRunner().invoke(main, args).output.strip().splitlines()[-1])
    assert out["steps_auto"] is True and 5 <= out["steps"] <= 300 and out["samples_per_second"] > 0
    out = json.loads(CliRunner().invoke(main, args + ["--steps", "4"]).output.strip().splitlines()[-1])
    assert out["steps_auto"] is False and out["steps"] == 4


def test_bench_says_which_convolutions_run_by_winograd(monkeypatch):
    """The report names the convolutions that run by Winograd's F(4x4, 3x3): resnet's 3x3 stride-1 ones."""
    from tuinet.engine.conv.layers import convolution_algorithms
    from tuinet.engine.spec import build_model

    algos = convolution_algorithms(build_model("resnet", (28, 28, 1), 10).layers)
    assert [name for name, algo in algos if algo == "winograd"] == [
        "ResidualBlock(16) conv1", "ResidualBlock(16) conv2", "ResidualBlock(32, s2, proj) conv2",
        "ResidualBlock(64, s2, proj) conv2"]
    assert len(algos) == 9 and algos[0] == ("Conv2D(16, 3x3, same)", "direct")  # the stem: one input channel
    monkeypatch.setenv("TUINET_WINOGRAD", "0")
    assert {algo for _, algo in convolution_algorithms(build_model("resnet", (28, 28, 1), 10).layers)} == {"direct"}
    monkeypatch.delenv("TUINET_WINOGRAD")
    args = ["bench", "--model", "conv3x3x16psame,relu,conv3x3x16psame,flatten", "--batch-size", "4", "--steps", "2",
            "--rounds", "1", "--no-torch", "--no-peak", "--no-gemm"]
    text = CliRunner().invoke(main, args).output
    line = next(ln for ln in text.splitlines() if "convolutions:" in ln)
    assert "by Winograd F(4x4, 3x3)" in line and "TUINET_WINOGRAD=0" in line


def test_a_dense_models_bench_runs_in_the_faster_of_blas_and_numba_threads_unless_pinned(monkeypatch):
    """As the trainer's thread tuner does, the bench times a dense model with BLAS's threads and with Numba's (its
    products on the micro-kernels) and keeps the faster; a pinned mode (or tuning off) is kept as it is, and a
    convolutional model keeps Numba's threads without timing anything."""
    from tuinet.bench.throughput import TuinetRunner
    from tuinet.engine import threads

    for var in ("TUINET_THREAD_MODE", "TUINET_THREADS", "TUINET_THREAD_TUNING"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(threads, "cores", lambda: 2)
    monkeypatch.setattr("tuinet.bench.throughput.cores", lambda: 2)
    seconds = {"blas": 2e-3, "numba": 1e-3}
    timed = []

    def fake_run(self, steps):
        timed.append(threads.current_mode())
        return steps * seconds[threads.current_mode()]

    monkeypatch.setattr(TuinetRunner, "run", fake_run)
    runner = TuinetRunner("mlp", (28, 28, 1), 10, "adam", 8)
    assert runner.mode == "blas"
    assert runner.choose_mode() == "numba" and runner.mode == "numba" and threads.current_mode() == "numba"
    assert {"blas", "numba"} <= set(timed)
    seconds.update(blas=1e-3, numba=3e-3)
    assert TuinetRunner("mlp", (28, 28, 1), 10, "adam", 8).choose_mode() == "blas"
    timed.clear()
    monkeypatch.setenv("TUINET_THREAD_TUNING", "0")
    assert TuinetRunner("mlp", (28, 28, 1), 10, "adam", 8).choose_mode() == "blas" and timed == []
    monkeypatch.delenv("TUINET_THREAD_TUNING")
    monkeypatch.setenv("TUINET_THREAD_MODE", "single")
    assert TuinetRunner("mlp", (28, 28, 1), 10, "adam", 8).choose_mode() == "single" and timed == []
    monkeypatch.delenv("TUINET_THREAD_MODE")
    assert TuinetRunner("conv3x3x4,relu", (28, 28, 1), 10, "adam", 8).choose_mode() == "numba" and timed == []
