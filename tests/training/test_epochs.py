"""Planning more (or fewer) epochs while a run trains (the set_epochs command), and the plan through resumes.

Small real runs on a 1,000-sample MNIST subset, as in test_batch_size.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuinet.errors import ConfigError
from tuinet.protocol import make_command, validate_command
from tuinet.training.branch import branch_config
from tuinet.training.compare import load_run
from tuinet.training.config import TrainConfig
from tuinet.training.rundir import RunDir
from tuinet.training.trainer import Trainer

MNIST = dict(dataset="mnist", limit=1000, model="64,32", batch_size=64, seed=3, optimizer="adam", lr=0.003)


def config(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(**{**MNIST, "runs_dir": str(tmp_path / "runs"), "epochs": 2, "name": "live", **kw})


def of(events, kind):
    return [e for e in events if e["event"] == kind]


def run_sending(cfg, when, *commands):
    """A whole run that sends ``commands`` from its emit hook when ``when(event)``; returns (trainer, events)."""
    trainer = Trainer(cfg)
    events: list[dict] = []

    def emit(e):
        events.append(e)
        if when(e):
            for cmd in commands:
                trainer.commands.put(cmd)

    trainer.emit = emit
    trainer.run()
    return trainer, events


def test_more_epochs_planned_mid_run_are_trained_and_kept(tmp_path):
    trainer, events = run_sending(config(tmp_path, log_every=1), lambda e: e["event"] == "step" and e["step"] == 5,
                                  make_command("set_epochs", epochs=4))
    assert events[-1]["event"] == "finished" and events[-1]["epochs"] == 4
    assert [e["epoch"] for e in of(events, "epoch")] == [1, 2, 3, 4]
    (changed,) = of(events, "epochs_changed")
    spe = trainer.steps_per_epoch
    assert (changed["epochs"], changed["previous"], changed["step"], changed["total_steps"]) == (4, 2, 5, 4 * spe)
    assert load_run(tmp_path / "runs" / "live").changed == {"epochs": [2, 4]}
    assert RunDir(tmp_path / "runs" / "live").read_json("config.json")["epochs"] == 2  # the first plan
    assert "epochs 2 -> 4 (from step 6, lr 0.003)" in (tmp_path / "runs" / "live" / "log.txt").read_text()


def test_a_schedule_is_stretched_over_the_new_plan(tmp_path):
    trainer, events = run_sending(config(tmp_path, log_every=1, schedule="cosine"),
                                  lambda e: e["event"] == "step" and e["step"] == 5,
                                  make_command("set_epochs", epochs=6))
    spe = trainer.steps_per_epoch
    steps = of(events, "step")
    assert steps[4]["lr"] == pytest.approx(0.003 * 0.5 * (1 + math.cos(math.pi * 4 / (2 * spe))))  # the old plan
    assert steps[5]["lr"] == pytest.approx(0.003 * 0.5 * (1 + math.cos(math.pi * 5 / (6 * spe))))  # the new one
    assert of(events, "epochs_changed")[0]["lr"] == pytest.approx(steps[5]["lr"])


def test_planned_at_an_epochs_end_it_trains_as_a_resume_with_those_epochs(tmp_path, monkeypatch):
    """Four epochs planned at the end of epoch 1 of 2 give bit for bit the weights of the run stopped there and
    resumed with `tuinet resume --epochs 4` (the schedule stretched the same way)."""
    monkeypatch.setenv("TUINET_THREADS", "1")
    at_1 = lambda e: e["event"] == "epoch" and e["epoch"] == 1  # noqa: E731
    live, _ = run_sending(config(tmp_path, schedule="cosine"), at_1, make_command("set_epochs", epochs=4))
    cut, events = run_sending(config(tmp_path, schedule="cosine", name="cut"), at_1, make_command("stop"))
    assert events[-1]["event"] == "stopped"
    resumed = Trainer.resume(RunDir(tmp_path / "runs" / "cut"), epochs=4)
    assert resumed.run()["event"] == "finished" and resumed.epoch == live.epoch == 4
    a, b = live.model.get_weights(), resumed.model.get_weights()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_plain_resume_keeps_the_plan_the_run_had_at_its_checkpoint(tmp_path):
    """`tuinet resume RUN --epochs 5`, stopped at epoch 3, then `tuinet resume RUN`: on to epoch 5 (it planned the
    2 of config.json and ended at once); the same for epochs planned in the app."""
    assert Trainer(config(tmp_path)).run()["event"] == "finished"
    t = Trainer.resume(RunDir(tmp_path / "runs" / "live"), epochs=5)
    t.emit = lambda e: t.commands.put(make_command("stop")) if e["event"] == "epoch" and e["epoch"] == 3 else None
    assert t.run()["event"] == "stopped"
    again = Trainer.resume(RunDir(tmp_path / "runs" / "live"))
    assert again.config.epochs == 5
    assert again.run()["event"] == "finished" and again.epoch == 5

    _, events = run_sending(config(tmp_path, name="app"), lambda e: e["event"] == "epoch" and e["epoch"] == 1,
                            make_command("set_epochs", epochs=3), make_command("stop"))
    assert events[-1]["event"] == "stopped"
    resumed = Trainer.resume(RunDir(tmp_path / "runs" / "app"))
    assert resumed.config.epochs == 3 and resumed.run()["event"] == "finished" and resumed.epoch == 3
    # a branch takes the plan as at its checkpoint: epoch 1's was saved before the change (a branch from the latest,
    # at epoch 3 of 3, has to plan more itself)
    assert branch_config("app@1", {"name": "b", "runs_dir": str(tmp_path / "runs")}).epochs == 2
    assert branch_config("app", {"name": "c", "runs_dir": str(tmp_path / "runs"), "epochs": 4}).epochs == 4


def test_fewer_epochs_end_the_run_sooner_but_not_before_the_epoch_in_progress(tmp_path):
    trainer, events = run_sending(config(tmp_path, epochs=5, log_every=1),
                                  lambda e: e["event"] == "step" and e["step"] == 20,
                                  make_command("set_epochs", epochs=1), make_command("set_epochs", epochs=2))
    spe = trainer.steps_per_epoch
    assert 20 > spe  # (step 20 is in epoch 2)
    refused = [e["message"] for e in of(events, "log") if "refused" in e["message"]]
    assert refused == ["command set_epochs refused: the run is in epoch 2: plan at least 2 epochs (a stop ends it "
                       "sooner)"]
    assert [e["epochs"] for e in of(events, "epochs_changed")] == [2]
    assert events[-1]["event"] == "finished" and events[-1]["epochs"] == 2


def test_after_the_last_epoch_it_is_refused(tmp_path):
    _, events = run_sending(config(tmp_path, epochs=1), lambda e: e["event"] == "epoch",
                            make_command("set_epochs", epochs=3))
    assert not of(events, "epochs_changed") and events[-1]["epochs"] == 1
    assert any("the run's epochs are done; `tuinet resume live --epochs N` trains it on" in e["message"]
               for e in of(events, "log"))


@pytest.mark.parametrize("value", [0, -1, 1_000_001, 2.0, "3", None, False])
def test_the_command_is_checked(value):
    with pytest.raises(ConfigError, match="epochs must be a whole number from 1 to 1,000,000"):
        validate_command({"command": "set_epochs", "epochs": value})
    assert validate_command({"command": "set_epochs", "epochs": 1_000_000})
