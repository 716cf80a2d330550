"""Branching a run (``tuinet train --from RUN[@EPOCH]``) and the per-epoch checkpoints it starts from.

Small real runs on the digits set (1,437 training samples: 23 steps per epoch at batch 64), which train in well
under a second once the kernels are cached.
"""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from tuinet.engine.checkpoint import load_checkpoint
from tuinet.errors import ConfigError, DataError, ModelError
from tuinet.protocol import make_command
from tuinet.training.branch import branch_config, split_ref
from tuinet.training.config import TrainConfig
from tuinet.training.rundir import RunDir
from tuinet.training.trainer import Trainer

DIGITS = dict(dataset="digits", model="64", batch_size=64, seed=5)


def train(tmp_path, name, emit=None, **kw):
    cfg = TrainConfig(**{**DIGITS, "runs_dir": str(tmp_path / "runs"), "name": name, **kw})
    events: list[dict] = []
    t = Trainer(cfg, emit=emit or events.append)
    final = t.run()
    assert final["event"] in ("finished", "stopped"), final
    return t, events


def branch(tmp_path, ref, **options):
    """A trainer for ``tuinet train --from REF`` with these options (as the command line passes them)."""
    cfg = branch_config(ref, {"runs_dir": str(tmp_path / "runs"), **options})
    events: list[dict] = []
    return Trainer(cfg, emit=events.append), events


def of(events, kind):
    return [e for e in events if e["event"] == kind]


def arrays_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


@pytest.fixture
def parent(tmp_path):
    """A finished 4-epoch digits run keeping every epoch's checkpoint (dropout and a step schedule, so the random
    state and the schedule's position both matter)."""
    t, events = train(tmp_path, "p", epochs=4, keep_epochs=4, dropout=0.2, schedule="step", step_size=2, lr=0.003)
    return t, events


# --- per-epoch checkpoints ------------------------------------------------------------------------------------------


def test_keep_epochs_keeps_the_last_k_epochs_private_and_atomic(tmp_path):
    train(tmp_path, "k", epochs=5, keep_epochs=2)
    rd = RunDir(tmp_path / "runs" / "k")
    kept = rd.epoch_checkpoints()
    assert list(kept) == [4, 5]
    assert [p.name for p in kept.values()] == ["epoch-0004.npz", "epoch-0005.npz"]
    for n, path in kept.items():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert load_checkpoint(path).extra["trainer"]["epoch"] == n
    # the last epoch's file holds what latest.npz holds; latest and best stay as they were
    arrays_equal(load_checkpoint(kept[5]).prefixed("model"), load_checkpoint(rd.latest).prefixed("model"))
    assert rd.best.is_file()
    assert not list(rd.path.glob(".*.tmp"))


def test_keep_epochs_zero_keeps_none_and_the_option_is_checked(tmp_path):
    train(tmp_path, "none", epochs=2, keep_epochs=0)
    rd = RunDir(tmp_path / "runs" / "none")
    assert rd.epoch_checkpoints() == {} and rd.latest.is_file()
    with pytest.raises(ConfigError, match="keep_epochs"):
        TrainConfig(keep_epochs=-1)


def test_an_epoch_checkpoint_survives_the_next_latest_write(tmp_path):
    """epoch-N is a link to the latest.npz written at the end of epoch N: the next epoch replaces latest.npz with
    a new file, so epoch-N keeps epoch N's weights."""
    train(tmp_path, "links", epochs=3, keep_epochs=3)
    rd = RunDir(tmp_path / "runs" / "links")
    w = {n: load_checkpoint(p).prefixed("model") for n, p in rd.epoch_checkpoints().items()}
    assert not np.array_equal(w[1]["dense_3.W"], w[2]["dense_3.W"])
    assert not np.array_equal(w[2]["dense_3.W"], w[3]["dense_3.W"])
    assert load_checkpoint(rd.epoch_checkpoint(2)).extra["trainer"]["global_step"] == 2 * 23


# --- the branch point -----------------------------------------------------------------------------------------------


