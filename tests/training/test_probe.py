"""A picture drawn in the app, answered by the network as it learns (the ``probe`` command and event).

Small real runs on the digits set (8x8 gray images, values 0..16). A drawn picture is given in raw gray levels, as
an image file is read; the answer is checked against the model's own probabilities for the same sample taken from
the dataset's already normalized test split (so the picture's normalization is what is tested), and against the
run's saved weights once it has ended.
"""

from __future__ import annotations

import numpy as np
import pytest

from tuinet.errors import ConfigError
from tuinet.protocol import MAX_IMAGE_SIDE, make_command
from tuinet.training import trainer as trainer_module
from tuinet.training.config import TrainConfig
from tuinet.training.probe import (PROBE_MAPS, PROBE_UNITS, CheckpointProbe, background_level, drawable, ink_range,
                                   layer_picture, probe_answer, probe_input)
from tuinet.training.trainer import Trainer

from tests.training.test_stepview import Driven


def raw_test_image(t: Trainer, i: int = 0) -> list[list[float]]:
    """Test sample i as the ink a drawing would send: the digits set's gray levels 0..16 as 0..1, from the raw
    pixels (the normalization undone)."""
    d = t.data
    raw = d.normalizer.inverse_transform(d.x_test[i:i + 1])[0, :, :, 0]
    assert raw.min() >= 0 and raw.max() <= 16
    return (raw / 16.0).tolist()


def test_a_drawn_picture_is_answered_as_the_model_answers_that_sample_and_follows_each_step():
    d = Driven(model="32")
    d.start_paused()
    t = d.trainer
    image = raw_test_image(t, 5)
    d.send("probe", image=image)
    first = d.wait("probe")
    want = t.model.predict_proba(t.data.x_test[5:6])[0]
    np.testing.assert_allclose(first["probs"], want, rtol=1e-4, atol=1e-6)
    assert first["pred"] == int(np.argmax(want))
    assert abs(sum(first["probs"]) - 1) < 1e-4
    assert first["step"] == t.global_step == 0

    d.send("step")  # one step while paused: the picture is answered again, with the new weights
    after = d.wait("probe")
    assert after["step"] == 1
    want = t.model.predict_proba(t.data.x_test[5:6])[0]
    np.testing.assert_allclose(after["probs"], want, rtol=1e-4, atol=1e-6)
    assert not np.allclose(after["probs"], first["probs"], rtol=0, atol=1e-7)

    d.send("probe", image=None)  # cleared: an answer of nothing, and no more answers
    cleared = d.wait("probe")
    assert cleared["probs"] is None and cleared["pred"] is None
    d.send("step")
    d.wait("step_detail")
    final = d.finish()
    assert final["event"] == "finished"
    assert not [e for e in d.seen[d.seen.index(cleared) + 1:] if e["event"] == "probe"]


def test_while_training_runs_the_answer_comes_again_as_the_weights_change(monkeypatch):
    monkeypatch.setattr(trainer_module, "PROBE_EVERY", 0.0)  # every step (the rate limit is time, not steps)
    monkeypatch.setattr(trainer_module, "PROBE_SHARE", float("inf"))
    d = Driven(model="32", epochs=2)
    d.start_paused()
    t = d.trainer
    d.send("probe", image=raw_test_image(t, 0))
    d.wait("probe")
    d.send("resume")
    final = d.wait("finished")
    d.thread.join(30)
    probes = [e for e in d.seen if e["event"] == "probe"]
    steps = [e["step"] for e in probes]
    assert steps[1:-1] == list(range(1, final["steps"] + 1))  # one per step, then the final weights' answer
    assert steps[-1] == final["steps"]
    assert probes[-1]["epoch"] == 2
    # the last answer is the final model's, which is what the saved checkpoint answers too
    np.testing.assert_allclose(probes[-1]["probs"], t.model.predict_proba(t.data.x_test[:1])[0], rtol=1e-4,
                               atol=1e-6)


def test_the_saved_weights_answer_as_the_trainer_did_at_the_end(tmp_path):
    events: list[dict] = []
    cfg = TrainConfig(dataset="digits", model="32", batch_size=64, seed=3, epochs=1, runs_dir=str(tmp_path / "runs"))
    t = Trainer(cfg, emit=events.append)
    t.commands.put(make_command("probe", image=[[0.0] * 8] * 3 + [[1.0] * 8] * 2 + [[0.0] * 8] * 3))
    final = t.run()
    assert final["event"] == "finished"
    last = [e for e in events if e["event"] == "probe"][-1]
    probe = CheckpointProbe(final["run_dir"])
    answer = probe.answer([[0.0] * 8] * 3 + [[1.0] * 8] * 2 + [[0.0] * 8] * 3)
    np.testing.assert_allclose(answer["probs"], last["probs"], rtol=1e-4, atol=1e-6)
    assert answer["pred"] == last["pred"]
    assert probe.step == final["steps"]


def test_a_picture_that_does_not_fit_the_model_is_refused_in_one_line_and_training_goes_on():
    d = Driven(model="32")
    d.start_paused()
    d.send("probe", image=[[0.0] * 4] * 4)
    e = d.wait("log")
    assert e["level"] == "error"
    assert e["message"] == "command probe refused: the drawn image is 4x4 (width x height); the model takes 8x8"
    d.send("probe", image=[[1.5] * 8] * 8)
    assert "ink from 0 to 1" in d.wait("log")["message"]
    assert d.trainer._probe_x is None
    assert d.finish()["event"] == "finished"
    assert not [e for e in d.seen if e["event"] == "probe"]


