"""Each layer's view of the validation samples: the projection against NumPy's own PCA and a brute-force nearest
neighbour, the pooling of wide feature maps, the views against a forward pass done here, and the trainer sending
them only while a viewer watches."""

from __future__ import annotations

import numpy as np
import pytest

from tuinet.data import load_dataset
from tuinet.engine.spec import build_model
from tuinet.protocol import make_command, validate_command
from tuinet.errors import ConfigError
from tuinet.training import embedding as E
from tuinet.training.config import TrainConfig
from tuinet.training.trainer import Trainer


def test_the_projection_is_the_two_leading_principal_components():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)
    a = rng.standard_normal((120, 30)) * np.linspace(3, 0.1, 30) + labels[:, None] * 0.5
    v = E.project(a.astype(np.float32), labels)
    x = a - a.mean(axis=0)
    vals, vecs = np.linalg.eigh(x.T @ x)
    want = x @ vecs[:, ::-1][:, :2]
    want /= np.abs(want).max(axis=0)
    for k in range(2):  # each axis up to its sign
        assert min(np.abs(v["points"][:, k] - want[:, k]).max(), np.abs(v["points"][:, k] + want[:, k]).max()) < 1e-3
    assert np.abs(v["points"]).max(axis=0) == pytest.approx([1, 1])
    assert v["explained"] == pytest.approx(vals[::-1][:2].sum() / vals.sum(), rel=1e-4)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)
    np.fill_diagonal(d, np.inf)
    assert v["neighbours"] == pytest.approx(np.mean(labels[d.argmin(axis=1)] == labels))
    assert v["dims"] == 30
    # started from the last picture, each axis keeps its side
    again = E.project(a.astype(np.float32), labels, start=-v["points"])
    np.testing.assert_allclose(again["points"], -v["points"], atol=1e-3)


def test_wide_feature_maps_are_averaged_over_space_to_fit():
    a = np.random.default_rng(1).random((4, 28, 28, 16))
    p = E._pooled(a)
    assert p.shape == (4, 9 * 9 * 16) and p.shape[1] <= E.MAX_FEATURES  # 3x3 patches: 12,544 values to 1,296
    np.testing.assert_allclose(p.reshape(4, 9, 9, 16)[:, 2, 3], a[:, 6:9, 9:12].mean(axis=(1, 2)))
    small = np.random.default_rng(2).random((4, 8, 8, 2))
    np.testing.assert_array_equal(E._pooled(small), small.reshape(4, -1))


def test_the_views_are_what_each_weighted_layer_receives():
    model = build_model("dense16,relu,dense8,tanh,dense3", (6,), 3, task="classification")
    x = np.random.default_rng(3).standard_normal((50, 6)).astype(np.float32)
    views = E.representations(model, x)
    dense = [layer.name for layer in model.layers if layer.params]
    assert [name for name, _ in views] == ["the input (6 values)", f"{dense[1]}'s input (16 values)",
                                           f"{dense[2]}'s input (8 values)", "the output (3 scores)"]
    w = [layer.params for layer in model.layers if layer.params]
    h1 = np.maximum(x @ w[0][0] + w[0][1], 0)
    h2 = np.tanh(h1 @ w[1][0] + w[1][1])
    for (_, got), want in zip(views, (x, h1, h2, h2 @ w[2][0] + w[2][1])):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    deep = build_model(",".join(["dense8,relu"] * 9) + ",dense3", (6,), 3, task="classification")
    names = [name for name, _ in E.representations(deep, x)]
    assert len(names) == E.MAX_VIEWS and names[0].startswith("the input") and names[-1].startswith("the output")


def test_the_trainer_sends_the_views_only_while_watched_and_with_its_final_weights(tmp_path, monkeypatch):
    import tuinet.training.trainer as T

    monkeypatch.setattr(T, "EMBED_EVERY", 0.0)
    monkeypatch.setattr(T, "EMBED_SHARE", 1e9)  # pacing off: one event per step while watched
    events: list[dict] = []
    t = Trainer(TrainConfig(dataset="digits", model="16", epochs=2, batch_size=128, runs_dir=str(tmp_path)),
                run_dir=False)

    def emit(e):
        events.append(e)
        if e["event"] == "step" and e["step"] == 10:
            t.commands.put(make_command("embedding", watch=False))

    t.emit = emit
    t.commands.put(make_command("embedding", watch=True))
    t.config.log_every = 1
    assert t.run()["event"] == "finished"
    seen = [e for e in events if e["event"] == "embedding"]
    steps = [e["step"] for e in seen]
    assert steps[0] == 0 and max(steps) <= 11 and len(seen) >= 10  # watched from the start, not after step 10
    d = load_dataset("digits", log=lambda m: None)
    last = seen[-1]
    assert last["labels"] == d.y_val[:E.EMBED_SAMPLES].tolist() and len(last["views"]) == 3
    assert last["class_names"] == [str(i) for i in range(10)]
    assert all(len(v["points"]) == len(last["labels"]) for v in last["views"])


