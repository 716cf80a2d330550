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
    tuner = ThreadTuner(model, block=3, rounds=2, reprobe=20, min_block_seconds=0, reprobe_seconds=0)
    assert tuner.candidates == ["blas", "single"]
    assert _feed(tuner, {"blas": 1000.0, "single": 3000.0}, 12) == "single"
    assert tuner.mode == "single" and numba.get_num_threads() == 1
    assert tuner.last_rates == {"blas": pytest.approx(1000.0), "single": pytest.approx(3000.0)}
    # later the machine is quiet and two threads win: the next probe switches back
    assert _feed(tuner, {"blas": 5000.0, "single": 3000.0}, 40) == "blas"
    assert tuner.mode == "blas"


def test_tuner_is_not_fooled_by_bursts_and_reprobes_by_time(tuning):
    model = build_model("mlp", (784,), 10)
    tuner = ThreadTuner(model, block=10, rounds=2, reprobe=5, min_block_seconds=0.05, reprobe_seconds=1.0)
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


def test_disabled_or_forced_tuning_never_switches(monkeypatch):
    monkeypatch.setenv("TUINET_THREAD_TUNING", "0")
    monkeypatch.delenv("TUINET_THREAD_MODE", raising=False)
    tuner = ThreadTuner(build_model("mlp", (784,), 10), block=2, rounds=1, reprobe=5)
    assert _feed(tuner, {"blas": 1.0, "single": 1e6}, 30) is None and tuner.mode == "blas"
    monkeypatch.setenv("TUINET_THREAD_MODE", "single")
    tuner = ThreadTuner(build_model("mlp", (784,), 10), block=2, rounds=1, reprobe=5)
    assert _feed(tuner, {"blas": 1e6, "single": 1.0}, 30) is None and tuner.mode == "single"
