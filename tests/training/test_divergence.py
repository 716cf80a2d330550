"""The divergence guard: no non-finite or blown-up weights ever stay in the model or reach a checkpoint."""

from __future__ import annotations

import math
import queue

import numpy as np
import pytest

from tests.training.hooks import wrap_optimizer_step
from tuinet.engine.checkpoint import load_checkpoint
from tuinet.training.config import TrainConfig
from tuinet.training.trainer import Trainer

pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")


def make(tmp_path, **kw) -> tuple[Trainer, list[dict]]:
    base = dict(dataset="digits", model="32", epochs=2, batch_size=32, seed=1, optimizer="sgd", lr=0.05,
                log_every=1, runs_dir=str(tmp_path / "runs"), name="guard")
    base.update(kw)
    events: list[dict] = []
    return Trainer(TrainConfig(**base), emit=events.append), events


def of(events, kind):
    return [e for e in events if e["event"] == kind]


def assert_all_finite(t: Trainer, events: list[dict], tmp_path) -> None:
    for w in t.model.get_weights().values():
        assert np.all(np.isfinite(w))
    for name in ("latest.npz", "best.npz"):
        path = tmp_path / "runs" / "guard" / name
        if path.exists():
            for k, a in load_checkpoint(path).arrays.items():
                if a.dtype.kind == "f":
                    assert np.all(np.isfinite(a)), (name, k)
    for e in of(events, "step"):
        assert math.isfinite(e["loss"]) and math.isfinite(e["penalty"])
    final = of(events, "finished")[0]
    assert math.isfinite(final["test_loss"])


def test_a_learning_rate_that_is_infinite_in_float32_is_refused_and_training_goes_on(tmp_path):
    t, events = make(tmp_path)
    t.commands = queue.Queue()
    # put straight into the trainer's queue, past the protocol's own check: the trainer checks again
    t.commands.put({"command": "set_lr", "lr": 1e39})
    t.commands.put({"command": "scale_lr", "factor": 1e38})  # 0.05 * 1e38 = 5e36 is fine; then 5e36 * 1e38 is not
    t.commands.put({"command": "scale_lr", "factor": 1e38})
    final = t.run()
    refused = [e for e in of(events, "log") if e["level"] == "error" and "refused" in e["message"]]
    assert len(refused) == 2, refused
    assert "infinite in float32" in refused[0]["message"]
    assert final["event"] == "finished"
    assert_all_finite(t, events, tmp_path)  # the 5e36 lr that was accepted diverged and was rolled back


def test_a_huge_finite_learning_rate_is_rolled_back_and_the_run_ends_finite(tmp_path):
    t, events = make(tmp_path, lr=1e30)
    final = t.run()
    assert final["event"] == "finished"
    diverged = of(events, "diverged")
    assert diverged and of(events, "rolled_back")
    assert any(e["repeated"] and e["factor"] == 0.1 for e in diverged)  # repeated divergence cuts tenfold
    assert t.optimizer.lr < 1e30
    assert_all_finite(t, events, tmp_path)


def _poison(tmp_path, when: str):
    """Train one epoch with weight [0, 0] of the first layer made NaN at step 5: through its gradient (the update
    writes the NaN) or written into the weight after the update (as a bug elsewhere would)."""
    t, events = make(tmp_path, epochs=1)
    poisoned = []

    def poisoning_step(grads, real_step):
        first = not poisoned and t.global_step == 5
        if first and when == "gradient":
            grads[0][0, 0] = np.nan
        finite = real_step(grads)
        if first:
            poisoned.append(t.global_step)
            if when == "weight":
                t.model.params[0][0, 0] = np.nan
        return finite

    wrap_optimizer_step(t, events, poisoning_step)
    t.run()
    assert poisoned
    return t, events


