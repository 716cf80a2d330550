"""Changing the weight penalties and the dropout rate while a run trains (the set_regularization command).

Small real runs on a 2,000-sample MNIST subset (32 steps per epoch at batch 64), as in test_trainer.py.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tuinet.engine.checkpoint import load_checkpoint
from tuinet.errors import ConfigError
from tuinet.protocol import make_command, validate_command
from tuinet.training.branch import branch_config
from tuinet.training.compare import RunRecord, load_run, settings_diff
from tuinet.training.config import TrainConfig
from tuinet.training.rundir import RunDir
from tuinet.training.session import Session
from tuinet.training.trainer import Trainer

MNIST = dict(dataset="mnist", limit=2000, model="64,32", batch_size=64, seed=3, optimizer="adam", lr=0.003)


def config(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(**{**MNIST, "runs_dir": str(tmp_path / "runs"), "epochs": 2, **kw})


def of(events, kind):
    return [e for e in events if e["event"] == kind]


def kinds(model) -> list[str]:
    return [layer.describe() for layer in model.layers]


def weighted(weights: dict, model) -> list[np.ndarray]:
    """The model's parameters and buffers in layer order, without their names (which dropout layers shift)."""
    return [weights[f"{layer.name}.{n}"] for layer in model.layers for n, _, _ in layer.named_params()]


def paused_session(tmp_path, at_step: int = 3, **kw):
    """A session of a trainer paused after step ``at_step``; returns (trainer, session, events, got)."""
    trainer = Trainer(config(tmp_path, name="live", epochs=30, log_every=1, **kw))
    session = Session(trainer)
    events: list[dict] = []
    got = {k: threading.Event() for k in ("paused", "regularization_changed", "checkpoint_saved", "log")}

    def listen(e):
        events.append(e)
        if e["event"] == "step" and e["step"] == at_step:
            trainer.commands.put(make_command("pause"))
        if e["event"] in got:
            got[e["event"]].set()

    session.add_listener(listen)
    session.start()
    assert got["paused"].wait(60)
    return trainer, session, events, got


def changed_then_stopped(tmp_path, **settings):
    """A trainer paused after step 3, given ``settings`` by set_regularization, then stopped; returns it."""
    trainer, session, events, got = paused_session(tmp_path)
    try:
        session.send(make_command("set_regularization", **settings))
        assert got["regularization_changed"].wait(30)
    finally:
        stop(trainer, session)
    return trainer


def stop(trainer, session):
    if session.running:
        trainer.commands.put(make_command("stop"))
        session.join(30)