def test_only_classifiers_of_gray_images_take_a_drawing():
    assert drawable("classification", [28, 28, 1]) and drawable("classification", [8, 8, 1])
    assert not drawable("classification", [32, 32, 3])  # colour
    assert not drawable("classification", [2])  # points
    assert not drawable("regression", [8, 8, 1])
    assert not drawable("classification", [MAX_IMAGE_SIDE + 1, 8, 1])
    with pytest.raises(ConfigError, match="classifiers of gray images.*takes 2 inputs"):
        probe_input([[0.0]], "classification", [2], None)


@pytest.mark.parametrize("image, message", [
    ([[0] * 3] * (MAX_IMAGE_SIDE + 1), "1 to 64 rows"),
    ([[0] * (MAX_IMAGE_SIDE + 1)], "1 to 64 rows"),
    ([], "1 to 64 rows"),
    ("abc", "1 to 64 rows"),
    ([[0, 0], [0]], "same length"),
    ([[0, float("nan")]], "finite numbers"),
    ([[0, "1"]], "finite numbers"),
    ([[0, True]], "finite numbers"),
])
def test_a_probe_command_is_checked_before_it_reaches_the_trainer(image, message):
    with pytest.raises(ConfigError, match=message):
        make_command("probe", image=image)
    assert make_command("probe", image=None)["image"] is None


def test_the_forward_pass_layer_by_layer_is_each_layers_output_for_the_picture():
    """Checked against NumPy: the digits net's Dense, ReLU, Dense outputs for the picture, computed from its weights
    in float64, as whole percentages of each layer's largest magnitude."""
    t = Trainer(TrainConfig(dataset="digits", model="32", batch_size=64, seed=3, epochs=1), run_dir=False)
    assert t.run()["event"] == "finished"
    x = t.data.x_test[:1]
    answer = probe_answer(t.model, x, background=float(t.data.x_train.min()))
    rows = {r["kind"] + str(i): r for i, r in enumerate(answer["forward"])}
    assert [r["kind"] for r in answer["forward"]] == ["Flatten", "Dense", "ReLU", "Dense"]
    w1, b1 = (p.astype(np.float64) for p in t.model.layers[1].params)
    w2, b2 = (p.astype(np.float64) for p in t.model.layers[3].params)
    h1 = x.reshape(1, -1).astype(np.float64) @ w1 + b1
    r1 = np.maximum(h1, 0)
    out = r1 @ w2 + b2
    for row, want in ((rows["Dense1"], h1[0]), (rows["ReLU2"], r1[0]), (rows["Dense3"], out[0])):
        scale = np.abs(want).max()
        assert row["scale"] == pytest.approx(scale, rel=1e-4)
        assert np.abs(np.asarray(row["units"]) - np.rint(want / scale * 100)).max() <= 1
        assert row["size"] == len(want)
    assert rows["ReLU2"]["stats"]["zero"] == pytest.approx(np.mean(r1 == 0))
    p = np.exp(out[0] - out[0].max())
    np.testing.assert_allclose(answer["probs"], p / p.sum(), atol=1e-5)
    np.testing.assert_allclose(answer["probs"], t.model.predict_proba(x)[0], atol=1e-5)


def test_channel_maps_are_averaged_down_and_bounded():
    y = np.zeros((28, 28, 12))
    y[:2, :2, 0] = 4.0  # one 2x2 block: one pixel of the 14x14 map
    y[:, :, 1] = -2.0
    pic = layer_picture(y)
    maps = np.asarray(pic["maps"])
    assert maps.shape == (PROBE_MAPS, 14, 14) and pic["channels"] == 12 and pic["scale"] == 4.0
    assert maps[0, 0, 0] == 100 and maps[0].sum() == 100 and (maps[1] == -50).all()
    flat = layer_picture(np.linspace(-1, 3, 500))
    assert len(flat["units"]) == PROBE_UNITS and flat["size"] == 500  # the first units, on their own scale
    assert flat["units"][0] == -100 and flat["scale"] == 1.0
    nan = layer_picture(np.array([np.nan, 1.0, -2.0]))
    assert nan["units"] == [0, 50, -100] and nan["scale"] == 2.0


def test_occlusion_is_the_change_in_the_predicted_class_when_each_patch_is_covered():
    """Checked patch by patch against the model's own probabilities for the covered inputs, built here."""
    t = Trainer(TrainConfig(dataset="digits", model="16", batch_size=64, seed=3, epochs=2), run_dir=False)
    assert t.run()["event"] == "finished"
    x = t.data.x_test[3:4]
    bg = background_level(t.data.normalizer, ink_range(t.data.normalizer, t.data.x_train))
    assert bg == pytest.approx(float(t.data.x_train.min()))  # no ink: the darkest gray of the training set
    answer = probe_answer(t.model, x, background=bg)
    occ = answer["occlusion"]
    cls = answer["pred"]
    assert occ["class"] == cls and occ["patch"] == 1  # 8x8: a grid of 8x8 one-pixel patches (about 7 a side)
    base = t.model.predict(x)[0, cls]  # the score (logit): a confident answer's probability hardly moves
    change = np.asarray(occ["change"])
    assert change.shape == (8, 8)
    for i, j in ((0, 0), (3, 4), (7, 7), (5, 2)):
        covered = x.copy()
        covered[0, i, j, :] = bg
        assert change[i, j] == pytest.approx(t.model.predict(covered)[0, cls] - base, abs=1e-3)
    assert occ["score"] == pytest.approx(base, abs=1e-3)
    assert np.abs(change).max() > 0.001  # some pixel matters


def test_the_trainers_answer_says_where_the_network_looks():
    d = Driven(model="32")
    d.start_paused()
    d.send("probe", image=raw_test_image(d.trainer, 2))
    answer = d.wait("probe")
    assert answer["occlusion"]["class"] == answer["pred"] and len(answer["occlusion"]["change"]) == 8
    d.finish()
