"""The thread tuner: it times both settings, keeps the faster, and re-probes; forced modes are obeyed."""

from __future__ import annotations

import numba
import pytest

from tuinet.engine import build_model
from tuinet.engine.threads import ThreadTuner


@pytest.fixture
def tuning(monkeypatch):
    monkeypatch.setenv("TUINET_THREAD_TUNING", "1")
    monkeypatch.setenv("TUINET_THREADS", "2")
    monkeypatch.delenv("TUINET_THREAD_MODE", raising=False)


def _feed(tuner, rates: dict[str, float], steps: int):
    chosen = None
    for _ in range(steps):
        samples = 64
        out = tuner.record(samples / rates[tuner.mode], samples)
        chosen = out or chosen
    return chosen


def test_tuner_keeps_the_faster_setting_and_reprobes(tuning):
    model = build_model("mlp", (784,), 10)
    tuner = ThreadTuner(model, block=3, rounds=2, reprobe=20, min_block_seconds=0, reprobe_seconds=0,
                        recheck_seconds=0.1, numba_products=False)
    assert tuner.candidates == ["blas", "single"]
    assert _feed(tuner, {"blas": 1000.0, "single": 3000.0}, 12) == "single"
    assert tuner.mode == "single" and numba.get_num_threads() == 1
    assert tuner.last_rates == {"blas": pytest.approx(1000.0), "single": pytest.approx(3000.0)}
    # later the machine is quiet and two threads win: the next re-check (after 0.1 s on one thread) switches back
    assert _feed(tuner, {"blas": 5000.0, "single": 3000.0}, 40) == "blas"
    assert tuner.last_rates == {"blas": pytest.approx(5000.0), "single": pytest.approx(3000.0)}


def test_tuner_is_not_fooled_by_bursts_and_reprobes_by_time(tuning):
    model = build_model("mlp", (784,), 10)
    tuner = ThreadTuner(model, block=10, rounds=2, reprobe=5, min_block_seconds=0.05, reprobe_seconds=1.0,
                        numba_products=False)
    chosen, n = None, 0
    # two threads take 1 ms a step but every 5th step is hit by a 20 ms redraw (mean 4.8 ms); one thread: 1.5 ms
    while chosen is None:
        n += 1
        if tuner.mode == "blas":
            seconds = 0.021 if n % 5 == 0 else 0.001
        else:
            seconds = 0.0015
        chosen = tuner.record(seconds, 64)
    assert chosen == "blas" and tuner.last_rates["blas"] == pytest.approx(64 / 0.001)
    # every block lasted at least min_block_seconds, so the probe took at least 4 x 50 ms of steps
    assert n >= 2 * 0.05 / 0.0015 + 2 * 10
    # no new probe until 1 s of training has passed, although `reprobe` steps have
    for _ in range(500):
        assert tuner.record(0.001, 64) is None and tuner.mode == "blas"
    probed = False
    for _ in range(600):
        tuner.record(0.001, 64)
        probed = probed or tuner.probing
    assert probed  # 1 s of training has passed: probing again


def test_convolutional_models_probe_numba_threads(tuning):
    model = build_model("conv3x3x4,relu", (6, 6, 1), 3)
    assert ThreadTuner(model).candidates == ["numba", "single"]
    assert ThreadTuner(model, numba_products=True).candidates == ["numba", "single"]  # (their only all-core one)


def test_a_dense_model_also_tries_its_products_on_numba_threads_and_keeps_the_fastest(tuning):
    """A dense model has two all-core settings: BLAS's threads and Numba's (its products on the micro-kernels).
    A full probe times both and one thread; the faster all-core one is then the one the short re-checks and the
    collapse detection work with."""
    model = build_model("mlp", (784,), 10)
    tuner = ThreadTuner(model, block=4, rounds=2, min_block_seconds=0, reprobe=10**6, reprobe_seconds=1e6,
                        collapse_steps=3, collapse_seconds=0.05, recheck_seconds=1.0, numba_products=True)
    assert tuner.candidates == ["blas", "numba", "single"] and tuner.wides == ["blas", "numba"]
    quiet = {"blas": 1.1e-5, "numba": 1e-5, "single": 1.8e-5}  # Numba's threads 10% faster than BLAS's
    seen: list[str] = []
    assert [m for _, m in _steps(tuner, quiet, 0.05, seen=seen)] == ["numba"]
    assert seen[:24] == ["blas"] * 4 + ["numba"] * 4 + ["single"] * 4 + ["blas"] * 4 + ["numba"] * 4 + ["single"] * 4
    assert tuner.wide == "numba" and tuner.mode == "numba" and numba.get_num_threads() == 2
    assert set(tuner.last_rates) == {"blas", "numba", "single"}
    # another process takes a core: the all-core steps collapse, one thread takes over, and the short re-checks
    # time the faster all-core setting only
    loaded = {"blas": 2e-3, "numba": 2e-3, "single": 2.4e-4}
    seen.clear()
    switches = _steps(tuner, loaded, 2.5, seen=seen)
    assert [m for _, m in switches][:1] == ["single"] and tuner.collapses == 1
    assert "blas" not in seen
    # the cores are free again: back to Numba's threads
    assert [m for _, m in _steps(tuner, quiet, 3.0)][-1:] == ["numba"] and tuner.mode == "numba"