def test_penalties_and_dropout_change_while_paused_keeping_weights_and_optimizer_state(tmp_path):
    trainer, session, events, got = paused_session(tmp_path)
    try:
        old = trainer.model
        assert kinds(old) == ["Flatten", "Dense(64)", "ReLU", "Dense(32)", "ReLU", "Dense(10)"]
        weights, (meta, state) = old.get_weights(), trainer.optimizer.state_dict()
        state = {k: v.copy() for k, v in state.items()}
        step = trainer.global_step

        session.send(make_command("set_regularization", l2=0.01, dropout=0.3))
        assert got["regularization_changed"].wait(30)
        e = of(events, "regularization_changed")[-1]
        assert (e["l1"], e["l2"], e["dropout"]) == (0.0, 0.01, 0.3) and e["step"] == step
        assert e["previous"] == {"l1": 0.0, "l2": 0.0, "dropout": 0.0, "weight_decay": 0.0}  # Adam's default decay
        assert e["weight_decay"] == 0.0
        # the model is the one a run started with --dropout 0.3 builds, holding the same weights
        m = trainer.model
        assert kinds(m) == ["Flatten", "Dense(64)", "ReLU", "Dropout(0.3)", "Dense(32)", "ReLU", "Dropout(0.3)", "Dense(10)"]
        assert [row["describe"] for row in e["layers"]] == kinds(m) and e["num_params"] == m.num_params()
        for a, b in zip(weighted(weights, old), weighted(m.get_weights(), m)):
            np.testing.assert_array_equal(a, b)
        assert m.l2 == 0.01 and m.l1 == 0.0 and trainer.config.l2 == 0.01 and trainer.config.dropout == 0.3
        # the optimizer goes on with its moments and step count, now over the new model's arrays
        new_meta, new_state = trainer.optimizer.state_dict()
        assert new_meta == meta and new_state.keys() == state.keys()
        for k in state:
            np.testing.assert_array_equal(state[k], new_state[k])
        assert all(p is q for p, q in zip(trainer.optimizer.params, m.params))
        assert trainer.global_step == step  # no step ran to apply it

        session.send(make_command("save"))
        assert got["checkpoint_saved"].wait(30)
        ck = load_checkpoint(tmp_path / "runs" / "live" / "latest.npz")
        assert ck.extra["config"]["l2"] == 0.01 and ck.extra["config"]["dropout"] == 0.3
        assert [lc["type"] for lc in ck.meta["model"]["layers"]].count("Dropout") == 2
    finally:
        stop(trainer, session)
    rd = RunDir(tmp_path / "runs" / "live")
    assert rd.read_json("config.json")["dropout"] == 0.0  # the run's start is kept as it was

    # a resume goes on with the settings of its checkpoint: the same layers, the same penalty
    resumed = Trainer.resume(rd, epochs=1)
    resumed.prepare()
    assert kinds(resumed.model) == kinds(trainer.model) and resumed.model.l2 == 0.01
    assert resumed.config.dropout == 0.3
    final = resumed.run()
    assert final["event"] == "finished"


def test_the_penalty_changes_the_gradient_as_its_formula_says(tmp_path):
    trainer = changed_then_stopped(tmp_path, l1=0.002, l2=0.01)
    m = trainer.model
    x, y = trainer.data.x_train[:64], trainer.data.y_train[:64]
    loss, pen, _ = m.compute_gradients(x, y)
    with_pen = [g.copy() for g in m.grads]
    m.l1 = m.l2 = 0.0
    loss0, pen0, _ = m.compute_gradients(x, y)
    assert pen0 == 0.0 and loss == pytest.approx(loss0)
    ws = [layer.params[0].astype(np.float64) for layer in m.layers if layer.kind == "Dense"]  # weights, not biases
    assert pen == pytest.approx(sum(0.01 * (w ** 2).sum() + 0.002 * np.abs(w).sum() for w in ws), rel=1e-5)
    w = ws[0]
    g0 = m.grads[0].reshape(w.shape)
    np.testing.assert_allclose(with_pen[0].reshape(w.shape) - g0, 2 * 0.01 * w + 0.002 * np.sign(w), atol=2e-6)


def test_dropout_back_to_zero_removes_the_layers_and_a_model_without_a_place_for_it_refuses(tmp_path):
    trainer, session, events, got = paused_session(tmp_path, dropout=0.2)
    try:
        assert [lay.describe() for lay in trainer.model.layers].count("Dropout(0.2)") == 2
        session.send(make_command("set_regularization", dropout=0.0))
        assert got["regularization_changed"].wait(30)
        assert kinds(trainer.model) == ["Flatten", "Dense(64)", "ReLU", "Dense(32)", "ReLU", "Dense(10)"]
        assert trainer.config.dropout == 0.0
    finally:
        stop(trainer, session)

    # a spec of layers names its own dropout (or none): the rate of a run from it cannot be set
    spec = tmp_path / "net.toml"
    spec.write_text('[[layers]]\ntype = "Dense"\nunits = 16\n[[layers]]\ntype = "ReLU"\n')
    trainer, session, events, got = paused_session(tmp_path / "b", model=str(spec))
    try:
        before = kinds(trainer.model)
        session.send(make_command("set_regularization", dropout=0.3, l2=0.001))
        assert got["log"].wait(30)
        deadline = time.monotonic() + 30
        while not any("refused" in e.get("message", "") for e in of(events, "log")):
            assert time.monotonic() < deadline
            got["log"].clear()
            got["log"].wait(1)
        refused = next(e for e in of(events, "log") if "refused" in e.get("message", ""))
        assert "no dropout layers" in refused["message"]
        # nothing changed: not the layers, nor the penalty asked with it
        assert kinds(trainer.model) == before and trainer.model.l2 == 0.0 and trainer.config.l2 == 0.0
        assert not of(events, "regularization_changed")
    finally:
        stop(trainer, session)


