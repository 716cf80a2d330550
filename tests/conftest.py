"""Shared test setup: every test keeps its runs in a temporary folder; fixed thread settings."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TUINET_RUNS_DIR", str(tmp_path / "runs"))


def pytest_configure(config):
    os.environ.setdefault("TUINET_THREADS", "2")
    # no thread-mode probing in tests: exact-equality checks (resume, determinism) need fixed thread counts;
    # tests/engine/test_threads.py turns it on where it is the subject
    os.environ.setdefault("TUINET_THREAD_TUNING", "0")
    os.environ.setdefault("TUINET_UI_NICE", "0")  # the app would lower the priority of pytest's main thread
