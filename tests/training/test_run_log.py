"""Every run folder has its human-readable log.txt, and an epoch's reported time leaves out the time it was paused."""

from __future__ import annotations

import threading

from tuinet.protocol import make_command
from tuinet.training.config import TrainConfig
from tuinet.training.trainer import Trainer

PAUSE = 2.0  # seconds paused in the middle of epoch 1: far above what 13 spiral steps take


def test_log_txt_holds_the_run_and_an_epoch_time_leaves_the_pause_out(tmp_path):
    cfg = TrainConfig(dataset="spiral", epochs=2, batch_size=64, log_every=5, runs_dir=str(tmp_path), name="r")
    events: list[dict] = []
    trainer: Trainer

    def on_event(e: dict) -> None:
        events.append(e)
        if e["event"] == "step" and e["step"] == 5:
            trainer.commands.put(make_command("pause"))
        elif e["event"] == "paused":
            threading.Timer(PAUSE, trainer.commands.put, [make_command("resume")]).start()

    trainer = Trainer(cfg, emit=on_event)
    final = trainer.run()
    assert final["event"] == "finished"
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert trainer.paused_seconds >= PAUSE
    assert epochs[0]["seconds"] < PAUSE, "epoch 1 was paused for PAUSE seconds: its time leaves that out"

    log = (tmp_path / "r" / "log.txt").read_text()
    lines = log.splitlines()
    assert "run r" in lines[0] and "data spiral" in lines[1]
    assert sum("epoch 1/2:" in line or "epoch 2/2:" in line for line in lines) == 2
    assert "finished 2 epochs" in log
