"""What a run with --augment shows: the samples event's augmented training samples (checked against the trainer's
own last batch and model), the Predictions tab's section of them, and the status panel's settings line."""

from __future__ import annotations

import numpy as np

from tests.app.fakes import FakeSession, opening
from tuinet.app.app import TuinetApp
from tuinet.app.testing import async_test, press, wait_until
from tuinet.app.widgets.dashboard import regularization
from tuinet.protocol import make_event
from tuinet.training.config import TrainConfig
from tuinet.training.trainer import AUGMENTED_SAMPLES, Trainer


def digits_run(tmp_path, **kw) -> tuple[Trainer, list[dict]]:
    events: list[dict] = []
    cfg = TrainConfig(**{**dict(dataset="digits", model="32", epochs=2, batch_size=64, runs_dir=str(tmp_path)), **kw})
    t = Trainer(cfg, run_dir=False, emit=events.append)
    assert t.run()["event"] == "finished"
    return t, events


def test_the_samples_event_shows_the_last_batch_as_augmented_and_the_models_answers(tmp_path):
    t, events = digits_run(tmp_path, augment="shift=1,rotate=10")
    last = [e for e in events if e["event"] == "samples"][-1]  # sent after the run finished: the final weights
    assert last["augment"] == "shift=1,rotate=10"
    xb, yb = t._augmented
    shown = last["augmented"]
    assert len(shown) == AUGMENTED_SAMPLES
    probs = t.model.predict_proba(xb[:AUGMENTED_SAMPLES])
    assert [it["label"] for it in shown] == yb[:AUGMENTED_SAMPLES].tolist()
    assert [it["pred"] for it in shown] == probs.argmax(axis=1).tolist()
    np.testing.assert_allclose([it["confidence"] for it in shown], probs.max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(np.asarray([it["image"] for it in shown]), xb[:AUGMENTED_SAMPLES, :, :, 0], atol=0.006)
    # the batch is not a batch of the split as it is: the moved copies differ from every training sample
    rows = t.data.x_train.reshape(len(t.data.x_train), -1)
    assert sum(not (rows == x.reshape(-1)).all(axis=1).any() for x in xb) > len(xb) // 2
    _, plain = digits_run(tmp_path, epochs=1)
    assert all("augmented" not in e for e in plain if e["event"] == "samples")


def test_the_status_line_names_what_regularizes_the_run():
    assert regularization({"dropout": 0.1, "l2": 0.001, "augment": "shift=2,rotate=15"}) == \
        "dropout 0.1, l2 0.001, augment shift=2,rotate=15"
    assert regularization({"dropout": 0.0, "l1": 0, "augment": None}) == ""


def samples_event(augmented: bool) -> dict:
    image = np.zeros((8, 8))
    image[2:6, 3] = 1.0
    item = {"index": 0, "label": 1, "pred": 1, "confidence": 0.97, "image": image.tolist()}
    extra = {"augmented": [dict(item, confidence=0.61)] * 4, "augment": "shift=1,rotate=10"} if augmented else {}
    return make_event("samples", step=40, epoch=1, class_names=[str(i) for i in range(10)], samples=[item] * 4,
                      wrong=[], **extra)


@async_test
async def test_the_predictions_tab_shows_what_the_network_trains_on_only_for_an_augmenting_run():
    for augmented in (True, False):
        events = opening("digits")
        events[0]["config"]["augment"] = "shift=1,rotate=10" if augmented else None
        session = FakeSession(events + [samples_event(augmented)])
        app = TuinetApp(session)
        async with app.run_test(size=(120, 40)) as pilot:
            await press(pilot, "3")
            section = app.query_one("#augmented")
            await wait_until(pilot, lambda: app.state.samples is not None, what="the samples event")
            await pilot.pause(0.1)
            if augmented:
                text = section.text_for(60).plain
                assert text.startswith("what it trains on (step 40, augmented)\n--augment shift=1,rotate=10: a new "
                                       "version of each sample\nat every step\n")  # wrapped to the width
                assert text.count("1 ✓ 61%") == 4 and section.display
                assert app.query_one("#samples-scroll").border_title == \
                    "test samples · what it trains on · most confidently wrong"
            else:
                assert not section.display
            status = str(app.query_one("#status").render())
            assert ("augment shift=1,rotate=10" in status) is augmented
