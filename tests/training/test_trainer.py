"""The training loop: exact resume, determinism, commands between steps, early stopping, divergence guard, clipping.

Small real runs: a 2,000-sample MNIST subset (32 steps per epoch at batch 64) or tiny synthetic tables.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from tuinet.data import Dataset, Normalizer
from tuinet.engine.checkpoint import load_checkpoint
from tuinet.training.config import TrainConfig
from tuinet import protocol
from tuinet.protocol import make_command, to_json
from tuinet.training.rundir import RunDir
from tuinet.training.session import Session
from tuinet.training.trainer import Trainer

MNIST = dict(dataset="mnist", limit=2000, model="64", batch_size=64, seed=3)


def config(tmp_path, **kw) -> TrainConfig:
    base = {**MNIST, "runs_dir": str(tmp_path / "runs"), "epochs": 2}
    base.update(kw)
    return TrainConfig(**base)


def run(cfg: TrainConfig, **kw) -> tuple[Trainer, list[dict]]:
    events: list[dict] = []
    t = Trainer(cfg, emit=events.append, **kw)
    final = t.run()
    assert final["event"] in ("finished", "stopped"), final
    return t, events


def weights_equal(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=atol, err_msg=k)


def of(events, kind):
    return [e for e in events if e["event"] == kind]


# --- exact resume ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_epoch_resume_one_epoch_equals_two_epochs(tmp_path):
    """Weights, optimizer state, shuffle and dropout rng, and the schedule position survive a resume.

    Tolerance: exact equality (atol 0). Both runs execute the same float32 operations in the same order on
    the same thread counts, so nothing but a lost piece of state could make them differ.
    """
    kw = dict(schedule="step", gamma=0.5, dropout=0.2, optimizer="adam", lr=0.003)
    straight, ev_straight = run(config(tmp_path, name="straight", epochs=2, **kw))
    first, _ = run(config(tmp_path, name="split", epochs=1, **kw))
    assert first.epoch == 1
    resumed = Trainer.resume(RunDir(tmp_path / "runs" / "split"), epochs=2)
    final = resumed.run()
    assert final["event"] == "finished" and final["epochs"] == 2
    assert final["dataset"] == first.config.dataset == ev_straight[-1]["dataset"]  # what the summary's offers follow
    weights_equal(straight.model.get_weights(), resumed.model.get_weights(), atol=0.0)
    assert resumed.global_step == straight.global_step == 64
    # the step schedule went on from its position: epoch 2 ran at half the base lr in both
    assert resumed.optimizer.lr == pytest.approx(straight.optimizer.lr) == pytest.approx(0.0015)
    # and the final checkpoint on disk holds the same weights
    ck = load_checkpoint(tmp_path / "runs" / "split" / "latest.npz")
    weights_equal(ck.prefixed("model"), straight.model.get_weights())
    assert RunDir(tmp_path / "runs" / "split").read_json("status.json")["status"] == "finished"


@pytest.mark.slow
def test_stop_mid_epoch_then_resume_equals_straight_run(tmp_path):
    """A "stop" command in the middle of an epoch saves the exact position (step in epoch, the epoch's shuffle,
    cosine position, the augmentation's random state); resuming gives the straight run's weights exactly."""
    kw = dict(schedule="cosine", optimizer="momentum", lr=0.05, epochs=2, log_every=1, dropout=0.1,
              augment="shift=2,rotate=10,erase=0.3")
    straight, _ = run(config(tmp_path, name="straight", **kw))

    cfg = config(tmp_path, name="stopped", **kw)
    events: list[dict] = []
    t = Trainer(cfg)

    def emit(e):
        events.append(e)
        if e["event"] == "step" and e["step"] == 45:  # epoch 2, step 13 of 32
            t.commands.put(make_command("stop"))

    t.emit = emit
    final = t.run()
    assert final["event"] == "stopped" and final["step"] == 45 and final["epoch"] == 1
    rd = RunDir(tmp_path / "runs" / "stopped")
    assert rd.read_json("status.json")["status"] == "stopped"
    assert max(e["step"] for e in of(events, "step")) == 45  # no step ran after the command

    resumed = Trainer.resume(rd)
    out = resumed.run()
    assert out["event"] == "finished" and resumed.global_step == 64
    weights_equal(straight.model.get_weights(), resumed.model.get_weights(), atol=0.0)


@pytest.mark.slow
def test_same_seed_same_config_identical_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("TUINET_THREADS", "1")
    kw = dict(epochs=2, dropout=0.1, log_every=5, schedule="onecycle")

    def metrics():
        _, events = run(config(tmp_path, **kw), run_dir=False)
        drop = {"time", "seconds", "samples_per_second"}
        return [{k: v for k, v in e.items() if k not in drop} for e in events if e["event"] in ("step", "epoch")]

    a, b = metrics(), metrics()
    assert len(a) > 10
    assert to_json({"m": a}) == to_json({"m": b})
    # and a different seed really changes them (the comparison can fail)
    _, other = run(config(tmp_path, seed=4, **kw), run_dir=False)
    assert [e["loss"] for e in of(other, "step")] != [e["loss"] for e in a if e["event"] == "step"]


# --- commands between steps ------------------------------------------------------------------------------------


def test_commands_pause_set_lr_set_optimizer_save_evaluate_stop(tmp_path):
    cfg = config(tmp_path, name="cmds", epochs=30, log_every=1, optimizer="adam", lr=0.002)
    trainer = Trainer(cfg)
    session = Session(trainer)
    events: list[dict] = []
    got = {k: threading.Event() for k in ("paused", "lr_changed", "optimizer_changed", "checkpoint_saved",
                                          "evaluated", "resumed")}

    def listen(e):
        events.append(e)
        if e["event"] == "step" and e["step"] == 3:
            # the training thread checks the queue before its next step: the pause lands right after step 3
            trainer.commands.put(make_command("pause"))
        if e["event"] in got:
            got[e["event"]].set()

    session.add_listener(listen)
    assert isinstance(session, protocol.Session) and not session.started
    session.start()
    assert session.started
    try:
        assert got["paused"].wait(60)
        step = trainer.global_step
        assert step == 3 and session.state["paused"]
        before = trainer.model.get_weights()

        session.send(make_command("set_lr", lr=0.0123))
        assert got["lr_changed"].wait(10)
        # the trainer went round its paused loop to apply that command, and ran no step on the way
        assert trainer.global_step == step, "steps ran while paused"
        assert trainer.optimizer.lr == pytest.approx(0.0123)

        session.send(make_command("set_optimizer", name="sgd", hyperparams={"momentum": 0.9}))
        assert got["optimizer_changed"].wait(10)
        opt = trainer.optimizer
        assert opt.name == "sgd" and opt.lr == pytest.approx(0.0123)  # the current lr carries over
        assert opt.t == 0 and all(not np.any(a) for a in opt.state_dict()[1].values()), "state is not fresh"
        weights_equal(before, trainer.model.get_weights())  # swapping keeps the weights

        session.send(make_command("save"))
        assert got["checkpoint_saved"].wait(10)
        ck = load_checkpoint(tmp_path / "runs" / "cmds" / "latest.npz")
        weights_equal(ck.prefixed("model"), before)
        assert ck.meta["optimizer"]["name"] == "sgd" and ck.extra["trainer"]["global_step"] == 3

        session.send(make_command("evaluate"))
        assert got["evaluated"].wait(30)
        ev = of(events, "evaluated")[-1]
        ref = trainer.model.evaluate(trainer.data.x_test, trainer.data.y_test)
        assert ev["split"] == "test" and ev["loss"] == pytest.approx(ref["loss"])
        assert ev["accuracy"] == pytest.approx(ref["accuracy"])
        assert trainer.global_step == step  # none of these commands ran a step

        session.send(make_command("resume"))
        assert got["resumed"].wait(10)
        deadline = time.time() + 30
        while trainer.global_step < step + 5 and time.time() < deadline:
            time.sleep(0.01)
        assert trainer.global_step >= step + 5
        # steps after the swap are SGD steps at the new learning rate
        later = [e for e in of(events, "step") if e["step"] > step]
        assert later and all(e["lr"] == pytest.approx(0.0123) for e in later)
        session.send(make_command("stop"))
        assert session.join(30)
    finally:
        if session.running:
            trainer.commands.put(make_command("stop"))
            session.join(30)
    final = session.last["stopped"]
    assert final["epoch"] < 30
    rd = RunDir(tmp_path / "runs" / "cmds")
    assert rd.read_json("status.json")["status"] == "stopped"
    assert load_checkpoint(rd.latest).extra["trainer"]["global_step"] == trainer.global_step
    kinds = [e["event"] for e in events]
    assert kinds.index("paused") < kinds.index("lr_changed") < kinds.index("optimizer_changed") < kinds.index("resumed")


def test_bad_command_is_refused_not_fatal(tmp_path):
    cfg = config(tmp_path, epochs=1, log_every=1)
    events: list[dict] = []
    t = Trainer(cfg, run_dir=False)

    def emit(e):
        events.append(e)
        if e["event"] == "step" and e["step"] == 2:
            t.commands.put({"command": "set_optimizer", "name": "nonsense"})

    t.emit = emit
    assert t.run()["event"] == "finished"
    assert any(e["event"] == "log" and e["level"] == "error" and "set_optimizer" in e["message"] for e in events)


# --- early stopping, plateau -----------------------------------------------------------------------------------


def noise_dataset(n_train=24, n_val=60, d=20, k=3, seed=0) -> Dataset:
    """Random features with random labels: a big network memorizes the training set, validation loss climbs."""
    rng = np.random.default_rng(seed)
    x = [np.ascontiguousarray(rng.standard_normal((n, d)), dtype=np.float32) for n in (n_train, n_val, n_val)]
    y = [rng.integers(0, k, n).astype(np.int64) for n in (n_train, n_val, n_val)]
    return Dataset(name="noise", task="classification", x_train=x[0], y_train=y[0], x_val=x[1], y_val=y[1],
                   x_test=x[2], y_test=y[2], input_shape=(d,), class_names=[str(i) for i in range(k)],
                   normalizer=Normalizer("none").fit(x[0]))


def test_early_stopping_restores_best_weights_and_plateau_lowers_lr(tmp_path):
    cfg = TrainConfig(dataset="noise", model="128,128", optimizer="adam", lr=0.01, epochs=200, batch_size=8,
                      patience=4, schedule="plateau", plateau_patience=1, plateau_factor=0.5,
                      runs_dir=str(tmp_path / "runs"), name="es")
    events: list[dict] = []
    t = Trainer(cfg, dataset=noise_dataset(), emit=events.append)
    final = t.run()
    assert final["event"] == "finished"
    stop = of(events, "early_stopped")
    assert len(stop) == 1
    stopped_at, best_epoch = stop[0]["epoch"], stop[0]["best_epoch"]
    assert stopped_at < 200 and stopped_at == best_epoch + 4
    val = [e["val_loss"] for e in of(events, "epoch")]
    assert len(val) == stopped_at and min(val) == pytest.approx(val[best_epoch - 1])
    # the model now holds the best epoch's weights: its validation loss is the best one, not the last one
    d = t.data
    assert t.model.evaluate(d.x_val, d.y_val)["loss"] == pytest.approx(stop[0]["best_val_loss"], rel=1e-6)
    assert val[-1] > stop[0]["best_val_loss"]
    weights_equal(load_checkpoint(tmp_path / "runs" / "es" / "best.npz").prefixed("model"), t.model.get_weights())
    # latest.npz (what `tuinet eval RUN` reads) holds the restored weights too, so it matches the reported test
    weights_equal(load_checkpoint(tmp_path / "runs" / "es" / "latest.npz").prefixed("model"), t.model.get_weights())
    assert final["test_loss"] == pytest.approx(t.model.evaluate(d.x_test, d.y_test)["loss"])
    # reduce-on-plateau fired while the validation loss did not improve
    plateau = [e for e in of(events, "lr_changed") if e["source"] == "plateau"]
    assert plateau and plateau[0]["lr"] == pytest.approx(plateau[0]["old_lr"] * 0.5)


# --- divergence guard ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*encountered in matmul:RuntimeWarning")
def test_divergence_guard_rolls_back_and_training_finishes(tmp_path):
    # a deeper net (the mlp preset) overflows to inf/NaN at this rate; a one-layer net only gets huge finite losses
    cfg = config(tmp_path, name="boom", model="mlp", optimizer="sgd", lr=1e4, epochs=2, log_every=1)
    t, events = run(cfg)
    diverged, rolled = of(events, "diverged"), of(events, "rolled_back")
    assert diverged and rolled
    assert all(e["action"] == "rolled_back" and e["new_lr"] == pytest.approx(e["lr"] * e["factor"]) for e in diverged)
    # the first rollback halves the lr; one that follows a recent rollback cuts it tenfold
    assert diverged[0]["factor"] == 0.5 and not diverged[0]["repeated"]
    assert all(e["factor"] == (0.1 if e["repeated"] else 0.5) for e in diverged)
    assert t.optimizer.lr < 1e4
    assert of(events, "finished")
    for w in t.model.get_weights().values():
        assert np.all(np.isfinite(w))
    rd = RunDir(tmp_path / "runs" / "boom")
    for name in ("latest.npz", "best.npz"):
        if (rd.path / name).exists():
            for k, a in load_checkpoint(rd.path / name).arrays.items():
                if a.dtype.kind == "f":
                    assert np.all(np.isfinite(a)), f"{name}:{k}"
    assert all(math.isfinite(e["loss"]) for e in of(events, "step"))  # a non-finite step is never reported as one


@pytest.mark.filterwarnings("ignore:.*encountered in matmul:RuntimeWarning")
def test_weights_that_overflow_validation_are_rolled_back_before_the_checkpoint(tmp_path):
    """At lr 1e8 the training losses can stay finite while the weights grow so large that validation overflows:
    the epoch end rolls back instead of reporting NaN and checkpointing those weights."""
    cfg = config(tmp_path, name="overflow", model="mlp", seed=0, optimizer="sgd", lr=1e8, epochs=1, log_every=1)
    t, events = run(cfg)
    epoch = of(events, "epoch")[0]
    assert math.isfinite(epoch["val_loss"])
    assert math.isfinite(of(events, "finished")[0]["test_loss"])
    assert of(events, "rolled_back")


@pytest.mark.filterwarnings("ignore:.*encountered in matmul:RuntimeWarning")
def test_divergence_pause_mode_waits_for_rollback_command(tmp_path):
    cfg = config(tmp_path, model="mlp", optimizer="sgd", lr=1e4, epochs=1, log_every=1, on_divergence="pause")
    t = Trainer(cfg, run_dir=False)
    events: list[dict] = []

    def emit(e):
        events.append(e)
        if e["event"] == "paused":
            t.commands.put(make_command("rollback", factor=0.001))

    t.emit = emit
    assert t.run()["event"] == "finished"
    d = of(events, "diverged")
    assert d and d[0]["action"] == "paused"
    assert of(events, "rolled_back") and of(events, "resumed")


# --- gradient clipping -----------------------------------------------------------------------------------------


def test_gradient_clipping_bounds_the_norm(tmp_path):
    norms: list[tuple[float, float]] = []

    class Recording(Trainer):
        def _clip(self):
            before = super()._clip()
            after = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in self.model.grads))
            norms.append((before, after))
            return before

    cfg = config(tmp_path, epochs=1, clip_grad=0.25, optimizer="sgd", lr=0.1)
    t = Recording(cfg, run_dir=False)
    assert t.run()["event"] == "finished"
    assert len(norms) == t.global_step
    assert any(b > 0.25 for b, _ in norms), "the test needs gradients larger than the bound"
    for b, a in norms:
        assert a <= 0.25 * (1 + 1e-5)
        if b > 0.25:
            assert a == pytest.approx(0.25, rel=1e-4)
        else:
            assert a == pytest.approx(b, rel=1e-5)


@pytest.mark.slow
def test_schedule_drives_the_learning_rate_in_training(tmp_path):
    t, events = run(config(tmp_path, epochs=2, schedule="cosine", lr=0.01, log_every=1), run_dir=False)
    lrs = [e["lr"] for e in of(events, "step")]
    assert lrs[0] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] < 0.01 * 0.01


def test_augmentation_changes_the_training_batches_and_nothing_else(tmp_path):
    """Each training batch reaches the model as moved copies of its samples (a new move per sample and step);
    the validation split, evaluated at each epoch's end, is the data as loaded."""
    assert config(tmp_path, augment=" Rotate=15, shift=2").augment == "shift=2,rotate=15"  # as config.json keeps it
    assert config(tmp_path, augment="none").augment is None
    cfg = config(tmp_path, epochs=1, limit=500, augment="shift=3")
    t = Trainer(cfg, run_dir=False)
    t.prepare()
    x_train, x_val = t.data.x_train.copy(), t.data.x_val.copy()
    seen = []
    compute = t.model.compute_gradients

    def record(x, y):
        seen.append(x.copy())
        return compute(x, y)

    t.model.compute_gradients = record
    evaluated = []
    evaluate = t.model.evaluate

    def record_eval(x, y, **kw):
        evaluated.append(x)
        return evaluate(x, y, **kw)

    t.model.evaluate = record_eval
    perm = np.random.default_rng([cfg.seed, 2]).permutation(len(x_train))  # the trainer's first epoch's order
    assert t.run()["event"] == "finished"
    assert len(seen) == t.steps_per_epoch == 8
    moved = 0
    for b, batch in enumerate(seen):
        rows = x_train[perm[b * 64:(b + 1) * 64]]
        for k in range(len(batch)):
            picture, sample = batch[k, :, :, 0], rows[k, :, :, 0]
            hits = [(dx, dy) for dx in range(-3, 4) for dy in range(-3, 4)
                    if np.array_equal(picture, np.roll(np.pad(sample, 3), (dy, dx), axis=(0, 1))[3:-3, 3:-3])]
            assert hits, (b, k)
            moved += hits != [(0, 0)]
    assert moved > 0.8 * len(x_train)  # 48 of 49 moves change a digit
    np.testing.assert_array_equal(t.data.x_train, x_train)
    np.testing.assert_array_equal(t.data.x_val, x_val)
    assert any(x is t.data.x_val for x in evaluated)  # the epoch's validation: the split itself, not a moved copy