def test_the_numba_products_setting_applies_to_models_of_matrix_product_layers_without_convolutions():
    from types import SimpleNamespace

    from tuinet.engine.residual import DenseResidual
    from tuinet.engine.threads import numba_products_apply

    assert numba_products_apply(build_model("mlp", (784,), 10))
    assert numba_products_apply(SimpleNamespace(layers=[DenseResidual(8)]))  # its inner Dense's products
    assert not numba_products_apply(build_model("conv3x3x4,relu", (6, 6, 1), 3))
    assert not numba_products_apply(SimpleNamespace(layers=[]))


def test_one_thread_winning_keeps_the_faster_all_core_setting_for_the_rechecks(tuning):
    model = build_model("mlp", (784,), 10)
    tuner = ThreadTuner(model, block=4, rounds=2, min_block_seconds=0, reprobe=10**6, reprobe_seconds=1e6,
                        numba_products=True)
    assert [m for _, m in _steps(tuner, {"blas": 3e-5, "numba": 4e-5, "single": 1e-5}, 0.05)] == ["single"]
    assert tuner.wide == "blas" and tuner._probe_modes(False) == ["blas", "single"]


def test_a_dense_model_tries_numba_products_from_the_first_scheduled_probe_on(tuning, monkeypatch):
    """With the product kernel not in the cache its first step in that setting would compile it (2.2 s): the first
    probe, and one after the batch size changed, leave "numba" out; the first scheduled probe (after
    ``reprobe_seconds`` of training: a run long enough to earn that back) takes it in, and every full probe after
    it."""
    from tuinet.engine import threads

    monkeypatch.setattr(threads, "_numba_ready", lambda: False)
    model = build_model("mlp", (784,), 10)
    tuner = ThreadTuner(model, block=4, rounds=2, min_block_seconds=0, reprobe=50, reprobe_seconds=0.5)
    assert tuner.candidates == ["blas", "numba", "single"]
    seen: list[str] = []
    rates = {"blas": 1.1e-5, "numba": 1e-5, "single": 1.8e-5}
    assert [m for _, m in _steps(tuner, rates, 0.05, seen=seen)] == ["blas"] and "numba" not in seen
    tuner.rebase()
    assert [m for _, m in _steps(tuner, rates, 0.05, seen=seen)] == ["blas"] and "numba" not in seen
    assert [m for _, m in _steps(tuner, rates, 0.6, seen=seen)] == ["numba"] and tuner.wide == "numba"
    tuner.rebase()
    assert tuner._plan[:2] == ["numba", "single"] and tuner.mode == "blas"  # all three again
    # a pinned setting never tries it
    monkeypatch.setenv("TUINET_THREAD_TUNING", "0")
    tuner = ThreadTuner(model, block=4, rounds=2, min_block_seconds=0, reprobe=50, reprobe_seconds=0.5)
    assert _steps(tuner, rates, 1.0) == [] and tuner.mode == "blas" and not tuner.probing


def test_disabled_or_forced_tuning_never_switches(monkeypatch):
    monkeypatch.setenv("TUINET_THREAD_TUNING", "0")
    monkeypatch.delenv("TUINET_THREAD_MODE", raising=False)
    tuner = ThreadTuner(build_model("mlp", (784,), 10), block=2, rounds=1, reprobe=5)
    assert _feed(tuner, {"blas": 1.0, "numba": 1e6, "single": 1e6}, 30) is None and tuner.mode == "blas"
    monkeypatch.setenv("TUINET_THREAD_MODE", "single")
    tuner = ThreadTuner(build_model("mlp", (784,), 10), block=2, rounds=1, reprobe=5)
    assert _feed(tuner, {"blas": 1e6, "numba": 1e6, "single": 1.0}, 30) is None and tuner.mode == "single"


def _steps(tuner, per_sample: dict[str, float], seconds: float, samples: int = 64, seen: list | None = None):
    """Feed steps for ``seconds`` of training time; each mode has its own seconds per sample. Returns the switches
    (and appends the mode of every step to ``seen``)."""
    switches, t = [], 0.0
    while t < seconds:
        if seen is not None:
            seen.append(tuner.mode)
        dt = per_sample[tuner.mode] * samples
        t += dt
        out = tuner.record(dt, samples)
        if out is not None:
            switches.append((round(t, 3), out))
    return switches


