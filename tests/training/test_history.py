"""The event history a late viewer replays stays bounded and ordered, keeping the run's start and its present."""

from __future__ import annotations

import pytest

from tuinet.training.history import EventHistory
from tuinet.app.state import RunState


def _run_events(epochs: int, steps_per_epoch: int = 100, log_every: int = 5):
    yield {"event": "started", "config": {"model": "mlp", "epochs": epochs}, "n": 0}
    n = 1
    for ep in range(epochs):
        for s in range(0, steps_per_epoch, log_every):
            step = ep * steps_per_epoch + s + log_every
            yield {"event": "step", "step": step, "epoch": step / steps_per_epoch, "loss": 1.0 / (1 + step),
                   "accuracy": 0.5, "lr": 0.001, "samples_per_second": 1000.0, "n": n}
            n += 1
        yield {"event": "epoch", "epoch": ep + 1, "step": (ep + 1) * steps_per_epoch, "train_loss": 0.1,
               "val_loss": 0.2, "val_accuracy": 0.9, "n": n}
        n += 1
        yield {"event": "log", "level": "info", "message": f"checkpoint {ep}", "n": n}
        n += 1


def test_history_is_bounded_ordered_and_keeps_start_and_newest():
    h = EventHistory(cap=1000, keep_first=10, keep_last=100)
    events = list(_run_events(epochs=2000))  # 46,001 events
    for e in events:
        h.append(e)
        assert len(h) <= 1000
    kept = list(h)
    assert kept[:10] == events[:10]  # the start is intact
    assert kept[-100:] == events[-100:]  # so is the present
    ns = [e["n"] for e in kept]
    assert ns == sorted(ns)  # order kept
    assert h.total == len(events) and h.dropped == len(events) - len(kept)
    # every part of the run is still represented: epochs from early, middle and late
    epochs = [e["epoch"] for e in kept if e["event"] == "epoch"]
    assert epochs[0] < 50 and any(900 < x < 1100 for x in epochs) and epochs[-1] == 2000


def test_replaying_a_thinned_history_rebuilds_the_state():
    h = EventHistory(cap=600, keep_first=10, keep_last=100)
    for e in _run_events(epochs=500):
        h.append(e)
    st = RunState()
    for e in h:
        st.apply(e)
    assert st.step == 500 * 100 and st.epoch == pytest.approx(500)
    assert len(st.train_loss.points()[0]) > 10 and len(st.val_loss_s.points()[0]) > 10


def test_since_returns_what_came_after_a_mark():
    h = EventHistory(cap=100, keep_first=5, keep_last=20)
    for i in range(150):
        h.append({"event": "step", "n": i})
    mark = h.total
    for i in range(150, 160):
        h.append({"event": "step", "n": i})
    assert [e["n"] for e in h.since(mark)] == list(range(150, 160))
    assert h.since(h.total) == []
    with pytest.raises(ValueError):
        EventHistory(cap=10, keep_first=5, keep_last=5)
