"""Changing the batch size while a run trains (the set_batch_size command).

Small real runs on a 2,000-sample MNIST subset (1,600 training samples: 25 steps per epoch at batch 64), as in
test_regularization.py.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from tuinet.engine.checkpoint import load_checkpoint
from tuinet.errors import ConfigError
from tuinet.protocol import is_setting_change, make_command, validate_command
from tuinet.training.branch import branch_config
from tuinet.training.compare import load_run
from tuinet.training.config import TrainConfig
from tuinet.training.curves import CurveReader
from tuinet.training.rundir import RunDir
from tuinet.training.session import Session
from tuinet.training.trainer import Trainer

MNIST = dict(dataset="mnist", limit=2000, model="64,32", batch_size=64, seed=3, optimizer="adam", lr=0.003)


def config(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(**{**MNIST, "runs_dir": str(tmp_path / "runs"), "epochs": 3, **kw})


def of(events, kind):
    return [e for e in events if e["event"] == kind]


def run_with(tmp_path, when, size, **kw):
    """A whole run that sends set_batch_size ``size`` from its emit hook when ``when(event)``; returns (trainer,
    events)."""
    trainer = Trainer(config(tmp_path, **{"name": "live", "log_every": 1, **kw}))
    events: list[dict] = []

    def emit(e):
        events.append(e)
        if when(e):
            trainer.commands.put(make_command("set_batch_size", batch_size=size))

    trainer.emit = emit
    assert trainer.run()["event"] == "finished"
    return trainer, events


def steps_of_epochs(events) -> list[int]:
    """The steps each epoch took, from the epoch events."""
    ends = [e["step"] for e in of(events, "epoch")]
    return [b - a for a, b in zip([0] + ends, ends)]


def test_asked_mid_epoch_it_starts_with_the_next_epoch(tmp_path):
    trainer, events = run_with(tmp_path, lambda e: e["event"] == "step" and e["step"] == 5, 256)
    n = len(trainer.data.x_train)
    assert steps_of_epochs(events) == [math.ceil(n / 64), math.ceil(n / 256), math.ceil(n / 256)]
    asked, applied = of(events, "batch_size_changed")
    assert asked["batch_size"] == asked["previous"] == 64 and asked["pending"] == 256 and asked["from_epoch"] == 1
    assert asked["step"] == 5 and asked["total_steps"] == 3 * math.ceil(n / 64)  # the plan as it stands
    assert not is_setting_change(asked)  # nothing changed yet: no line on the charts
    assert applied["batch_size"] == 256 and applied["previous"] == 64 and applied["pending"] is None
    assert applied["epoch"] == 1 and applied["step"] == math.ceil(n / 64)
    assert applied["steps_per_epoch"] == math.ceil(n / 256)
    assert applied["total_steps"] == math.ceil(n / 64) + 2 * math.ceil(n / 256) == events[-1]["steps"]
    assert is_setting_change(applied)
    # every sample once per epoch: the epoch in progress kept its batches, the next ones are the new size (the
    # first step, which compiles, is not counted in the samples trained on)
    assert trainer.samples_seen == 3 * n - 64
    assert trainer.config.batch_size == 256
    log = (tmp_path / "runs" / "live" / "log.txt").read_text()  # the headless lines
    assert "batch size 256 from epoch 2 (epoch 1 keeps batches of 64)" in log
    assert f"batch size 64 -> 256 from epoch 2 ({math.ceil(n / 256)} steps per epoch)" in log


def test_between_epochs_it_applies_at_once_and_trains_as_a_branch_with_that_batch_size(tmp_path, monkeypatch):
    """Set before the first step of epoch 2 (a cosine schedule runs), the new batch size gives bit for bit the
    weights of a branch from epoch 1 with --batch-size: the schedule's steps are renumbered in the new batches as a
    branch's are, so the lr of every step is the branch's."""
    monkeypatch.setenv("TUINET_THREADS", "1")
    trainer, events = run_with(tmp_path, lambda e: e["event"] == "epoch" and e["epoch"] == 1, 100,
                               schedule="cosine", keep_epochs=3)
    (applied,) = of(events, "batch_size_changed")
    assert applied["batch_size"] == 100 and applied["previous"] == 64 and applied["epoch"] == 1
    branch = Trainer(branch_config("live@1", {"batch_size": 100, "name": "branch", "log_every": 1,
                                              "runs_dir": str(tmp_path / "runs")}))
    seen: list[dict] = []
    branch.emit = seen.append
    assert branch.run()["event"] == "finished"
    lrs = [e["lr"] for e in of(events, "step") if e["epoch"] > 1]
    assert lrs == [e["lr"] for e in of(seen, "step")]
    assert len(lrs) == 2 * math.ceil(len(trainer.data.x_train) / 100)
    a, b = trainer.model.get_weights(), branch.model.get_weights()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_the_lr_schedule_goes_on_from_the_same_point_of_its_curve(tmp_path):
    trainer, events = run_with(tmp_path, lambda e: e["event"] == "step" and e["step"] == 3, 32, schedule="cosine")
    n1 = math.ceil(len(trainer.data.x_train) / 64)
    n2 = math.ceil(len(trainer.data.x_train) / 32)
    steps = of(events, "step")
    last_old, first_new = steps[n1 - 1], steps[n1]
    assert first_new["step"] == n1 + 1
    # step k of the new batches is at the fraction (n1 + k) / (3 * n2) of the cosine: 1/3 of the way after epoch 1
    assert first_new["lr"] == pytest.approx(0.003 * 0.5 * (1 + math.cos(math.pi * n2 / (3 * n2))))
    assert last_old["lr"] == pytest.approx(0.003 * 0.5 * (1 + math.cos(math.pi * (n1 - 1) / (3 * n1))))
    assert steps[-1]["lr"] == pytest.approx(0.003 * 0.5 * (1 + math.cos(math.pi * (3 * n2 - 1) / (3 * n2))))
    assert [e["epoch"] for e in steps[n1:n1 + 2]] == pytest.approx([1 + 1 / n2, 1 + 2 / n2])


def test_a_second_ask_replaces_the_first_and_the_runs_own_size_cancels_it(tmp_path):
    asks = {4: 256, 6: 128, 20: 64}  # steps of epoch 1: 256, then 128, then back to the run's own 64
    trainer, events = run_with(tmp_path, lambda e: False, 0)  # (warm-up of the data for the next runs)
    trainer = Trainer(config(tmp_path, name="again", log_every=1))
    seen: list[dict] = []

    def emit(e):
        seen.append(e)
        if e["event"] == "step" and e["step"] in asks:
            trainer.commands.put(make_command("set_batch_size", batch_size=asks[e["step"]]))

    trainer.emit = emit
    assert trainer.run()["event"] == "finished"
    changes = of(seen, "batch_size_changed")
    assert [(e["batch_size"], e["pending"]) for e in changes] == [(64, 256), (64, 128), (64, None)]
    assert trainer.config.batch_size == 64
    assert steps_of_epochs(seen) == [math.ceil(len(trainer.data.x_train) / 64)] * 3
    assert load_run(tmp_path / "runs" / "again").changed == {}


def test_resume_goes_on_with_the_new_batch_size_and_the_schedule_where_it_was(tmp_path, monkeypatch):
    """A run stopped mid-epoch after a change resumes with the changed batch size and its schedule's numbering:
    bit for bit the weights of the same run left to finish."""
    monkeypatch.setenv("TUINET_THREADS", "1")
    whole, _ = run_with(tmp_path, lambda e: e["event"] == "epoch" and e["epoch"] == 1, 48, schedule="cosine",
                        name="whole")
    trainer = Trainer(config(tmp_path, name="cut", log_every=1, schedule="cosine",
                             dataset_defaults=["batch_size", "optimizer"]))  # as if the dataset's row gave them
    n = len(whole.data.x_train)
    n1 = math.ceil(n / 64)

    def emit(e):
        if e["event"] == "epoch" and e["epoch"] == 1:
            trainer.commands.put(make_command("set_batch_size", batch_size=48))
        if e["event"] == "step" and e["step"] == n1 + 7:
            trainer.commands.put(make_command("stop"))

    trainer.emit = emit
    assert trainer.run()["event"] == "stopped"
    ckpt = load_checkpoint(RunDir(tmp_path / "runs" / "cut").latest)
    assert ckpt.extra["config"]["batch_size"] == 48
    assert ckpt.extra["trainer"]["schedule_offset"] == n1 - math.ceil(n / 48)
    resumed = Trainer.resume(RunDir(tmp_path / "runs" / "cut"))
    assert resumed.config.dataset_defaults == ["optimizer"]  # 48 is no dataset's default: not said to be one
    assert resumed.run()["event"] == "finished"
    assert resumed.config.batch_size == 48
    a, b = whole.model.get_weights(), resumed.model.get_weights()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert RunDir(tmp_path / "runs" / "cut").read_json("config.json")["batch_size"] == 64  # where it started


def test_a_size_asked_for_before_a_stop_survives_the_resume(tmp_path):
    trainer = Trainer(config(tmp_path, name="live", log_every=1))
    done = threading.Event()

    def emit(e):
        if e["event"] == "step" and e["step"] == 3:
            trainer.commands.put(make_command("set_batch_size", batch_size=200))
            trainer.commands.put(make_command("stop"))
        if e["event"] == "batch_size_changed":
            done.set()

    trainer.emit = emit
    assert trainer.run()["event"] == "stopped" and done.is_set()
    assert trainer.config.batch_size == 64
    resumed = Trainer.resume(RunDir(tmp_path / "runs" / "live"))
    seen: list[dict] = []
    resumed.emit = seen.append
    assert resumed.run()["event"] == "finished"
    n = len(resumed.data.x_train)
    assert steps_of_epochs(seen)[1:] == [math.ceil(n / 200)] * 2  # epoch 1 finished in 64s, then 200s
    assert of(seen, "epoch")[0]["step"] == math.ceil(n / 64)
    assert load_run(tmp_path / "runs" / "live").changed == {"batch_size": [64, 200]}


def test_the_compare_screen_and_a_branch_see_the_changed_batch_size(tmp_path):
    run_with(tmp_path, lambda e: e["event"] == "epoch" and e["epoch"] == 1, 128, keep_epochs=3)
    assert load_run(tmp_path / "runs" / "live").changed == {"batch_size": [64, 128]}
    assert branch_config("live@2", {"name": "b", "runs_dir": str(tmp_path / "runs")}).batch_size == 128
    assert branch_config("live@1", {"name": "c", "runs_dir": str(tmp_path / "runs")}).batch_size == 64


def test_asked_after_the_last_epoch_it_is_refused(tmp_path):
    trainer = Trainer(config(tmp_path, name="live", epochs=1))
    session = Session(trainer)
    events: list[dict] = []
    refused = threading.Event()

    def listen(e):
        events.append(e)
        if e["event"] == "epoch":
            trainer.commands.put(make_command("set_batch_size", batch_size=32))
        if e["event"] == "log" and "refused" in e["message"]:
            refused.set()

    session.add_listener(listen)
    session.start()
    session.join(60)
    assert refused.is_set()
    assert not of(events, "batch_size_changed")
    assert any("no epoch is left" in e["message"] for e in of(events, "log"))


@pytest.mark.parametrize("value", [0, -5, 65537, 2.5, "64", True, None])
def test_the_command_is_checked(value):
    with pytest.raises(ConfigError, match="batch size must be a whole number from 1 to 65,536"):
        validate_command({"command": "set_batch_size", "batch_size": value})
    with pytest.raises(ConfigError, match="needs field 'batch_size'"):
        validate_command({"command": "set_batch_size"})
    assert validate_command({"command": "set_batch_size", "batch_size": 65536, "scale_lr": True})
    with pytest.raises(ConfigError, match="field 'scale_lr' must be true or false"):
        validate_command({"command": "set_batch_size", "batch_size": 8, "scale_lr": 1})


def test_the_compare_screens_curves_count_epochs_and_samples_in_the_batches_of_their_time(tmp_path):
    """Read back from metrics.jsonl (the Compare screen's reader): after the change at epoch 1, a step is 1/13 of an
    epoch and 128 samples, not 1/25 and 64; mid-epoch validation points and the change's line sit on those axes."""
    trainer, events = run_with(tmp_path, lambda e: e["event"] == "epoch" and e["epoch"] == 1, 128,
                               val_every=5, epochs=2)
    n = len(trainer.data.x_train)
    n1, n2 = math.ceil(n / 64), math.ceil(n / 128)
    reader = CurveReader(tmp_path / "runs" / "live" / "metrics.jsonl")
    reader.poll()
    assert reader.setting_changes("epoch") == [1.0]
    assert reader.setting_changes("step") == [n1]
    assert reader.setting_changes("samples") == [n1 * 64]
    val = reader.curve("val_loss")
    late = [(s, e, x) for s, e, x in zip(val.step, val.epoch, val.samples) if s > n1]
    assert late and all(e == pytest.approx(1 + (s - n1) / n2) for s, e, _ in late)
    assert all(x == (n1 * 64) + (s - n1) * 128 for s, _, x in late)
    train = reader.curve("train_loss")
    assert train.samples[-1] == n1 * 64 + n2 * 128 and train.epoch[-1] == pytest.approx(2.0)


def test_the_lr_can_be_scaled_with_the_batch(tmp_path):
    """scale_lr: when the size applies, the lr is multiplied by new/old size (the linear scaling rule), an
    lr_changed from source "batch"; a schedule goes on from the new base."""
    trainer = Trainer(config(tmp_path, name="live", log_every=1, schedule="cosine"))
    events: list[dict] = []

    def emit(e):
        events.append(e)
        if e["event"] == "step" and e["step"] == 4:
            trainer.commands.put(make_command("set_batch_size", batch_size=16, scale_lr=True))

    trainer.emit = emit
    assert trainer.run()["event"] == "finished"
    asked, applied = of(events, "batch_size_changed")
    assert asked["pending"] == 16 and asked["scale_lr"] is True
    assert applied["batch_size"] == 16 and applied["scale_lr"] is True
    (lr,) = of(events, "lr_changed")
    n1 = math.ceil(len(trainer.data.x_train) / 64)
    assert lr["source"] == "batch" and lr["step"] == applied["step"] == n1
    assert lr["lr"] == pytest.approx(lr["old_lr"] / 4) and lr["base_lr"] == pytest.approx(0.003 / 4)
    first = of(events, "step")[n1]
    n2 = math.ceil(len(trainer.data.x_train) / 16)
    assert first["lr"] == pytest.approx(0.003 / 4 * 0.5 * (1 + math.cos(math.pi * n2 / (3 * n2))))
    log = (tmp_path / "runs" / "live" / "log.txt").read_text()
    assert "batch size 16, the lr scaled with it, from epoch 2" in log and "(batch)" in log


def test_without_scale_lr_the_lr_is_left_alone(tmp_path):
    trainer, events = run_with(tmp_path, lambda e: e["event"] == "epoch" and e["epoch"] == 1, 16)
    assert not of(events, "lr_changed") and of(events, "batch_size_changed")[0]["scale_lr"] is False
    assert trainer.optimizer.lr == 0.003