def test_a_change_at_an_epochs_end_trains_as_a_branch_with_those_settings(tmp_path, monkeypatch):
    """Setting dropout, L2 and weight decay between epochs 1 and 2 gives bit for bit the weights of a branch from
    epoch 1 with --dropout, --l2 and --weight-decay: the same weights, optimizer state (carried over: its
    hyperparameters are the branch's), shuffle and dropout random state go on."""
    monkeypatch.setenv("TUINET_THREADS", "1")
    cfg = config(tmp_path, name="live", epochs=2, keep_epochs=2)
    trainer = Trainer(cfg)

    def emit(e):
        if e["event"] == "epoch" and e["epoch"] == 1:  # applied before the first step of epoch 2
            trainer.commands.put(make_command("set_regularization", dropout=0.25, l2=0.002, weight_decay=0.01))

    trainer.emit = emit
    assert trainer.run()["event"] == "finished"
    assert trainer.config.dropout == 0.25

    branch = Trainer(branch_config("live@1", {"dropout": 0.25, "l2": 0.002, "weight_decay": 0.01, "name": "branch",
                                              "runs_dir": str(tmp_path / "runs")}))
    assert branch.run()["event"] == "finished"
    assert trainer.optimizer.hyperparams() == branch.optimizer.hyperparams()
    assert trainer.optimizer.hyper["weight_decay"] == 0.01
    assert kinds(branch.model) == kinds(trainer.model)
    a, b = trainer.model.get_weights(), branch.model.get_weights()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_a_branch_from_a_checkpoint_after_a_change_starts_from_the_changed_settings(tmp_path):
    trainer, session, events, got = paused_session(tmp_path)
    try:
        session.send(make_command("set_regularization", dropout=0.1, l1=0.0005))
        assert got["regularization_changed"].wait(30)
        session.send(make_command("save"))
        assert got["checkpoint_saved"].wait(30)
    finally:
        stop(trainer, session)
    cfg = branch_config("live", {"name": "b", "runs_dir": str(tmp_path / "runs"), "lr": 0.001})
    assert cfg.dropout == 0.1 and cfg.l1 == 0.0005 and cfg.l2 == 0.0


