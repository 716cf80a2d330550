"""A stop that arrives while the final test evaluation runs ends the run stopped (checkpoint saved), not finished."""

from __future__ import annotations

import queue

from tuinet.training.config import TrainConfig
from tuinet.training.trainer import Trainer


def test_a_stop_during_the_test_evaluation_is_honoured(tmp_path):
    events: list[dict] = []
    cfg = TrainConfig(dataset="digits", model="16", epochs=1, runs_dir=str(tmp_path / "runs"), name="late")
    t = Trainer(cfg, emit=events.append)
    t.commands = queue.Queue()

    def on_event(e):
        events.append(e)
        if e["event"] == "started":
            real = t.model.evaluate
            test_size = len(t.data.x_test)

            def evaluate(x, y, *args, **kwargs):
                if len(x) == test_size and t.status == "testing":
                    t.commands.put({"command": "stop", "reason": "SIGTERM"})  # the signal lands mid-evaluation
                return real(x, y, *args, **kwargs)
            t.model.evaluate = evaluate

    t.emit = on_event
    final = t.run()
    assert final["event"] == "stopped" and final["reason"] == "SIGTERM"
    assert not [e for e in events if e["event"] == "finished"]
    assert (tmp_path / "runs" / "late" / "latest.npz").is_file()
