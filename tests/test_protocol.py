"""The protocol module: every command is checked field by field before it can reach a trainer."""

from __future__ import annotations

import pytest

from tuinet.errors import ConfigError
from tuinet.protocol import (
    ACKNOWLEDGED_BY, COMMANDS, EVENTS, PICTURE_EVENTS, Session, check_learning_rate, exit_code, final_event,
    from_json, make_command, to_json, validate_command,
)

GOOD = [
    {"command": "pause"}, {"command": "pause", "reason": "user", "v": 1}, {"command": "resume"},
    {"command": "toggle_pause"}, {"command": "set_lr", "lr": 0.01}, {"command": "set_lr", "lr": 3},
    {"command": "scale_lr", "factor": 0.5}, {"command": "set_optimizer", "name": "sgd"},
    {"command": "set_optimizer", "name": "adam", "lr": 1e-3,
     "hyperparams": {"betas": [0.7, 0.9], "eps": 1e-8, "amsgrad": True, "weight_decay": 0}},
    {"command": "save"}, {"command": "evaluate"}, {"command": "rollback"}, {"command": "rollback", "factor": 0.1},
    {"command": "stop", "reason": "SIGTERM", "client_pid": 1234}, {"command": "snapshot"},
    {"command": "lr_find"}, {"command": "lr_find", "steps": 50, "start_lr": 1e-6, "end_lr": 1.0},
]

BAD = [
    ({"command": "set_optimizer", "name": 5}, "optimizer name"),
    ({"command": "set_optimizer", "name": {"evil": 1}}, "optimizer name"),
    ({"command": "set_optimizer", "name": ""}, "optimizer name"),
    ({"command": "set_optimizer", "name": "x" * 5000}, "optimizer name"),
    ({"command": "set_optimizer", "name": "sgd", "hyperparams": [1, 2]}, "hyperparams"),
    ({"command": "set_optimizer", "name": "sgd", "hyperparams": {"momentum": "fast"}}, "momentum"),
    ({"command": "set_optimizer", "name": "sgd", "hyperparams": {"momentum": float("nan")}}, "momentum"),
    ({"command": "set_optimizer", "name": "sgd", "hyperparams": {"momentum": 1e39}}, "momentum"),
    ({"command": "set_optimizer", "name": "sgd", "hyperparams": {"nesterov": 1}}, "nesterov"),
    ({"command": "set_optimizer", "name": "adam", "hyperparams": {"betas": [0.9]}}, "betas"),
    ({"command": "set_optimizer", "name": "adam", "hyperparams": {"betas": [0.9, 1.5]}}, "betas"),
    ({"command": "set_optimizer", "name": "adam", "hyperparams": {"lr_typo": 1}}, "unknown hyperparameter"),
    ({"command": "set_optimizer", "name": "adam", "lr": 1e39}, "too large"),
    ({"command": "set_lr", "lr": 1e39}, "too large"),
    ({"command": "set_lr", "lr": 1e-50}, "too small"),
    ({"command": "set_lr", "lr": float("inf")}, "positive number"),
    ({"command": "set_lr", "lr": -1}, "positive number"),
    ({"command": "set_lr", "lr": True}, "positive number"),
    ({"command": "set_lr", "lr": "0.1"}, "positive number"),
    ({"command": "set_lr"}, "needs field 'lr'"),
    ({"command": "scale_lr", "factor": 1e308}, "factor"),
    ({"command": "scale_lr", "factor": 0}, "factor"),
    ({"command": "rollback", "factor": "half"}, "factor"),
    ({"command": "pause", "reason": 7}, "reason"),
    ({"command": "pause", "reason": "x" * 10_000}, "reason"),
    ({"command": "lr_find", "steps": 5}, "steps must be a whole number from 10 to 1000"),
    ({"command": "lr_find", "steps": 100.0}, "steps"),
    ({"command": "lr_find", "steps": True}, "steps"),
    ({"command": "lr_find", "start_lr": -1}, "start lr"),
    ({"command": "lr_find", "end_lr": 1e39}, "end lr"),
    ({"command": "save", "path": "/etc/passwd"}, "takes no field 'path'"),
    ({"command": "save", "v": "1"}, "protocol version"),
    ({"command": "stop", "client_pid": "me"}, "client_pid"),
    ({"command": 5}, "unknown command"),
    ({"command": ["pause"]}, "unknown command"),
    ({"command": "format_disk"}, "unknown command"),
    ({"cmd": "pause"}, "'command' field"),
    (["pause"], "'command' field"),
    (None, "'command' field"),
]


@pytest.mark.parametrize("cmd", GOOD, ids=lambda c: c["command"])
def test_good_commands_pass_unchanged(cmd):
    assert validate_command(dict(cmd)) == cmd


@pytest.mark.parametrize("cmd,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_commands_are_refused_with_one_short_line(cmd, words):
    with pytest.raises(ConfigError) as err:
        validate_command(cmd)
    text = str(err.value)
    assert words in text and "\n" not in text and len(text) < 300


def test_learning_rate_must_survive_float32():
    assert check_learning_rate(0.001) == 0.001
    for lr in (1e39, 1e-40, 0.0, float("nan")):
        with pytest.raises(ConfigError):
            check_learning_rate(lr)


def test_deeply_nested_json_is_a_value_error_not_a_crash():
    line = "[" * 50_000 + "]" * 50_000
    with pytest.raises(ValueError, match="nested too deeply"):
        from_json(line)
    with pytest.raises(ValueError):
        from_json("[1, 2]")
    assert from_json(to_json(make_command("set_lr", lr=0.5))) == {"command": "set_lr", "v": 1, "lr": 0.5}


def test_tables_agree_with_each_other():
    assert set(ACKNOWLEDGED_BY) <= set(COMMANDS) and set(ACKNOWLEDGED_BY.values()) <= set(EVENTS)
    assert PICTURE_EVENTS <= set(EVENTS)


def test_exit_code_follows_the_final_event():
    assert final_event({}) is None and exit_code(None) == 1
    last = {"epoch": {"event": "epoch"}, "finished": {"event": "finished"}}
    assert final_event(last)["event"] == "finished" and exit_code(final_event(last)) == 0
    assert exit_code({"event": "stopped"}) == 3 and exit_code({"event": "stopped"}, 15) == 143
    assert exit_code({"event": "failed"}) == 1
    resumed = {"finished": {"event": "finished", "time": 10.0}, "stopped": {"event": "stopped", "time": 20.0}}
    assert final_event(resumed)["event"] == "stopped"  # resumed after finishing, then stopped: the newest end


def test_the_sessions_satisfy_the_session_protocol():
    from tuinet.app.replay import ReplaySession
    from tuinet.remote.client import RemoteSession
    from tuinet.training.session import Session as ThreadSession

    for cls in (ThreadSession, RemoteSession, ReplaySession):
        missing = [name for name in ("started", "running", "state", "start", "add_listener", "remove_listener",
                                     "send", "join") if not hasattr(cls, name)]
        assert not missing, (cls.__name__, missing)
    assert isinstance(ReplaySession([]), Session)
