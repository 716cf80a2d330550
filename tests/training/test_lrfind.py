"""The learning-rate range test: the live run is left bit for bit as it was, the rules read the curve as published,
and the suggestion lands where a learning rate that trains well lies."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from tuinet.protocol import make_command
from tuinet.training.config import TrainConfig
from tuinet.training.lrfind import (
    EXPLODE_FACTOR, RULES, exploded, lr_schedule, range_test, smooth, steepest_index, suggest, valley_index,
)
from tuinet.training.trainer import Trainer

SMALL = dict(dataset="moons", model="16,16", optimizer="adam", dropout=0.2, batch_size=32, epochs=2, seed=5)


def _live_state(t: Trainer) -> dict:
    """Everything of a trainer a range test could disturb, copied."""
    meta, arrays = t.optimizer.state_dict()
    return {"weights": t.model.get_weights(), "opt_meta": copy.deepcopy(meta),
            "opt_arrays": {k: v.copy() for k, v in arrays.items()}, "lr": t.optimizer.lr, "base_lr": t.base_lr,
            "dropout_rng": copy.deepcopy(t.model.dropout_rng.bit_generator.state),
            "shuffle_rng": copy.deepcopy(t.shuffle_rng.bit_generator.state), "step": t.global_step}


def _assert_same(a: dict, b: dict) -> None:
    for part in ("weights", "opt_arrays"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert a[part][k].dtype == b[part][k].dtype and a[part][k].tobytes() == b[part][k].tobytes(), (part, k)
    for part in ("opt_meta", "lr", "base_lr", "dropout_rng", "shuffle_rng", "step"):
        assert a[part] == b[part], part


def _train(find_at_step: int | None) -> tuple[Trainer, list[dict], list[dict]]:
    """Two epochs of SMALL; with ``find_at_step``, a range test is asked for after that step (0: queued before the
    run starts; the trainer pauses for it) and training is resumed once it is done. Returns the trainer, its events and the live state captured
    when the test started and when it was done."""
    events: list[dict] = []
    captured: list[dict] = []
    t: Trainer

    def emit(e: dict) -> None:  # called in the training thread, between two steps
        events.append(e)
        if e["event"] == "step" and e["step"] == find_at_step:
            t.commands.put(make_command("lr_find", steps=30))
        elif e["event"] == "lr_find" and e["phase"] in ("started", "done"):
            captured.append(_live_state(t))
            if e["phase"] == "done":
                t.commands.put(make_command("resume"))

    t = Trainer(TrainConfig(**SMALL, log_every=5), run_dir=False, emit=emit)
    if find_at_step == 0:
        t.commands.put(make_command("lr_find", steps=30))
    final = t.run()
    assert final["event"] == "finished", final
    return t, events, captured


@pytest.fixture(scope="module")
def plain_run() -> Trainer:
    return _train(find_at_step=None)[0]


@pytest.mark.parametrize("at", [10, 0], ids=["mid-run", "before-the-first-step"])
def test_range_test_leaves_weights_optimizer_and_random_state_bit_for_bit(at, plain_run):
    """Adam's moments and step count, the weights, the dropout and shuffle generators and the lr are exactly as
    before the test, and training then goes on exactly as a run without the test."""
    with_test, events, captured = _train(find_at_step=at)
    assert len(captured) == 2
    before, after = captured
    assert before["opt_meta"]["t"] == at
    if at:
        assert any(a.any() for a in before["opt_arrays"].values())  # warm Adam
    _assert_same(before, after)
    done = next(e for e in events if e["event"] == "lr_find" and e["phase"] == "done")
    assert done["paused_for_test"] and done["step"] == at and done["current_lr"] == before["lr"]
    assert len(done["lrs"]) == len(done["losses"]) == len(done["smoothed"]) and 3 <= len(done["lrs"]) <= 30
    assert done["suggested_lr"] is not None and set(done["suggestions"]) == set(RULES)
    paused = [e for e in events if e["event"] == "paused"]
    assert [e["reason"] for e in paused] == ["lr_find"] and any(e["event"] == "resumed" for e in events)
    _assert_same(_live_state(with_test), _live_state(plain_run))


def test_a_stop_cancels_the_range_test_and_ends_the_run():
    """A stop queued behind the test ends the test and the run (stopped, not failed)."""
    events: list[dict] = []
    t = Trainer(TrainConfig(**SMALL), run_dir=False, emit=events.append)
    t.commands.put(make_command("lr_find", steps=20))
    t.commands.put(make_command("stop"))
    final = t.run()
    assert final["event"] == "stopped" and final["step"] == 0
    phases = [e["phase"] for e in events if e["event"] == "lr_find"]
    assert phases == ["started", "failed"]


def test_smoothing_and_rules_on_a_known_curve():
    lrs = lr_schedule(1e-6, 1.0, 61)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0) and lrs[30] == pytest.approx(1e-3)
    assert smooth([2.0, 2.0, 2.0]).tolist() == pytest.approx([2.0, 2.0, 2.0])  # bias-corrected: no ramp from 0
    # flat until 1e-4, falls fastest around 1e-3, bottoms out at 1e-2, then climbs
    x = np.log10(lrs)
    loss = 2.0 - 1.5 / (1 + np.exp(-(x + 3) * 3)) + np.where(x > -2, (x + 2) ** 2 * 3, 0)
    sug, idx = suggest(lrs.tolist(), loss.tolist())
    assert sug["steepest"] == pytest.approx(1e-3, rel=0.3)
    assert sug["minimum"] == pytest.approx(lrs[int(np.argmin(loss))] / 10)
    assert 1e-4 < sug["valley"] < 1e-2 and idx["valley"] < int(np.argmin(loss))
    assert steepest_index(lrs, loss) == int(np.argmin(np.diff(loss)))
    # fastai's arithmetic: a descent of 31 points from index 0 -> index -1 + 10 + 5 (about halfway down it)
    assert valley_index(np.r_[np.linspace(3.0, 1.0, 31), 2.0, 3.0]) == 14
    assert valley_index(np.r_[5.0, 4.0, 6.0, np.linspace(3.0, 1.0, 31), 2.0]) == 3 + 14 - 1  # the longest one
    assert suggest([1e-3, 1e-2], [1.0, 0.5]) == ({r: None for r in RULES}, {r: None for r in RULES})


def test_steepest_is_on_the_way_down_not_in_the_noise_after_the_minimum():
    """A curve that falls to its lowest point, climbs to chance and spikes there (MNIST past lr 0.1: the loss never
    reaches 4x its minimum for three steps, so the test runs to the end): the smoothed curve relaxing after the
    spike falls faster than the real descent did, and was taken for the steepest descent (the default run's curve
    gave "steepest 0.74", 1,000x its valley). The steepest descent is the fall before the minimum."""
    lrs = lr_schedule(1e-7, 10.0, 100)
    x = np.log10(lrs)
    loss = 2.4 - 0.6 / (1 + np.exp(-(x + 3.5) * 3))  # falls around 3e-4
    loss = np.where(x > -1.5, 1.8 + 0.6 * np.minimum(1.0, (x + 1.5) / 0.5), loss)  # climbs to chance past 0.03
    loss[80:82] = 20.0  # two wild batches near lr 0.4 (too few to end the test), then chance again
    sug, idx = suggest(lrs.tolist(), smooth(loss.tolist()).tolist())
    assert 1e-5 < sug["steepest"] < 3e-3, sug
    assert idx["steepest"] < idx["minimum"]


def test_one_hard_batch_does_not_end_the_test_a_blow_up_does():
    best = 2e-4  # a network far into training: tiny losses, so one hard batch is many times the best
    assert not exploded([2e-4, 2e-4, 2e-2], smoothed=1.2e-3, best=best)
    assert not exploded([2e-2, 2e-4, 2e-2], smoothed=1.5e-3, best=best)
    assert exploded([2e-3, 5e-3, 2e-2], smoothed=1.5e-3, best=best)
    assert not exploded([2e-3, 5e-3, 2e-2], smoothed=7e-4, best=best)  # the smoothed loss has not caught up yet
    assert not exploded([None, 5e-3, 2e-2][1:], smoothed=1.0, best=best)  # fewer than three steps


def _range_test(cfg: TrainConfig):
    t = Trainer(cfg, run_dir=False)
    t.prepare()
    return range_test(t.model, t.optimizer, t.data.x_train, t.data.y_train, batch_size=cfg.batch_size,
                      seed=cfg.seed)


def test_suggestion_for_sgd_on_a_synthetic_set_and_the_explosion_stop():
    """SGD on a small net on spirals trains well from about 0.01 to 0.5; the sweep to lr 10 blows the loss up."""
    r = _range_test(TrainConfig(dataset="spiral", model="32,32", optimizer="sgd", batch_size=32, seed=0))
    assert 0.01 <= r.suggested_lr <= 0.5, r.suggestions
    assert r.stop_reason in (None, "exploded", "non-finite") and len(r.lrs) == len(r.losses) <= 100
    if r.stop_reason == "exploded":
        assert r.smoothed[-1] > EXPLODE_FACTOR * min(s for s in r.smoothed[:-1])


@pytest.mark.slow
def test_suggestion_for_the_mlp_preset_on_mnist():
    """The mlp preset with Adam on a subset of MNIST: the well-known good range of Adam there is 1e-4 to 1e-2."""
    r = _range_test(TrainConfig(dataset="mnist", model="mlp", optimizer="adam", limit=4000, seed=0))
    assert 3e-4 <= r.suggested_lr <= 1e-2, r.suggestions
    assert r.stop_reason == "exploded" and math.isfinite(r.losses[0])


def test_a_run_that_augments_has_its_range_test_augment_too_with_a_generator_of_its_own(tmp_path):
    """The range test trains its copy on batches augmented as the run's are (a different curve than on the batches as
    they are, the same curve twice), and the run's own augmentation state is left as it was."""
    from tuinet.training.lrfind import trainer_range_test

    def curve(augment):
        t = Trainer(TrainConfig(dataset="digits", model="32", epochs=1, batch_size=32, augment=augment,
                                runs_dir=str(tmp_path)), run_dir=False)
        t.prepare()
        state = copy.deepcopy(t.augmenter.state()) if t.augmenter else None
        losses = trainer_range_test(t, steps=20).losses
        assert (t.augmenter.state() if t.augmenter else None) == state
        return losses

    moved = curve("shift=2,rotate=20")
    assert moved == curve("shift=2,rotate=20")
    assert moved[0] != curve(None)[0]  # the first batch already differs: it was moved