def test_collapse_falls_back_to_one_thread_within_a_few_steps(tuning):
    model = build_model("conv3x3x4,relu", (6, 6, 1), 3)
    tuner = ThreadTuner(model, block=4, rounds=2, min_block_seconds=0, reprobe=10**6, reprobe_seconds=1e6,
                        collapse_steps=3, collapse_seconds=0.05, recheck_seconds=1.0)
    quiet = {"numba": 1e-4, "single": 1.8e-4}  # two threads win on a quiet machine: 6.4 ms vs 11.5 ms a step
    assert _steps(tuner, quiet, 0.2)[0][1] == "numba"
    assert _steps(tuner, quiet, 2.0) == []  # steady: no switch, no probe
    # another process takes a core: two-thread steps become 20x slower (128 ms), one thread 1.3x
    loaded = {"numba": 2e-3, "single": 2.4e-4}
    switches = _steps(tuner, loaded, 0.5)
    assert switches[0] == (pytest.approx(3 * 0.128), "single") and tuner.collapses == 1  # at the third slow step
    assert tuner.mode == "single" and numba.get_num_threads() == 1
    assert "collapsed" in tuner.last_reason
    # the re-check after 1 s finds the cores still busy: one thread stays and the next wait doubles; the check
    # stops at its first all-core step, which is far slower than the one-thread steps before it
    modes = []
    switches = _steps(tuner, loaded, 2.5, seen=modes)
    assert [m for _, m in switches] == ["single"] and tuner._recheck_wait == 2.0
    assert modes.count("numba") == 1
    # the other process ends: the next re-check (2 s later) goes back to two threads
    switches = _steps(tuner, quiet, 2.5)
    assert [m for _, m in switches] == ["numba"] and tuner.mode == "numba"


def test_short_bursts_are_not_a_collapse(tuning):
    model = build_model("mlp", (784,), 10)
    tuner = ThreadTuner(model, block=4, rounds=2, min_block_seconds=0, reprobe=10**6, reprobe_seconds=1e6,
                        collapse_steps=3, collapse_seconds=0.25, numba_products=False)
    per = {"blas": 1e-5, "single": 2e-5}  # 0.64 ms a step on all cores
    assert _steps(tuner, per, 0.1)[0][1] == "blas"
    # a redraw of the app: 10 steps at 20x the median (0.13 s in all, under collapse_seconds), then normal
    # again for half a second (shorter than slowdown_seconds of slow average, so no slowdown probe either)
    for burst in range(20):
        for _ in range(10):
            assert tuner.record(64 * 2e-4, 64) is None
        for _ in range(800):
            assert tuner.record(64 * 1e-5, 64) is None
    assert tuner.mode == "blas" and tuner.collapses == 0 and tuner.slowdowns == 0


def test_collapse_detection_off_keeps_the_slow_setting(tuning):
    model = build_model("mlp", (784,), 10)
    tuner = ThreadTuner(model, block=4, rounds=2, min_block_seconds=0, reprobe=10**6, reprobe_seconds=1e6,
                        collapse_factor=None, numba_products=False)
    assert _steps(tuner, {"blas": 1e-5, "single": 2e-5}, 0.1)[0][1] == "blas"
    assert _steps(tuner, {"blas": 1e-3, "single": 2e-5}, 5.0) == [] and tuner.mode == "blas"


def test_a_sustained_slowdown_short_of_a_collapse_rechecks_one_thread_at_once(tuning):
    """Another process makes two-thread steps 2.5x slower (no 3x collapse): a short probe runs within a second."""
    model = build_model("mlp", (784,), 10)
    tuner = ThreadTuner(model, block=4, rounds=2, min_block_seconds=0, reprobe=10**6, reprobe_seconds=1e6,
                        collapse_steps=3, collapse_seconds=0.25, slowdown_seconds=0.5, numba_products=False)
    quiet = {"blas": 1e-5, "single": 1.6e-5}  # 0.64 ms a step on all cores
    assert _steps(tuner, quiet, 0.1)[0][1] == "blas"
    assert _steps(tuner, quiet, 3.0) == [] and tuner.slowdowns == 0  # steady: nothing happens
    loaded = {"blas": 2.5e-5, "single": 1.7e-5}  # two threads now lose to one, but by less than 3x
    switches = _steps(tuner, loaded, 1.5)
    assert tuner.collapses == 0 and tuner.slowdowns == 1
    assert switches and switches[0][1] == "single" and switches[0][0] < 0.8  # decided within 0.8 s of the load
    assert tuner.mode == "single"
    # noise of +-40% around a steady rate is not a slowdown
    tuner2 = ThreadTuner(model, block=4, rounds=2, min_block_seconds=0, reprobe=10**6, reprobe_seconds=1e6,
                         numba_products=False)
    assert _steps(tuner2, quiet, 0.1)[0][1] == "blas"
    for i in range(3000):
        tuner2.record(64 * 1e-5 * (1.4 if i % 2 else 0.6), 64)
    assert tuner2.slowdowns == 0 and tuner2.mode == "blas"


