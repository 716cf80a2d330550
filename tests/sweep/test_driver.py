"""The sweep driver's trial budget when several drivers share one study (no trainer runs here)."""

from __future__ import annotations

from tests.sweep.conftest import write_spec
from tuinet.sweep.driver import SweepDriver
from tuinet.sweep.spec import load_spec
from tuinet.sweep.study import open_study


class RecordingBackend:
    """Records the trials it is asked to start and refuses them (the driver then tells the trial failed)."""

    kind = "local"
    capacity = 1

    def __init__(self):
        self.started: list[int] = []

    def start(self, number, config):
        self.started.append(number)
        raise RuntimeError("not in this test")


def test_a_driver_that_asks_after_another_took_the_last_place_runs_nothing(tmp_path):
    """Two drivers sharing a study each count its trials, then ask for one: both can see the same free place (a CI
    run of the two-process test ran 5 trials of 4). The trial asked past the budget is told failed, marked surplus,
    never started, and left out of the driver's counts and of state.json's rows."""
    import optuna

    spec = load_spec(write_spec(tmp_path, trials=2), {"runs_dir": str(tmp_path / "runs")})
    url = f"sqlite:///{tmp_path / 'study.db'}"
    backend = RecordingBackend()
    driver = SweepDriver(spec, backend, storage=url)
    driver.study = open_study(spec, spec.folder, url)
    other = optuna.load_study(study_name=spec.name, storage=url)  # the other host's driver
    other.ask()  # the other host's driver takes the first place
    driver._start_new()  # one place left: this driver takes it
    assert backend.started == [1]
    driver._start_new()  # as if this driver had counted before its own ask landed: the budget is spent
    assert backend.started == [1], "a trial past the budget was started"
    trials = other.get_trials(deepcopy=False)
    assert [t.number for t in trials] == [0, 1, 2]
    assert [bool(t.user_attrs.get("surplus")) for t in trials] == [False, False, True]
    assert trials[2].state == optuna.trial.TrialState.FAIL
    assert [r["number"] for r in driver.rows()] == [0, 1]
    assert not driver._more_to_run()
    assert driver._count_ended() == 1  # trial 1 (refused by the backend); the surplus one is not counted
