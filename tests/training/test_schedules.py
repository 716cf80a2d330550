"""Learning-rate schedules: shapes and values as torch.optim.lr_scheduler defines them (computed by hand here)."""

from __future__ import annotations

import math

import pytest

from tuinet.training.schedules import SCHEDULE_TYPES, make_schedule


def onecycle_by_hand(step: int, total: int, max_lr: float = 1.0, pct_start: float = 0.3, div: float = 25.0,
                     final_div: float = 1e4) -> float:
    """torch.optim.lr_scheduler.OneCycleLR (anneal_strategy='cos', three_phase=False), written out."""
    initial = max_lr / div
    minimum = initial / final_div
    up_end = float(pct_start * total) - 1
    down_end = float(total - 1)

    def cos(start, end, pct):
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    if step <= up_end:
        return cos(initial, max_lr, step / up_end)
    return cos(max_lr, minimum, (step - up_end) / (down_end - up_end))


def test_onecycle_matches_torch_formula():
    s = make_schedule("onecycle", steps_per_epoch=10, epochs=10)  # 100 steps, warm-up ends at step 29
    for step in range(100):
        assert s.factor(step) == pytest.approx(onecycle_by_hand(step, 100), rel=1e-12, abs=1e-15)
    # landmarks, independently of the helper: start max/25, peak at 29, end max/25/1e4
    assert s.factor(0) == pytest.approx(1 / 25)
    assert s.factor(29) == pytest.approx(1.0)
    assert s.factor(99) == pytest.approx(1 / 25 / 1e4)
    # halfway up the warm-up the cosine is at the midpoint of initial and max
    assert s.factor(14.5) == pytest.approx((1 / 25 + 1) / 2)
    # warm-up rises, annealing falls
    f = [s.factor(i) for i in range(100)]
    assert all(a < b for a, b in zip(f[:29], f[1:30]))
    assert all(a > b for a, b in zip(f[29:99], f[30:100]))


def test_onecycle_agrees_with_torch_when_installed():
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=57)
    ours = make_schedule("onecycle", steps_per_epoch=19, epochs=3)
    for step in range(57):
        assert 0.1 * ours.factor(step) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-6)
        opt.step()
        sched.step()


def test_cosine_starts_at_base_and_ends_near_zero():
    s = make_schedule("cosine", steps_per_epoch=50, epochs=4)
    f = [s.factor(i) for i in range(200)]
    assert f[0] == 1.0
    assert f[100] == pytest.approx(0.5)  # halfway
    assert f[-1] < 1e-3
    assert s.factor(200) == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(f, f[1:]))
    # CosineAnnealingLR with eta_min 0: (1 + cos(pi t / T)) / 2
    assert f[37] == pytest.approx((1 + math.cos(math.pi * 37 / 200)) / 2)


def test_step_decay_per_step_size_epochs():
    s = make_schedule("step", steps_per_epoch=10, epochs=8, step_size=2, gamma=0.1)
    assert [s.factor(e * 10) for e in range(8)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3])
    assert s.factor(19) == 1.0 and s.factor(20) == pytest.approx(0.1)  # changes at the epoch boundary


def test_exponential_decay_every_epoch():
    s = make_schedule("exponential", steps_per_epoch=7, epochs=5, gamma=0.5)
    assert [s.factor(e * 7 + 3) for e in range(5)] == pytest.approx([1, 0.5, 0.25, 0.125, 0.0625])


def test_constant_is_one():
    s = make_schedule("constant", steps_per_epoch=3, epochs=2)
    assert {s.factor(i) for i in range(10)} == {1.0}


def test_plateau_reduces_after_patience_epochs_without_improvement():
    s = make_schedule("plateau", steps_per_epoch=5, epochs=20, plateau_factor=0.1, plateau_patience=2)
    changes = [s.on_epoch_end(v) for v in (1.0, 0.8, 0.9, 0.85, 0.81)]
    # 0.8 is best; then 3 epochs without improvement: ReduceLROnPlateau reduces when bad epochs > patience
    assert changes == [False, False, False, False, True]
    assert s.factor(0) == pytest.approx(0.1)
    # counter reset: two more bad epochs do not reduce again, a third does
    assert [s.on_epoch_end(v) for v in (0.9, 0.9, 0.9)] == [False, False, True]
    assert s.factor(99) == pytest.approx(0.01)
    # an improvement resets the count; NaN or a missing validation loss changes nothing
    assert s.on_epoch_end(0.5) is False and s.bad == 0
    assert s.on_epoch_end(float("nan")) is False and s.on_epoch_end(None) is False


def test_plateau_state_round_trip_continues_the_same_curve():
    a = make_schedule("plateau", steps_per_epoch=5, epochs=20, plateau_patience=1, plateau_factor=0.5)
    for v in (1.0, 1.1, 1.2, 0.9, 1.0):
        a.on_epoch_end(v)
    b = make_schedule("plateau", steps_per_epoch=5, epochs=20, plateau_patience=1, plateau_factor=0.5)
    b.load_state(a.state())
    for v in (1.0, 1.0, 0.5, 0.7, 0.7):
        assert a.on_epoch_end(v) == b.on_epoch_end(v)
        assert a.factor(0) == b.factor(0)


def test_every_schedule_is_reachable_by_name():
    assert set(SCHEDULE_TYPES) == {"constant", "step", "exponential", "cosine", "onecycle", "plateau"}


def test_a_cosine_run_resumed_with_more_epochs_says_the_lr_it_goes_on_with(tmp_path):
    """A finished cosine run ends with its lr near 0; resumed to twice the epochs, its schedule is stretched over
    them and training goes on from the middle of the curve. The `started` event (and so the printed optimizer line
    and the app's status) gives that lr, the one the next step takes, not the one the checkpoint ended with."""
    from tests.training.hooks import wrap_optimizer_step
    from tuinet.training.config import TrainConfig
    from tuinet.training.rundir import RunDir
    from tuinet.training.trainer import Trainer

    cfg = TrainConfig(dataset="digits", model="16", epochs=2, batch_size=32, lr=0.01, schedule="cosine",
                      runs_dir=str(tmp_path), name="cos")
    first = Trainer(cfg)
    first.run()
    ended_at = first.optimizer.lr
    assert ended_at < 1e-4
    events: list[dict] = []
    again = Trainer.resume(RunDir(tmp_path / "cos"), emit=events.append, epochs=4)
    steps: list[float] = []

    def record_step(grads, real_step):
        steps.append(again.optimizer.lr)
        return real_step(grads)

    wrap_optimizer_step(again, events, record_step)
    again.run()
    started = next(e for e in events if e["event"] == "started")
    assert started["lr"] == pytest.approx(steps[0]), "the lr the first resumed step took"
    assert started["lr"] == pytest.approx(0.01 * 0.5, rel=0.05) and started["lr"] > 100 * ended_at
    assert started["hyperparams"]["lr"] == started["lr"]
