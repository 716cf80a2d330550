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
    tuner = ThreadTuner(model, block=3, rounds=2, reprobe=20)
    assert tuner.candidates == ["blas", "single"]
    assert _feed(tuner, {"blas": 1000.0, "single": 3000.0}, 12) == "single"
    assert tuner.mode == "single" and numba.get_num_threads() == 1
    assert tuner.last_rates == {"blas": pytest.approx(1000.0), "single": pytest.approx(3000.0)}
    # later the machine is quiet and two threads win: the next probe switches back
    assert _feed(tuner, {"blas": 5000.0, "single": 3000.0}, 40) == "blas"
    assert tuner.mode == "blas"


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
