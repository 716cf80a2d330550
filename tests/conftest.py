"""Shared test setup: every test keeps its runs in a temporary folder; fixed thread settings."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TUINET_RUNS_DIR", str(tmp_path / "runs"))


@pytest.fixture(autouse=True)
def _cpu_target_unchanged():
    """No test may leave Numba's CPU target changed for the rest of the suite: every later child process would
    compile for it (an AVX-512 feature string left behind killed them with SIGILL on an AVX2 host)."""
    keys = ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")
    before = {k: os.environ.get(k) for k in keys}
    yield
    after = {k: os.environ.get(k) for k in keys}
    assert after == before, f"the test left Numba's CPU target changed: {before} -> {after}"


@pytest.fixture(autouse=True)
def _float_mode_restored():
    """After each test pytest's thread computes with subnormal floats again, as when the suite started: a test (or a
    module's fixture) that trains in this thread turns flushing them to zero on here (configure_threads does, see
    tuinet/engine/fpmode.py), which would otherwise decide what later tests compute, and compare, with them."""
    import sys

    yield
    fp = sys.modules.get("tuinet.engine.fpmode")  # not imported here: importing the engine sets Numba's CPU target
    if fp and fp.denormals_flushed():
        fp.flush_denormals(False)


def pytest_configure(config):
    # the engine's first import sets Numba's CPU target (NUMBA_CPU_FEATURES on an AVX-512 host, see
    # tuinet/engine/runtime.py): done here, before any test, so _cpu_target_unchanged never sees it happen inside the
    # first test that imports the engine (a test file run alone failed that check on such a host)
    import tuinet.engine  # noqa: F401

    os.environ.setdefault("TUINET_THREADS", "2")
    # no thread-mode probing in tests: exact-equality checks (resume, determinism) need fixed thread counts;
    # tests/engine/test_threads.py turns it on where it is the subject
    os.environ.setdefault("TUINET_THREAD_TUNING", "0")
    os.environ.setdefault("TUINET_UI_NICE", "0")  # the app would lower the priority of pytest's main thread


# --- a cold Numba cache: the kernels compiled beside the first tests ------------------------------------------

#: the models whose first training step compiles nearly every kernel the suite uses (the conv, pooling,
#: BatchNorm and residual kernels of both variants, the Dense products on the micro-kernels, Adam)
WARM_MODELS = ("cnn", "resnet", "lenet")
_WARMUP = """
import shutil, subprocess, sys
for model in sys.argv[2:]:
    subprocess.run([sys.executable, "-m", "tuinet.cli", "train", "--headless", "--model", model, "--epochs", "1",
                    "--limit", "64", "--batch-size", "32", "--runs-dir", sys.argv[1]], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
shutil.rmtree(sys.argv[1], ignore_errors=True)  # also when pytest itself was killed and cannot
"""
_warmup: list = []  # (process, its runs folder)


def pytest_collection_finish(session):
    """On a whole-suite run, compile the kernels into Numba's cache in a second, low-priority process while the
    first tests (the app's, which use few kernels) run: with an empty cache (a fresh clone, as in CI) the suite
    otherwise compiles every kernel in its own process, one core idle. What a test then needs is loaded from
    the cache, or compiled by the test as before if it comes first: no test depends on this process, which
    only ever adds cache entries (each written whole, under the cache's save lock) and is killed at the end.
    ``TUINET_TEST_WARMUP=0`` turns it off; runs of fewer than 300 tests never start it."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    if os.environ.get("TUINET_TEST_WARMUP", "1") == "0" or len(session.items) < 300:
        return
    env = dict(os.environ, TUINET_COMPILE_HELPER="0")  # the same thread settings as the tests, no helpers
    runs = tempfile.mkdtemp(prefix="tuinet-test-warmup-")
    _warmup.append((subprocess.Popen(
        [sys.executable, "-c", _WARMUP, runs, *WARM_MODELS], cwd=Path(__file__).resolve().parents[1], env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        preexec_fn=lambda: os.nice(10)), runs))


def pytest_sessionfinish(session):
    import shutil
    import signal

    for proc, runs in _warmup:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group: the trainer it runs too (done or not)
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(runs, ignore_errors=True)