def test_the_final_weights_views_come_with_the_finish(tmp_path):
    events: list[dict] = []
    t = Trainer(TrainConfig(dataset="digits", model="16", epochs=1, runs_dir=str(tmp_path)), run_dir=False,
                emit=events.append)
    t.commands.put(make_command("embedding", watch=True))
    t.run()
    last = [e for e in events if e["event"] == "embedding"][-1]
    x = t.data.x_val[:E.EMBED_SAMPLES]
    assert last["preds"] == t.model.predict_proba(x).argmax(axis=1).tolist()
    out = E.project(t.model.predict(x), t.data.y_val[:E.EMBED_SAMPLES])
    assert last["views"][-1]["neighbours"] == pytest.approx(out["neighbours"], abs=1e-4)


def test_the_command_is_checked():
    assert validate_command({"command": "embedding", "watch": True})["watch"] is True
    for bad in ({"command": "embedding"}, {"command": "embedding", "watch": 1}):
        with pytest.raises(ConfigError):
            validate_command(bad)


def test_pictures_are_paced_by_the_cheaper_of_their_last_two_costs(tmp_path):
    """A first picture that compiled kernels (seconds) does not hold the next one back for minutes; a picture that
    keeps costing much is sent less often, within its share of the trainer's time."""
    t = Trainer(TrainConfig(dataset="digits", model="16", epochs=1, runs_dir=str(tmp_path)), run_dir=False)
    assert t._pace("embedding", 5.0, 2.0, 0.05) == 2.0  # the first: its cost is not trusted
    assert t._pace("embedding", 0.25, 2.0, 0.05) == 5.0  # 0.25 s within 5%: every 5 s
    assert t._pace("embedding", 0.01, 2.0, 0.05) == 2.0  # cheap: every 2 s at least
    assert t._pace("embedding", 3.0, 2.0, 0.05) == pytest.approx(2.0)  # one slow answer after a cheap one
    assert t._pace("embedding", 3.0, 2.0, 0.05) == pytest.approx(60.0)  # two slow ones in a row: it is slow
    assert t._pace("probe", 9.0, 0.5, 0.02) == 0.5  # each picture on its own


def test_an_ended_runs_views_come_from_its_saved_weights(tmp_path):
    """The views the app computes for an ended run equal those of the trainer's final weights on the same samples."""
    t = Trainer(TrainConfig(dataset="digits", model="16", epochs=2, runs_dir=str(tmp_path), name="ended"))
    assert t.run()["event"] == "finished"
    live = E.Embedding(t.data.x_val, t.data.y_val).event_fields(t.model)
    saved = E.checkpoint_embedding(tmp_path / "ended")
    assert saved["source"] == "checkpoint" and saved["step"] == t.global_step
    assert saved["labels"] == live["labels"] and saved["preds"] == live["preds"]
    for a, b in zip(saved["views"], live["views"]):
        assert a["name"] == b["name"] and a["neighbours"] == b["neighbours"]
        np.testing.assert_allclose(a["points"], b["points"], atol=2e-3)


def test_a_drawing_lands_on_the_same_components_without_moving_them(tmp_path):
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 120)
    a = rng.standard_normal((121, 30)) * np.linspace(3, 0.1, 30)
    alone = E.project(a[:120], labels)
    v = E.project(a[:120], labels, extra=a[120:])
    np.testing.assert_array_equal(v["points"], alone["points"])  # the extra sample takes no part in the components
    x = a[:120] - a[:120].mean(axis=0)
    vecs = np.linalg.eigh(x.T @ x)[1][:, ::-1][:, :2]
    pts = x @ vecs
    sign = np.sign(np.sum(v["points"] * pts, axis=0))
    want = (a[120:] - a[:120].mean(axis=0)) @ vecs / np.abs(pts).max(axis=0) * sign
    np.testing.assert_allclose(v["extra_points"], want, atol=1e-3)

    # in the trainer: the embedding command's drawing, as the model's input, placed in every view
    from tuinet.training.probe import Probe, ink_range

    events: list[dict] = []
    t = Trainer(TrainConfig(dataset="digits", model="16", epochs=1, runs_dir=str(tmp_path)), run_dir=False,
                emit=events.append)
    image = np.zeros((8, 8))
    image[1, 2:6], image[1:7, 5] = 1.0, 1.0  # a 7
    t.commands.put(make_command("embedding", watch=True, image=image.tolist()))
    t.run()
    last = [e for e in events if e["event"] == "embedding"][-1]
    d = t.data
    drawn = Probe(t.model, d.task, d.input_shape, d.normalizer, ink_range(d.normalizer, d.x_train)).input(image)
    assert last["drawn_pred"] == int(t.model.predict(drawn).argmax())
    assert all(len(v["drawn"]) == 2 for v in last["views"])
    reps = E.representations(t.model, np.concatenate([t.data.x_val[:E.EMBED_SAMPLES], drawn]))
    out = E.project(reps[-1][1][:-1], t.data.y_val[:E.EMBED_SAMPLES], extra=reps[-1][1][-1:])
    assert np.abs(np.abs(out["extra_points"][0]) - np.abs(last["views"][-1]["drawn"])).max() < 2e-3