def test_a_branch_starts_from_the_parents_weights_at_the_branch_point(tmp_path, parent):
    """Before its first step, the branch's model holds exactly the parent's epoch-2 checkpoint arrays."""
    ck = load_checkpoint(tmp_path / "runs" / "p" / "epoch-0002.npz")
    t, _ = branch(tmp_path, "p@2", lr=0.0005)
    t.prepare()
    arrays_equal(t.model.get_weights(), ck.prefixed("model"))
    assert (t.epoch, t.global_step, t.step_in_epoch) == (2, 2 * 23, 0)
    # and the epoch-2 weights are not the final ones (the test can fail)
    final = load_checkpoint(tmp_path / "runs" / "p" / "latest.npz").prefixed("model")
    assert not any(np.array_equal(final[k], v) for k, v in ck.prefixed("model").items())


def test_a_changed_dropout_keeps_every_weight(tmp_path, parent):
    """Dropout layers come and go (their indices shift the layer names); every weight goes to its layer."""
    ck = load_checkpoint(tmp_path / "runs" / "p" / "epoch-0003.npz")
    saved = ck.build_model()
    for dropout in (0.0, 0.5):
        t, _ = branch(tmp_path, "p@3", dropout=dropout)
        t.prepare()
        assert len(t.model.params) == len(saved.params)
        for a, b in zip(t.model.params, saved.params):
            assert np.array_equal(a, b)
    assert [type(x).__name__ for x in t.model.layers].count("Dropout") == 1


def test_a_branch_with_unchanged_settings_reproduces_the_parent_exactly(tmp_path, parent):
    """From epoch 2 with nothing changed, the branch trains epochs 3 and 4 exactly as the parent did: the same
    weights, optimizer state and validation losses (shuffle order, dropout masks, Adam's moments and step count,
    and the step schedule's position all carried over). This is what `tuinet resume` guarantees, from any kept
    epoch."""
    _, parent_events = parent
    t, events = branch(tmp_path, "p@2")
    final = t.run()
    assert final["event"] == "finished" and final["epochs"] == 4 and final["steps"] == 4 * 23
    p4 = load_checkpoint(tmp_path / "runs" / "p" / "epoch-0004.npz")
    mine = load_checkpoint(tmp_path / "runs" / t.run_dir.name / "latest.npz")
    arrays_equal(mine.prefixed("model"), p4.prefixed("model"))
    arrays_equal(mine.prefixed("optim"), p4.prefixed("optim"))
    theirs = {e["epoch"]: e["val_loss"] for e in of(parent_events, "epoch")}
    assert [(e["epoch"], e["val_loss"]) for e in of(events, "epoch")] == [(3, theirs[3]), (4, theirs[4])]
    assert t.optimizer.lr == pytest.approx(0.003 * 0.5)  # the step schedule's second period, as in the parent


def test_a_branch_from_a_stopped_runs_mid_epoch_checkpoint_equals_its_resume(tmp_path):
    """A run stopped mid-epoch: branching from its latest checkpoint trains exactly as resuming it does."""
    cfg = TrainConfig(**{**DIGITS, "runs_dir": str(tmp_path / "runs"), "name": "s", "epochs": 3, "dropout": 0.1,
                         "log_every": 1, "schedule": "cosine"})
    t = Trainer(cfg)
    t.emit = lambda e: t.commands.put(make_command("stop")) if e["event"] == "step" and e["step"] == 30 else None
    assert t.run()["event"] == "stopped"
    b, _ = branch(tmp_path, "s")
    assert b.run()["event"] == "finished"
    r = Trainer.resume(RunDir(tmp_path / "runs" / "s"))
    assert r.run()["event"] == "finished"
    assert b.config.parent["step"] == 30 and b.config.parent["checkpoint"] == "latest.npz"
    arrays_equal(b.model.get_weights(), r.model.get_weights())


