"""The learning cycle one step at a time (the ``step`` command and its ``step_detail`` event) and gradient health.

Small real runs on the digits set (8x8 images, 1,437 training samples). The Step view's figures are checked against
a direct float64 NumPy computation of the same batch with the same weights, not against the code that made them.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest

from tuinet.errors import ConfigError
from tuinet.protocol import make_command
from tuinet.training import health
from tuinet.training.config import TrainConfig
from tuinet.training.trainer import Trainer

DIGITS = dict(dataset="digits", batch_size=64, seed=3, epochs=1)


class Driven:
    """A trainer in a thread, its events in a queue, driven command by command as a viewer would."""

    def __init__(self, **kw):
        self.events: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        self.trainer = Trainer(TrainConfig(**{**DIGITS, **kw}), run_dir=False, emit=self.events.put)
        self.thread = threading.Thread(target=self.trainer.run, daemon=True)

    def start_paused(self) -> None:
        self.trainer.commands.put(make_command("pause"))
        self.thread.start()
        self.wait("paused")

    def send(self, kind: str, **fields) -> None:
        self.trainer.commands.put(make_command(kind, **fields))

    def wait(self, kind: str, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            e = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            self.seen.append(e)
            if e["event"] == kind:
                return e
            assert e["event"] != "failed", e

    def finish(self) -> dict:
        self.send("resume")
        final = self.wait("finished")
        self.thread.join(30)
        return final


def weights(t: Trainer) -> dict[str, np.ndarray]:
    return t.model.get_weights()


def current_batch(t: Trainer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The batch the paused trainer takes next, from its epoch's shuffle state (as the loop draws it)."""
    rng = np.random.default_rng()
    rng.bit_generator.state = t._epoch_rng_state
    perm = rng.permutation(len(t.data.x_train))
    bs = t.config.batch_size
    idx = perm[t.step_in_epoch * bs:(t.step_in_epoch + 1) * bs]
    return t.data.x_train[idx], t.data.y_train[idx], idx


def test_step_runs_exactly_n_steps_and_the_run_continues_as_it_would_have(monkeypatch):
    """`n` is one optimizer step (step counter, optimizer counter, weights); `4n` four; then resuming trains to the
    same weights, bit for bit, as a run never paused (dropout draws included). Thread tuning is timing-driven, so it
    is fixed, as for any bit-identical rerun."""
    monkeypatch.setenv("TUINET_THREAD_TUNING", "0")
    ref = Trainer(TrainConfig(**DIGITS, model="32", dropout=0.2), run_dir=False)
    assert ref.run()["event"] == "finished"

    d = Driven(model="32", dropout=0.2)
    d.start_paused()
    t = d.trainer
    step0, opt_t0, w0 = t.global_step, t.optimizer.t, weights(t)
    d.send("step")
    e = d.wait("step_detail")
    assert e["step"] == t.global_step == step0 + 1
    assert t.optimizer.t == opt_t0 + 1
    assert any(not np.array_equal(w0[k], v) for k, v in weights(t).items())
    d.send("snapshot")  # answered from the paused loop: by then any extra step would have shown
    d.wait("weights")
    assert t.global_step == step0 + 1 and t.paused
    d.send("step", count=4)
    e = d.wait("step_detail")
    assert e["step"] == t.global_step == step0 + 5 and t.optimizer.t == opt_t0 + 5
    final = d.finish()
    assert final["steps"] == ref.global_step
    for k, v in ref.model.get_weights().items():
        assert np.array_equal(v, t.model.get_weights()[k]), k


@pytest.mark.slow  # the convolution kernels (compiled once per machine, then cached)
def test_stepping_a_conv_net_shows_every_layer_and_continues_bit_for_bit(monkeypatch):
    """A traced step runs conv and pool unfused (every layer's output exists to be shown): same numbers as the fused
    pair. Thread tuning is timing-driven, so it is fixed, as for any bit-identical rerun."""
    monkeypatch.setenv("TUINET_THREAD_TUNING", "0")
    model = "conv3x3x4,maxpool2,relu,bn,dense16"
    ref = Trainer(TrainConfig(**DIGITS, model=model), run_dir=False)
    assert ref.run()["event"] == "finished"
    d = Driven(model=model)
    d.start_paused()
    d.send("step", count=2)
    e = d.wait("step_detail")
    fw = {f["name"]: f for f in e["forward"]}
    assert fw["conv2d_0"]["channels"] == 4 and len(fw["conv2d_0"]["maps"]) == 4
    assert len(fw["conv2d_0"]["maps"][0]) == 6 and len(fw["maxpool2d_1"]["maps"][0]) == 3  # 8x8 → 6x6 → 3x3
    assert all(b["grad_out"] is not None for b in e["backward"] if b["name"] != "conv2d_0")
    d.finish()
    for k, v in ref.model.get_weights().items():
        assert np.array_equal(v, d.trainer.model.get_weights()[k]), k


