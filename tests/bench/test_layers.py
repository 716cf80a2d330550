"""Per-layer timings: one row per layer, fused pairs timed as one unit (numbers, not pass/fail timings)."""

from __future__ import annotations

import numba
import pytest

from tuinet.bench.layers import conv_layer_times, torch_conv_layer_times
from tuinet.engine import build_model
from tuinet.engine.threads import configure_threads


def _both_sides(model, fused: bool) -> list[list[dict]]:
    """The per-layer rows of tuinet and, when PyTorch is installed, of its twin (batch 4, one repeat)."""
    sides = [conv_layer_times(model, 4, 1, fused=fused)]
    try:
        sides.append(torch_conv_layer_times(model, 4, 1, threads=1, fused=fused))
    except ImportError:
        pass
    return sides


@pytest.mark.parametrize("fused", [False, True])
def test_layer_rows_follow_the_model_and_its_fused_pairs(fused):
    model = build_model("conv3x3x4,maxpool2,bn,relu,gap", (8, 8, 1), 10)
    assert model.fused_pairs == {0, 2}
    for rows in _both_sides(model, fused):
        assert [r.get("fused", False) for r in rows] == [False, fused, False, fused, False, False]
        assert len(rows) == len(model.layers) and all(r["forward_backward_ms"] >= 0 for r in rows)
        names = [r["layer"] for r in rows]
        if fused:
            assert names[0] == "Conv2D(4, 3x3) + MaxPool2D(2x2)" and names[2] == "BatchNorm + ReLU"
            assert rows[1]["forward_backward_ms"] == rows[3]["forward_backward_ms"] == 0.0
        else:
            assert names[:2] == ["Conv2D(4, 3x3)", "MaxPool2D(2x2)"]


def test_layers_are_timed_in_the_models_own_thread_mode(monkeypatch):
    """A process that last gave the cores to BLAS (as the benchmark's GEMM ceiling does) still times each layer
    with the threads a training step of the model uses."""
    model = build_model("conv3x3x4,relu,gap", (8, 8, 1), 10)
    configure_threads(model)
    expected = numba.get_num_threads()
    configure_threads(model, mode="single")
    seen = []
    conv = model.layers[0]
    forward = conv.forward
    monkeypatch.setattr(conv, "forward", lambda *a: seen.append(numba.get_num_threads()) or forward(*a))
    conv_layer_times(model, 4, 1)
    assert seen and set(seen) == {expected}
    conv_layer_times(model, 4, 1, mode="single")
    assert seen[-1] == 1


def test_a_conv_maxpool_relu_triple_is_one_row_and_pytorch_times_the_same_layers():
    model = build_model("conv3x3x4,maxpool2,relu,gap", (8, 8, 1), 10)
    assert model.fused_triples == {0}
    for rows in _both_sides(model, True):
        assert [r.get("fused", False) for r in rows] == [False, True, True, False, False]
        assert rows[0]["layer"] == "Conv2D(4, 3x3) + MaxPool2D(2x2) + ReLU" and rows[0]["forward_backward_ms"] > 0


def test_pytorch_is_timed_with_subnormals_flushed_as_tuinet_trains(monkeypatch):
    """Every PyTorch timing goes through torch_threads, which flushes subnormal floats as tuinet's training threads
    do: without it the mlp benchmark's Adam state went subnormal after about 600 steps and PyTorch's later rounds ran
    a third slower (a fake torch module records the calls; the real one need not be installed)."""
    import sys
    import types

    from tuinet.bench import torch_models

    calls = []
    fake = types.SimpleNamespace(set_num_threads=lambda n: calls.append(("threads", n)),
                                 set_flush_denormal=lambda on: calls.append(("flush", on)))
    monkeypatch.setitem(sys.modules, "torch", fake)
    torch_models.torch_threads(3)
    assert calls == [("threads", 3), ("flush", True)]
    import inspect
    from pathlib import Path

    from tuinet.bench import layers, throughput

    root = Path(__file__).resolve().parents[2]
    sources = [inspect.getsource(layers), inspect.getsource(throughput)] + [
        (root / "benchmarks" / name).read_text() for name in ("cnn_recipe.py", "resnet_parts.py")]
    for src in sources:  # each PyTorch timing sets its threads only through it
        assert "torch_threads(" in src and "torch.set_num_threads(" not in src