@pytest.mark.parametrize("cmd, message", [
    ({}, "at least one of l1, l2, dropout"),
    ({"dropout": 1.0}, "dropout must be in [0, 1)"),
    ({"dropout": -0.1}, "dropout must be in [0, 1)"),
    ({"l2": -1}, "l2 must be a number >= 0"),
    ({"l1": float("nan")}, "l1 must be a number"),
    ({"l2": "0.1"}, "l2 must be a number"),
    ({"l2": True}, "l2 must be a number"),
    ({"weight_decay": -0.1}, "weight_decay must be a number >= 0"),
    ({"momentum": 0.9}, "takes no field 'momentum'"),
])
def test_the_command_is_checked_field_by_field(cmd, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        validate_command({"command": "set_regularization", **cmd})
    assert validate_command({"command": "set_regularization", "l2": 0, "dropout": 0.5})


def test_an_optimizer_swapped_while_training_shows_in_the_settings_diff(tmp_path):
    """Swapped from Adam to SGD + momentum (an alias: its name is sgd) mid-run: the Compare screen's diff says
    `adam → sgd` (and the weight decay the new optimizer brought), not `adam` as config.json has it."""
    trainer, session, events, got = paused_session(tmp_path)
    try:
        session.send(make_command("set_optimizer", name="momentum", hyperparams={"weight_decay": 0.001}))
        session.send(make_command("save"))
        assert got["checkpoint_saved"].wait(30)
    finally:
        stop(trainer, session)
    record = load_run(tmp_path / "runs" / "live")
    assert record.changed == {"optimizer": ["adam", "sgd"], "weight_decay": [0.0, 0.001]}
    alone = RunRecord(name="alone", path=tmp_path / "alone", status="finished", config=dict(record.config))
    assert dict(settings_diff([record, alone]))["optimizer"] == ["adam → sgd", "adam"]


def test_a_run_started_with_an_optimizers_alias_has_not_changed_it(tmp_path):
    trainer, session, events, got = paused_session(tmp_path, optimizer="momentum")
    stop(trainer, session)
    assert load_run(tmp_path / "runs" / "live").changed == {}


def test_the_compare_screen_shows_a_setting_changed_while_training_as_from_to(tmp_path):
    changed_then_stopped(tmp_path, l2=0.01, dropout=0.3)
    record = load_run(tmp_path / "runs" / "live")
    assert record.changed == {"l2": [0.0, 0.01], "dropout": [0.0, 0.3]}
    assert record.config["dropout"] == 0.0  # config.json: as it started
    # against a run of the same settings left alone, the diff names what changed, from what to what
    alone = RunRecord(name="alone", path=tmp_path / "alone", status="finished", config=dict(record.config))
    diff = dict(settings_diff([record, alone]))
    assert diff["dropout"] == ["0 → 0.3", 0.0] and diff["l2"] == ["0 → 0.01", 0.0] and "l1" not in diff


def test_weight_decay_changes_in_the_optimizer_keeping_its_state_and_reaches_a_resume(tmp_path):
    trainer, session, events, got = paused_session(tmp_path, optimizer="adamw")
    try:
        assert trainer.optimizer.hyper["weight_decay"] == 0.01  # AdamW's default
        meta, state = trainer.optimizer.state_dict()
        state = {k: v.copy() for k, v in state.items()}
        opt = trainer.optimizer
        session.send(make_command("set_regularization", weight_decay=0.05))
        assert got["regularization_changed"].wait(30)
        e = of(events, "regularization_changed")[-1]
        assert e["previous"]["weight_decay"] == 0.01 and e["weight_decay"] == 0.05 and "layers" not in e
        assert trainer.optimizer is opt and opt.hyper["weight_decay"] == 0.05 and opt.t == meta["t"]
        for k, v in opt.state_dict()[1].items():
            np.testing.assert_array_equal(v, state[k])  # moments untouched
        session.send(make_command("save"))
        assert got["checkpoint_saved"].wait(30)
    finally:
        stop(trainer, session)
    rd = RunDir(tmp_path / "runs" / "live")
    assert load_checkpoint(rd.latest).meta["optimizer"]["hyperparams"]["weight_decay"] == 0.05
    assert load_run(rd.path).changed == {"weight_decay": [0.01, 0.05]}  # config.json had none: AdamW's default
    resumed = Trainer.resume(rd, epochs=1)
    resumed.prepare()
    assert resumed.optimizer.hyper["weight_decay"] == 0.05 and resumed.config.weight_decay == 0.05


def test_weight_decay_is_refused_for_an_optimizer_without_it_with_nothing_changed(tmp_path):
    trainer, session, events, got = paused_session(tmp_path)
    try:
        trainer.optimizer.hyper.pop("weight_decay")  # (every optimizer tuinet has takes one: as if one did not)
        session.send(make_command("set_regularization", weight_decay=0.1, l2=0.01))
        deadline = time.monotonic() + 30
        while not any("refused" in e.get("message", "") for e in of(events, "log")):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        refused = next(e for e in of(events, "log") if "refused" in e.get("message", ""))
        assert "has no weight decay" in refused["message"]
        assert trainer.model.l2 == 0.0 and not of(events, "regularization_changed")
    finally:
        stop(trainer, session)