def test_step_is_refused_while_running():
    d = Driven(model="16", epochs=10_000)  # still running when the command comes (stopped below)
    d.thread.start()
    d.wait("compiled")
    d.send("step")
    e = d.wait("log")
    while "step" not in e["message"]:
        e = d.wait("log")
    assert e["level"] == "error" and "only while paused" in e["message"]
    d.send("stop")
    d.wait("stopped")


def test_step_command_is_validated():
    for bad in (0, -1, 1.5, True, "3", 10**9):
        with pytest.raises(ConfigError, match="step count"):
            make_command("step", count=bad)
    assert make_command("step", count=10)["count"] == 10


def _reference(ws: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
    """A 64-32-10 ReLU MLP in float64: loss, the gradients and the gradient at each layer's output."""
    w1, b1, w2, b2 = (ws[k].astype(np.float64) for k in ("dense_1.W", "dense_1.b", "dense_3.W", "dense_3.b"))
    a0 = x.reshape(len(x), -1).astype(np.float64)
    z1 = a0 @ w1 + b1
    a1 = np.maximum(z1, 0)
    z2 = a1 @ w2 + b2
    z = z2 - z2.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(y)
    per = -np.log(p[np.arange(n), y])
    dz2 = p.copy()
    dz2[np.arange(n), y] -= 1
    dz2 /= n
    gw2, gb2 = a1.T @ dz2, dz2.sum(0)
    da1 = dz2 @ w2.T
    dz1 = da1 * (z1 > 0)
    gw1, gb1 = a0.T @ dz1, dz1.sum(0)
    grads = {"dense_1.W": gw1, "dense_1.b": gb1, "dense_3.W": gw2, "dense_3.b": gb2}
    return per, grads, {"dense_3": dz2, "relu_2": da1, "dense_1": dz1}


def test_step_detail_equals_a_direct_computation_of_the_same_batch():
    d = Driven(model="32", optimizer="sgd", lr=0.05)
    d.start_paused()
    d.send("step", count=3)  # somewhere inside the run, not its very first step
    d.wait("step_detail")
    t = d.trainer
    w = weights(t)
    x, y, idx = current_batch(t)
    per, grads, flow = _reference(w, x, y)
    d.send("step")
    e = d.wait("step_detail")
    after = weights(t)
    lr = 0.05
    for k, g in grads.items():  # the update applied is plain SGD's on these gradients
        np.testing.assert_allclose(after[k] - w[k], -lr * g, rtol=2e-3, atol=2e-6)

    loss = e["loss"]
    np.testing.assert_allclose(loss["loss"], per.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss["before"], per.mean(), rtol=1e-5)  # no dropout: inference loss = training loss
    per_after, _, _ = _reference(after, x, y)
    np.testing.assert_allclose(loss["after"], per_after.mean(), rtol=1e-5)
    assert loss["after"] < loss["before"]
    worst = np.argsort(-per)[:len(loss["worst"])]
    assert [w_["position"] for w_ in loss["worst"]] == worst.tolist()
    assert [w_["index"] for w_ in loss["worst"]] == idx[worst].tolist()
    np.testing.assert_allclose([w_["loss"] for w_ in loss["worst"]], per[worst], rtol=1e-5)

    back = {r["name"]: r for r in e["backward"]}
    assert [r["name"] for r in e["backward"]] == ["dense_3", "relu_2", "dense_1", "flatten_0"]  # output → input
    for name, g in flow.items():  # the gradient arriving at each layer's output
        np.testing.assert_allclose(back[name]["grad_out"], np.linalg.norm(g), rtol=1e-4)
    assert back["flatten_0"]["grad_out"] is None  # below the first trainable layer nothing is computed
    for layer, (kw, kb) in {"dense_1": ("dense_1.W", "dense_1.b"), "dense_3": ("dense_3.W", "dense_3.b")}.items():
        gn = np.sqrt(np.sum(grads[kw] ** 2) + np.sum(grads[kb] ** 2))
        np.testing.assert_allclose(back[layer]["grad_norm"], gn, rtol=1e-4)
        up = next(r for r in e["update"]["layers"] if r["name"] == layer)
        dn = np.sqrt(np.sum((after[kw] - w[kw]).astype(np.float64) ** 2) + np.sum((after[kb] - w[kb]) ** 2))
        np.testing.assert_allclose(up["update_norm"], dn, rtol=1e-6)
        np.testing.assert_allclose(up["sgd_step"], lr * gn, rtol=1e-4)
        np.testing.assert_allclose(up["scale"], 1.0, rtol=2e-3)  # plain SGD: the step is lr * gradient
        np.testing.assert_allclose(up["cosine"], 1.0, rtol=1e-4)  # ... pointing straight down the gradient
        wn = np.sqrt(np.sum(after[kw].astype(np.float64) ** 2) + np.sum(after[kb].astype(np.float64) ** 2))
        np.testing.assert_allclose(up["update_ratio"], dn / wn, rtol=1e-6)
    assert e["update"]["optimizer"] == "sgd" and e["update"]["lr"] == pytest.approx(lr)

    s = e["sample"]  # the chosen sample's forward pass and its probabilities
    x0 = x[s["position"]].reshape(-1).astype(np.float64)
    z1 = x0 @ w["dense_1.W"] + w["dense_1.b"]
    fw = {f["name"]: f for f in e["forward"]}
    np.testing.assert_allclose(fw["dense_1"]["units"], np.round(z1[:64], 3), atol=2e-3)
    np.testing.assert_allclose(fw["relu_2"]["units"], np.round(np.maximum(z1, 0)[:64], 3), atol=2e-3)
    assert fw["relu_2"]["stats"]["zero"] > 0 and fw["dense_1"]["size"] == 32
    z2 = np.maximum(z1, 0) @ w["dense_3.W"] + w["dense_3.b"]
    p = np.exp(z2 - z2.max()) / np.exp(z2 - z2.max()).sum()
    np.testing.assert_allclose(s["probs"], np.round(p, 4), atol=2e-4)
    assert s["label"] == y[s["position"]] and s["pred"] == int(p.argmax())
    d.finish()


def test_adam_step_detail_shows_what_its_state_added():
    """With Adam the step is not lr * gradient: its scale against plain SGD's step is reported, per layer."""
    d = Driven(model="32", optimizer="adam", lr=1e-3)
    d.start_paused()
    d.send("step", count=5)
    e = d.wait("step_detail")
    rows = e["update"]["layers"]
    assert e["update"]["t"] == 5 and all(r["scale"] is not None and r["scale"] > 0 for r in rows)
    assert any(abs(r["scale"] - 1) > 0.1 for r in rows)
    d.finish()


def test_vanishing_warning_fires_on_a_deep_sigmoid_net_and_not_on_the_mlp_preset():
    deep: list[dict] = []
    # the default stats_every (100) with 23 steps: the early look at step 10 gives even a short run its verdict
    Trainer(TrainConfig(**DIGITS, model=",".join(["32"] * 10), activation="sigmoid", optimizer="sgd", lr=0.01),
            run_dir=False, emit=deep.append).run()
    warn = [e for e in deep if e["event"] == "gradient_health"]
    assert warn and warn[0]["step"] == 10
    assert warn and warn[0]["status"] == "vanishing" and warn[0]["ratio"] < health.VANISHING_RATIO
    assert "ReLU" in warn[0]["hint"] and "skip connections" in warn[0]["hint"]
    stats = [e for e in deep if e["event"] == "layer_stats"]
    assert all(e["health"]["status"] == "vanishing" for e in stats)

    mlp: list[dict] = []
    Trainer(TrainConfig(**{**DIGITS, "dataset": "mnist"}, model="mlp", limit=3000, stats_every=5), run_dir=False,
            emit=mlp.append).run()
    stats = [e for e in mlp if e["event"] == "layer_stats"]
    assert stats and all(e["health"]["status"] == "ok" for e in stats)
    assert not [e for e in mlp if e["event"] == "gradient_health"]


def test_health_verdicts_are_relative_and_settle():
    def rows(*norms, ratios=None):
        return [{"name": f"l{i}", "kind": "Dense", "grad_norm": g,
                 **({"update_ratio": ratios[i]} if ratios else {})} for i, g in enumerate(norms)]

    assert health.assess(rows(1e-9, 1e-8, 1e-7))["status"] == "ok"  # tiny everywhere, but not over depth
    assert health.assess(rows(1e-5, 0.1, 0.5))["status"] == "vanishing"
    assert health.assess(rows(500.0, 1.0, 0.1))["status"] == "exploding"
    assert health.assess(rows(float("nan"), 1.0))["status"] == "exploding"
    assert health.assess(rows(0.1, 0.2, ratios=[1e-8, 1e-3]))["status"] == "stalled"
    # the end of a cosine schedule: small steps on purpose are not stalled, unless still small against them
    assert health.assess(rows(0.1, 0.2, ratios=[1e-8, 1e-3]), lr_factor=1e-3)["status"] == "ok"
    assert health.assess(rows(0.1, 0.2, ratios=[1e-12, 1e-3]), lr_factor=1e-3)["status"] == "stalled"
    assert health.assess(rows(0.1, 0.2, ratios=[2.0, 1e-3]))["status"] == "huge_updates"
    m = health.HealthMonitor()
    assert m.check(rows(1e-5, 0.5))[1]["status"] == "vanishing"
    assert m.check(rows(1e-5, 0.5))[1] is None  # said once
    for _ in range(health.CLEAR_AFTER - 1):
        assert m.check(rows(0.3, 0.5))[1] is None  # one healthy check does not end it
    assert m.check(rows(0.3, 0.5))[1]["status"] == "ok"