@pytest.mark.parametrize("when, caught_at", [("gradient", 5), ("weight", 6)])
def test_a_nan_weight_hidden_behind_relu_is_caught_after_the_update(tmp_path, when, caught_at):
    """A NaN in a hidden weight can vanish behind a ReLU (NaN > 0 is false) and never reach the loss: the weights
    themselves are checked, by the optimizer's kernels as they write them. A NaN the update writes is caught at that
    step; one written into a weight between steps at the next update (every weight is rewritten from itself)."""
    t, events = _poison(tmp_path, when)
    diverged = of(events, "diverged")
    assert diverged and diverged[0]["reason"] == "non-finite weights" and diverged[0]["step"] == caught_at
    assert_all_finite(t, events, tmp_path)


def test_a_huge_but_finite_loss_counts_as_divergence(tmp_path):
    """L2 of 1e9 used to give losses around 3e29 while training went on at chance level: a loss a thousand times
    the run's reference is a blow-up, rolled back like a NaN."""
    t, events = make(tmp_path, l2=1e9, lr=0.01)
    final = t.run()
    diverged = of(events, "diverged")
    assert diverged and diverged[0]["reason"] == "blow-up" and diverged[0]["step"] <= 2
    assert final["event"] == "finished"
    first = of(events, "step")[0]
    for e in of(events, "step")[1:]:
        assert e["loss"] + e["penalty"] < 1e3 * max(first["loss"] + first["penalty"], 1.0) * 1.01
    assert_all_finite(t, events, tmp_path)


def test_a_snapshot_is_good_only_when_its_weights_are_finite(tmp_path):
    t, _ = make(tmp_path, epochs=1)
    t._load_data()
    t._build()
    t._remember_good()
    good = t._good
    t.model.params[1][0] = np.inf
    t._remember_good()
    assert t._good is good  # not replaced by the infinite weights
    assert t.save("latest") is None  # and no checkpoint is written with them


def test_pause_mode_puts_the_good_weights_back_before_it_waits(tmp_path):
    t, events = make(tmp_path, lr=1e30, on_divergence="pause")
    t.commands = queue.Queue()
    paused_weights = []

    def on_event(e):
        events.append(e)
        if e["event"] == "paused" and e.get("reason") == "diverged" and not paused_weights:
            paused_weights.append({k: v.copy() for k, v in t.model.get_weights().items()})
            t.commands.put({"command": "save"})
            t.commands.put({"command": "stop"})

    t.emit = on_event
    final = t.run()
    assert final["event"] == "stopped" and paused_weights
    for w in paused_weights[0].values():
        assert np.all(np.isfinite(w))
    saved = [e for e in of(events, "checkpoint_saved") if e["kind"] == "latest"]
    assert saved
    for k, a in load_checkpoint(tmp_path / "runs" / "guard" / "latest.npz").arrays.items():
        if a.dtype.kind == "f":
            assert np.all(np.isfinite(a)), k


def test_a_diverging_run_prints_no_numpy_warnings_and_its_summary_counts_the_divergences(tmp_path):
    """Overflows in a diverging step are the guard's to answer: no NumPy RuntimeWarning (with its source line)
    reaches the terminal, and the run's final event and summary say how often it diverged and what became of its
    learning rate. A run that never diverged says nothing about it."""
    import warnings

    from tuinet.training.summary import summary_lines

    t, events = make(tmp_path, lr=1e30, epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        final = t.run()
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    diverged = of(events, "diverged")
    assert final["event"] == "finished" and final["divergences"] == len(diverged) >= 2
    assert final["lr_before_divergence"] == pytest.approx(diverged[0]["lr"])
    assert final["lr"] == pytest.approx(t.optimizer.lr) and final["lr"] < diverged[0]["lr"] / 100
    line = [s for s in summary_lines(final) if "diverged" in s]
    assert line == [f"  diverged {len(diverged):,} times (each time the last good weights came back); "
                    f"lr {diverged[0]['lr']:.3g} before, {t.optimizer.lr:.3g} now"]

    calm, calm_events = make(tmp_path / "calm", epochs=1)
    quiet = calm.run()
    assert quiet["divergences"] == 0 and quiet["lr_before_divergence"] is None
    assert not [s for s in summary_lines(quiet) if "diverged" in s]
