"""Watch rules (--pause-if, --stop-if): the vocabulary, its errors, and the epoch a rule pauses or stops a run at."""

from __future__ import annotations

import time

import pytest
from tests.cli.conftest import assert_clean_error, invoke
from tuinet.errors import ConfigError
from tuinet.protocol import make_command
from tuinet.training.config import TrainConfig
from tuinet.training.session import Session
from tuinet.training.trainer import Trainer
from tuinet.training.watch import Watch, parse_rule

#: a small net at a high lr on digits: its validation loss goes up and down from epoch to epoch
BUMPY = dict(dataset="digits", model="32", lr=0.1, batch_size=64, epochs=20, seed=0, keep_epochs=0)


def _first(values: list[float], rule: str) -> int | None:
    """The 1-based epoch at which ``rule`` first holds over ``values`` (one value per epoch)."""
    r = parse_rule(rule)
    for i, v in enumerate(values, start=1):
        if r.update(v):
            return i
    return None


def test_the_vocabulary():
    loss = [1.0, 0.8, 0.9, 1.0, 1.1, 0.7]
    assert _first(loss, "val_loss rises 2") == 4 and _first(loss, "val_loss rises 3") == 5
    assert _first(loss, "val_loss falls 1") == 2 and _first(loss, "val_loss falls 2") is None
    assert _first(loss, "val_loss stalls 3") == 5  # epochs 3, 4, 5 bring no loss below 0.8
    assert _first(loss, "val_loss below 0.75") == 6 and _first(loss, "loss above 1.05") == 5
    acc = [0.5, 0.97, 0.99, 0.992]
    assert _first(acc, "val_acc above 99%") == 4 and _first(acc, "val_accuracy stalls 1") is None
    r = parse_rule("VAL_ACC above 99%")
    assert (r.metric, r.condition, r.value) == ("val_accuracy", "above", 0.99)


@pytest.mark.parametrize("text, words", [("val_loss goes 3", "unknown condition"), ("weight rises 3", "metric"),
                                         ("val_loss rises x", "number of epochs"), ("val_loss rises 0", "from 1"),
                                         ("val_loss above lots", "number"), ("val_loss", "not a watch rule"),
                                         ("val_loss above nan", "number")])
def test_bad_rules_say_what_is_wrong(text, words):
    with pytest.raises(ConfigError, match=words):
        parse_rule(text)


def test_bad_rules_are_one_error_line(tmp_path):
    assert_clean_error(invoke("train", "--dataset", "gaussian", "--pause-if", "val_loss goes 3", "--runs-dir",
                              tmp_path), "--pause-if", "goes")
    f = tmp_path / "exp.toml"
    f.write_text('stop-if = ["val_loss rises 3", "accuracy over 9"]\n')
    assert_clean_error(invoke("train", "--config", f, "--runs-dir", tmp_path), "exp.toml", "over")
    assert not any(p.is_dir() for p in tmp_path.iterdir())  # no run folder left behind


def test_rules_from_a_file_and_the_command_line(tmp_path):
    f = tmp_path / "exp.toml"
    f.write_text('pause-if = "val_loss rises 3"\n')
    from tuinet.cli.train import build_config

    assert build_config({"config_file": str(f)}).pause_if == ["val_loss rises 3"]
    c = build_config({"config_file": str(f), "pause_if": ("val_loss stalls 4",), "stop_if": ()})
    assert c.pause_if == ["val_loss stalls 4"] and c.stop_if is None


def test_a_stop_rule_stops_at_the_right_epoch(tmp_path):
    events: list[dict] = []
    t = Trainer(TrainConfig(runs_dir=str(tmp_path), name="s", stop_if=["val_loss rises 1"], **BUMPY),
                emit=events.append)
    final = t.run()
    losses = [e["val_loss"] for e in events if e["event"] == "epoch"]
    want = _first(losses, "val_loss rises 1")
    assert want is not None and want < BUMPY["epochs"], "the fixture should have a rising epoch"
    assert final["event"] == "stopped" and final["reason"] == "watch rule: stop if val_loss rises 1"
    assert final["epoch"] == want == len(losses)  # stopped right after that epoch, its checkpoint written
    assert final["test_last"]["epoch"] == want


def test_a_pause_rule_pauses_at_the_right_epoch(tmp_path):
    session = Session(Trainer(TrainConfig(runs_dir=str(tmp_path), name="p", pause_if=["val_loss rises 2"],
                                          **BUMPY)))
    session.start()
    deadline = time.monotonic() + 120
    while "paused" not in session.last and session.running and time.monotonic() < deadline:
        time.sleep(0.05)
    paused = session.last.get("paused")
    assert paused is not None and paused["reason"] == "watch rule: pause if val_loss rises 2"
    losses = [e["val_loss"] for e in session.history if e["event"] == "epoch"]
    assert _first(losses, "val_loss rises 2") == len(losses)  # the epoch that made the rule hold, not later
    assert session.state["paused"] and session.state["epoch"] == len(losses)
    session.send(make_command("stop"))
    assert session.join(60)
    assert Watch(["val_loss rises 2"], None)  # a watch with rules is truthy, one without is not
    assert not Watch(None, None)
