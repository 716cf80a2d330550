"""The end of a run in the app: both test figures labelled, the summary in the log and on the terminal after the
app closes, and the alert (bell, desktop notification) rung once for a live end, never for a replayed one."""

from __future__ import annotations

from tests.app.fakes import FakeSession, opening
from tuinet.app.app import TuinetApp, print_summary
from tuinet.app.testing import async_test, wait_until
from tuinet.protocol import make_event
from tuinet.training.config import TrainConfig


def finished(runs_dir: str = "runs", best_epoch: int = 4) -> dict:
    best = {"epoch": 4, "loss": 0.061, "accuracy": 0.9812} if best_epoch == 4 else {
        "epoch": 5, "loss": 0.07, "accuracy": 0.9790}
    return make_event("finished", final="best", test_accuracy=best["accuracy"], test_loss=best["loss"],
                      test_best=best, test_last={"epoch": 5, "loss": 0.07, "accuracy": 0.9790}, epochs=5, steps=500,
                      train_seconds=12.5, best_epoch=best_epoch, best_val_accuracy=0.982, elapsed_seconds=20.0,
                      run_dir=f"{runs_dir}/mlp-spiral", name="mlp-spiral")


async def end_with(pilot, fake: FakeSession, event: dict) -> str:
    """Send the run's end to the app; the status panel's text once it shows the run finished."""
    fake.emit(event)
    await wait_until(pilot, lambda: pilot.app.state.status == "finished", what="the end")
    return str(pilot.app.query_one("#status").render())


@async_test
async def test_a_live_end_shows_both_figures_and_the_summary_and_rings_once(tmp_path):
    fake = FakeSession(opening())
    app = TuinetApp(fake, config=TrainConfig(dataset="spiral", runs_dir=str(tmp_path)))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        assert app.alerts_sent == []
        status = await end_with(pilot, fake, finished(str(tmp_path)))
        assert "test@best (ep 4) 98.12%" in status and "test@last (ep 5) 97.90%" in status
        log = "\n".join(text for _, _, text in app.state.log)
        assert "on the best validation epoch's weights (epoch 4)" in log and "tuinet eval mlp-spiral" in log
        assert [a["alert"] for a in app.alerts_sent] == ["finished"]
        assert "98.12%" in app.alerts_sent[0]["message"]


@async_test
async def test_one_test_figure_when_the_best_epoch_is_the_last(tmp_path):
    """Best and last are the same weights: one figure, which fits the status panel at 100 columns."""
    fake = FakeSession(opening())
    app = TuinetApp(fake, config=TrainConfig(dataset="spiral", runs_dir=str(tmp_path)))
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
        status = await end_with(pilot, fake, finished(str(tmp_path), best_epoch=5))
        assert "test@best=last (ep 5) 97.90%" in status and "test@last" not in status
        line = next(line for line in status.splitlines() if "test@" in line)
        assert len(line) <= app.query_one("#status").content_region.width


@async_test
async def test_the_test_figures_fit_an_80_column_terminal(tmp_path):
    """At 80x24 (a terminal over SSH) the labels shorten so that the test accuracy, not it, is what fits: one figure
    when best and last agree, both otherwise (at 120 columns the full labels stay)."""
    for best_epoch, size, wanted in ((5, (80, 24), ["test (ep 5) 97.90%"]),
                                     (4, (80, 24), ["test best 98.12%", "last 97.90%"]),
                                     (4, (120, 40), ["test@best (ep 4) 98.12%", "test@last (ep 5) 97.90%"])):
        fake = FakeSession(opening())
        app = TuinetApp(fake, config=TrainConfig(dataset="spiral", runs_dir=str(tmp_path)))
        async with app.run_test(size=size) as pilot:
            await wait_until(pilot, lambda: app.state.step == 15, what="the opening")
            fake.emit(make_event("epoch", epoch=5, step=500, train_loss=0.0304, train_accuracy=0.991, val_loss=0.0683,
                                 val_accuracy=0.979, lr=0.001, seconds=1.0, samples_per_second=1000.0))
            await wait_until(pilot, lambda: app.state.val_loss is not None, what="the epoch")
            status = await end_with(pilot, fake, finished(str(tmp_path), best_epoch=best_epoch))
            line = next(line for line in status.splitlines() if "val loss 0.0683" in line)
            assert all(w in line for w in wanted), (size, line)
            assert len(line) <= app.query_one("#status").content_region.width, (size, line)


@async_test
async def test_a_replayed_end_rings_no_bell():
    old = finished()
    old["time"] -= 3600  # an attached viewer replays a run that ended an hour ago
    fake = FakeSession([*opening(), old], started=True)
    app = TuinetApp(fake, config=None)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.state.status == "finished", what="the history")
        assert app.alerts_sent == []


def test_the_summary_is_printed_after_the_app(capsys, tmp_path):
    fake = FakeSession([*opening(), finished(str(tmp_path))], started=True)
    print_summary(fake)
    out = capsys.readouterr().out
    assert out.startswith("mlp-spiral finished 5 epochs")
    assert "test accuracy 98.12%, loss 0.061 on the best validation epoch's weights (epoch 4)  <- the run's result" \
        in out
    assert "test accuracy 97.90%" in out and f"run folder: {tmp_path}/mlp-spiral" in out
    for cmd in ("tuinet eval mlp-spiral", "tuinet plot mlp-spiral", "tuinet compare", "tuinet resume mlp-spiral"):
        assert cmd in out
    assert "tuinet predict" not in out  # a spiral run reads no digits


def test_a_run_on_mnist_ends_by_offering_to_read_ones_own_digit(tmp_path):
    from tuinet.training.summary import summary_lines

    for kind in ("finished", "stopped"):
        final = dict(finished(str(tmp_path)), event=kind, dataset="mnist", name="mlp-mnist", reason="user",
                     run_dir=f"{tmp_path}/mlp-mnist")
        lines = summary_lines(final, runs_dir=str(tmp_path))
        cmds = lines[lines.index("  next:") + 1:]
        assert cmds[-1].split() == ["tuinet", "predict", "mlp-mnist", "DIGIT.png", "--fit", "digit", "your", "own",
                                    "digit,", "photographed", "or", "drawn"]
        # the descriptions stay in one column, after the longest command
        descs = ["test report of both checkpoints", "loss and accuracy curves", "next to the recent runs",
                 "your own digit, photographed or drawn"]
        assert len({line.index(d) for line, d in zip([cmds[0], cmds[1], cmds[2], cmds[-1]], descs)}) == 1


def test_one_epoch_is_one_epoch_in_the_summary(tmp_path):
    from tuinet.training.summary import summary_lines

    one = dict(finished(str(tmp_path)), epochs=1)
    assert summary_lines(one)[0].startswith("mlp-spiral finished 1 epoch, ")
    stopped = dict(one, event="stopped", reason="user", epoch=1)
    assert summary_lines(stopped)[0].startswith("mlp-spiral stopped (user) after 1 epoch, ")
    assert summary_lines(dict(one, epochs=5))[0].startswith("mlp-spiral finished 5 epochs, ")