def test_the_parent_is_recorded_and_epochs_continue_from_the_branch_point(tmp_path, parent):
    t, events = branch(tmp_path, "p@3", lr=0.0001, epochs=6, keep_epochs=1)
    assert t.run()["event"] == "finished"
    rd = t.run_dir
    assert rd.name == "p-from3"
    cfg = rd.read_json("config.json")
    assert cfg["parent"] == {"run": "p", "epoch": 3, "step": 3 * 23, "checkpoint": "epoch-0003.npz",
                             "path": str((tmp_path / "runs" / "p").resolve())}
    assert cfg["lr"] == 0.0001 and cfg["dropout"] == 0.2 and cfg["epochs"] == 6  # the rest is the parent's
    started = of(events, "started")[0]
    assert started["parent"] == {**cfg["parent"], "optimizer_state": "carried"}
    assert (started["epoch"], started["step"], started["epochs"]) == (3, 69, 6)
    assert [e["epoch"] for e in of(events, "epoch")] == [4, 5, 6]
    assert any("branched from run p at epoch 3" in e["message"] for e in of(events, "log"))
    assert list(rd.epoch_checkpoints()) == [6]
    # the branch's own record: its best is over its own epochs, its metrics begin at the branch point
    assert 4 <= rd.read_json("status.json")["epoch"] == 6
    logged = [e for e in rd.events() if e["event"] == "started"]
    assert logged[0]["parent"]["run"] == "p"
    # a second branch from the same point gets the next free name, and a branch of a branch works
    t2, _ = branch(tmp_path, "p@3")
    t2.prepare()
    t2.create_run_dir()
    assert t2.run_dir.name == "p-from3-2"
    t2.run_dir.unlock()
    t3, _ = branch(tmp_path, "p-from3@6", epochs=7)
    assert t3.run()["event"] == "finished" and t3.config.parent["run"] == "p-from3"


def test_a_stopped_branch_resumes_as_a_branch(tmp_path, parent):
    t, _ = branch(tmp_path, "p@2", epochs=5)
    t.emit = lambda e: t.commands.put(make_command("stop")) if e["event"] == "epoch" and e["epoch"] == 3 else None
    assert t.run()["event"] == "stopped"
    r = Trainer.resume(t.run_dir)
    events: list[dict] = []
    r.emit = events.append
    assert r.run()["event"] == "finished" and r.epoch == 5
    assert of(events, "started")[0]["parent"]["run"] == "p"
    assert r.config.parent["epoch"] == 2


@pytest.mark.parametrize("options, state", [
    ({"lr": 0.0001}, "carried"),
    ({"optimizer": "sgd"}, "fresh"),
    ({"weight_decay": 0.01}, "carried"),  # as the app changes it on a running optimizer (set_regularization)
    ({"betas": (0.8, 0.99)}, "fresh"),
])
def test_optimizer_state_carries_over_only_when_the_optimizer_is_unchanged(tmp_path, parent, options, state):
    t, events = branch(tmp_path, "p@2", **options)
    t.prepare()
    ck = load_checkpoint(tmp_path / "runs" / "p" / "epoch-0002.npz")
    _, arrays = t.optimizer.state_dict()
    if state == "carried":
        assert t.optimizer.t == ck.meta["optimizer"]["t"]
        arrays_equal(arrays, ck.prefixed("optim"))
        assert t.optimizer.lr == pytest.approx(options.get("lr", ck.meta["optimizer"]["hyperparams"]["lr"]))
        assert t.optimizer.hyper["weight_decay"] == options.get("weight_decay", 0.0)
    else:
        assert t.optimizer.t == 0 and all(not a.any() for a in arrays.values())
    assert t.branch_info["optimizer_state"] == state


def test_a_changed_batch_size_counts_steps_in_the_new_batches(tmp_path, parent):
    t, events = branch(tmp_path, "p@2", batch_size=32)
    t.prepare()
    assert t.steps_per_epoch == 45 and t.global_step == 2 * 45 and t.config.parent["step"] == 2 * 23
    assert t.run()["event"] == "finished" and t.global_step == 4 * 45