def test_a_new_batch_size_starts_a_new_reference_not_a_collapse(tuning):
    """Batches of 4 cost far more per sample than batches of 256: after rebase() (the trainer's batch size changed)
    the tuner compares the new steps with each other, probes both settings again at the new size, and keeps
    the one that wins there; without it the smaller batches would read as a collapse."""
    model = build_model("conv3x3x4,relu", (6, 6, 1), 3)
    kw = dict(block=4, rounds=2, min_block_seconds=0, reprobe=10**6, reprobe_seconds=1e6, collapse_steps=3,
              collapse_seconds=0.05, recheck_seconds=1.0)
    big = {"numba": 1e-5, "single": 1.8e-5}  # batch 256: two threads win
    small = {"numba": 3e-4, "single": 1e-4}  # batch 4: 30x the time per sample, and one thread wins

    tuner = ThreadTuner(model, **kw)
    assert _steps(tuner, big, 0.2, samples=256)[0][1] == "numba"
    tuner.rebase()
    assert tuner.probing
    switches = _steps(tuner, small, 0.5, samples=4)
    assert [m for _, m in switches] == ["single"] and tuner.collapses == 0  # the probe's verdict
    assert tuner.last_rates == {"numba": pytest.approx(1 / 3e-4), "single": pytest.approx(1e4)}

    unaware = ThreadTuner(model, **kw)
    assert _steps(unaware, big, 0.2, samples=256)[0][1] == "numba"
    _steps(unaware, small, 0.5, samples=4)
    assert unaware.collapses == 1  # what rebase() prevents


def test_a_dense_model_starts_on_numba_products_when_their_kernel_is_cached(tuning, monkeypatch):
    """With the product kernel in the cache (a load of 0.1-0.2 s) a dense model starts on Numba's threads and BLAS's
    join from the first scheduled probe on; with tuning off it stays on BLAS's whatever the cache holds (pinned
    runs give the same bits run after run)."""
    from tuinet.engine import threads

    monkeypatch.setattr(threads, "_numba_ready", lambda: True)
    model = build_model("mlp", (784,), 10)
    tuner = ThreadTuner(model, block=4, rounds=2, min_block_seconds=0, reprobe=50, reprobe_seconds=0.5)
    assert tuner.mode == "numba" and tuner.candidates == ["numba", "blas", "single"]
    seen: list[str] = []
    rates = {"blas": 1e-5, "numba": 1.1e-5, "single": 1.8e-5}  # BLAS's threads faster here
    assert [m for _, m in _steps(tuner, rates, 0.05, seen=seen)] == ["numba"] and "blas" not in seen
    assert [m for _, m in _steps(tuner, rates, 0.6, seen=seen)] == ["blas"] and tuner.wide == "blas"
    tuner.rebase()
    assert set(tuner._plan) == {"numba", "blas", "single"}
    assert ThreadTuner(model, numba_products=False).mode == "blas"  # (never tries them)
    monkeypatch.setenv("TUINET_THREAD_TUNING", "0")
    assert ThreadTuner(model).mode == "blas" and not ThreadTuner(model).probing


@pytest.mark.slow
def test_numba_products_are_ready_once_compiled_or_cached(tmp_path):
    """What the tuner's start on Numba's threads rests on: in a process on an empty cache the product kernel is not
    ready; after one product it is, and a new process on the same cache finds it there (a load, not a compile)."""
    import os
    import subprocess
    import sys

    script = ("import numpy as np, sys\n"
              "from tuinet.engine.gemm import numba_products_ready\n"
              "from tuinet.engine.conv.dense import panel_matmul\n"
              "before = numba_products_ready()\n"
              "if sys.argv[1] == 'compile':\n"
              "    a = np.ones((64, 64), np.float32); panel_matmul(a, a, np.empty_like(a), False, False)\n"
              "print(before, numba_products_ready())\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    runs = [subprocess.run([sys.executable, "-c", script, arg], env=env, capture_output=True, text=True, timeout=300)
            for arg in ("look", "compile", "look")]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    assert [r.stdout.split() for r in runs] == [["False", "False"], ["False", "True"], ["True", "True"]]
