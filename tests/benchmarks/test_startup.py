"""The start-up benchmark's code path runs (its figures are printed by ``python -m benchmarks.startup``)."""

from __future__ import annotations

import sys

import pytest

from benchmarks import startup


@pytest.mark.slow  # two fresh processes, each to the end of its first step
def test_startup_times_each_phase_of_a_fresh_process(tmp_path):
    r = startup.run_once(sys.executable, None, "16", tmp_path, dataset="spiral")
    for phase in ("interpreter", "imports", "data", "model", "to step", "first step", "total"):
        assert r[phase] >= 0, phase
    assert r["total"] >= r["interpreter"] + r["imports"] + r["data"] + r["model"]
    assert r["kernels loaded"] + r["kernels compiled"] > 0  # the first step's kernels, cached or not
    timed = startup.run_once(sys.executable, None, "16", tmp_path, importtime=True, dataset="spiral")
    # both libraries are imported before the first step; their self times are not asserted positive: the data
    # loads in a second thread during the imports, and -X importtime's self times can then come out negative
    assert "numba" in timed["groups"] and "numpy" in timed["groups"]
    assert timed["groups"]["all"] > 0
    assert timed["groups"]["all"] == pytest.approx(sum(v for k, v in timed["groups"].items() if k != "all"))


@pytest.mark.slow  # one fresh process, the app on a pseudo-terminal, to the end of its first step
def test_startup_in_the_app_times_its_first_frame(tmp_path):
    r = startup.run_once(sys.executable, None, "16", tmp_path, dataset="spiral", app=True)
    assert r["app start"] > 0  # Textual's import and the first frame, before training starts (headless: 0)
    assert r["to step"] >= 0 and r["first step"] >= 0
    assert r["total"] >= r["interpreter"] + r["imports"] + r["data"] + r["model"] + r["app start"] + r["to step"]
    headless = startup.run_once(sys.executable, None, "16", tmp_path, dataset="spiral")
    assert headless["app start"] == 0
    with pytest.raises(ValueError):
        startup.run_once(sys.executable, None, "16", tmp_path, dataset="spiral", app=True, importtime=True)


def test_import_groups_counts_self_times_until_the_first_step():
    stderr = "\n".join(["import time: self [us] | cumulative | imported package",
                        "import time:       100 |        100 |   numpy._core",
                        "import time:       200 |        300 | numpy",
                        "import time:        50 |         50 | tuinet.engine.kernels",
                        "import time:        30 |         30 | json",
                        "STARTUP-MARK compiled",
                        "import time:       999 |        999 | textual"])
    groups = startup.import_groups(stderr)
    assert groups == pytest.approx({"numpy": 300e-6, "tuinet.engine": 50e-6, "other": 30e-6, "all": 380e-6})