def test_without_options_the_branch_goes_on_with_the_optimizer_and_lr_the_parent_had(tmp_path):
    """The parent swapped to SGD at 0.05 while it trained: a branch without optimizer options carries that on
    (and says so in its configuration), rather than restarting the Adam the parent's config.json names."""
    cfg = TrainConfig(**{**DIGITS, "runs_dir": str(tmp_path / "runs"), "name": "sw", "epochs": 3, "keep_epochs": 3})
    t = Trainer(cfg)
    t.emit = lambda e: t.commands.put(make_command("set_optimizer", name="momentum", lr=0.05)) \
        if e["event"] == "epoch" and e["epoch"] == 1 else None
    assert t.run()["event"] == "finished"
    b, _ = branch(tmp_path, "sw@2")
    assert (b.config.optimizer, b.config.momentum, b.config.lr) == ("sgd", 0.9, 0.05)
    b.prepare()
    assert b.branch_info["optimizer_state"] == "carried" and b.optimizer.name == "sgd"
    # a new optimizer takes its own default lr, not the other one's
    b2, _ = branch(tmp_path, "sw@2", optimizer="adam")
    assert b2.config.lr is None


# --- what a branch cannot change ------------------------------------------------------------------------------------


def test_a_branch_refuses_another_architecture(tmp_path, parent):
    t, _ = branch(tmp_path, "p@2", model="32")
    with pytest.raises(ModelError, match=r"--model 32 does not fit run p's checkpoint.*keeps its parent's"):
        t.prepare()
    t, _ = branch(tmp_path, "p@2", activation="tanh")
    with pytest.raises(ModelError, match="--activation tanh does not fit"):
        t.prepare()


@pytest.mark.parametrize("key, value", [("seed", 6), ("val_split", 0.2), ("limit", 1000), ("normalize", "standard"),
                                        ("dataset", "iris")])
def test_a_branch_keeps_its_parents_data(tmp_path, parent, key, value):
    with pytest.raises(ConfigError, match=f"--{key.replace('_', '-')} cannot change on a branch"):
        branch_config("p@2", {"runs_dir": str(tmp_path / "runs"), key: value})


def test_a_branch_refuses_data_that_changed_on_disk(tmp_path):
    rows = np.random.default_rng(0).normal(size=(200, 3))
    labels = (rows[:, 0] > 0).astype(int)
    csv = tmp_path / "t.csv"

    def write(scale):
        csv.write_text("a,b,c,y\n" + "".join(f"{r[0] * scale},{r[1]},{r[2]},{y}\n" for r, y in zip(rows, labels)))

    write(1.0)
    train(tmp_path, "csv", dataset=str(csv), model="8", epochs=2, normalize="standard")
    write(3.0)
    t, _ = branch(tmp_path, "csv@1")
    with pytest.raises(DataError, match="differs from what run csv trained on"):
        t.prepare()


def test_epochs_must_reach_past_the_branch_point(tmp_path, parent):
    with pytest.raises(ConfigError, match="its 4 planned epochs: run p had completed 4 epochs"):
        branch_config("p", {"runs_dir": str(tmp_path / "runs")})
    with pytest.raises(ConfigError, match="--epochs 3: .* more than 3"):
        branch_config("p@3", {"runs_dir": str(tmp_path / "runs"), "epochs": 3})


def test_refs_and_parent_records():
    assert split_ref("run@5") == ("run", "5")
    assert split_ref("run@best") == ("run", "best")
    assert split_ref("run") == ("run", "latest")
    assert split_ref("a@b") == ("a@b", "latest")
    good = {"run": "p", "epoch": 2, "step": 46, "checkpoint": "epoch-0002.npz"}
    assert TrainConfig(parent=good).parent == good
    for bad in ({**good, "checkpoint": "../x.npz"}, {**good, "epoch": -1}, {**good, "run": ""}, "p@2",
                {**good, "path": "relative"}):
        with pytest.raises(ConfigError, match="parent"):
            TrainConfig(parent=bad)
    again = TrainConfig.from_dict(json.loads(json.dumps(TrainConfig(parent=good, keep_epochs=2).to_dict())))
    assert again.parent == good and again.keep_epochs == 2
