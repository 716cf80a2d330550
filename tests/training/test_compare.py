"""Compare's data layer on crafted run folders: incremental, bounded, tolerant curve reading; run records; filters,
sorting and the settings diff."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tuinet.errors import ConfigError
from tuinet.protocol import PROTOCOL_VERSION, to_json
from tuinet.training.compare import COLUMNS, SETTINGS, STATUSES, RunRecord, load_run, load_runs, parse_filter, settings_diff, sort_runs
from tuinet.training.curves import SERIES, X_AXES, CurveReader

T0 = 1_700_000_000.0


def ev(kind: str, t: float = 0.0, v: int = PROTOCOL_VERSION, **fields) -> str:
    """One metrics.jsonl line, as a trainer writes it."""
    return to_json({"event": kind, "v": v, "time": T0 + t, **fields}) + "\n"


def started(t: float = 0.0, step: int = 0, epoch: int = 0, batch_size: int = 10, steps_per_epoch: int = 10,
            **fields) -> str:
    return ev("started", t, name="r", config={"batch_size": batch_size}, num_params=1234, batch_size=batch_size,
              steps_per_epoch=steps_per_epoch, epochs=5, resumed=step > 0, step=step, epoch=epoch, **fields)


def step(s: int, t: float | None = None, spe: int = 10, loss: float | None = None, **fields) -> str:
    return ev("step", s if t is None else t, step=s, epoch=s / spe, loss=1.0 / s if loss is None else loss,
              accuracy=1 - 1.0 / (s + 1), lr=0.1, **fields)


def epoch(e: int, spe: int = 10, t: float | None = None) -> str:
    return ev("epoch", e * spe if t is None else t, epoch=e, step=e * spe, train_loss=0.5, val_loss=1.0 / e,
              val_accuracy=0.5 + e / 100, samples_per_second=100.0)


def write(path: Path, *lines: str, mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as f:
        f.write("".join(lines))
    return path


def make_run(root: Path, name: str, config: dict | None = None, status: dict | None = None,
             lines: tuple[str, ...] = ()) -> Path:
    d = root / name
    d.mkdir(parents=True)
    if config is not None:
        (d / "config.json").write_text(json.dumps(config))
    if status is not None:
        (d / "status.json").write_text(json.dumps(status))
    if lines:
        write(d / "metrics.jsonl", *lines)
    return d


# --- the curve reader -----------------------------------------------------------------------------------------------


def test_the_reader_keeps_where_settings_changed_on_every_axis_and_drops_those_a_resume_replays(tmp_path):
    p = write(tmp_path / "metrics.jsonl", started(), *(step(s) for s in range(1, 11)),
              ev("lr_changed", 5, lr=0.2, old_lr=0.1, source="user", step=5),
              ev("lr_changed", 6, lr=0.19, old_lr=0.2, source="schedule", step=6),  # the schedule's: no line
              ev("regularization_changed", 8, l1=0, l2=0.01, dropout=0, weight_decay=0, previous={}, step=8),
              ev("optimizer_changed", 8, name="sgd", step=8),  # the same step: one line
              *(step(s) for s in range(11, 21)), ev("optimizer_changed", 15, name="adam", step=15))
    r = CurveReader(p)
    r.poll()
    assert r.setting_changes("step") == [5.0, 8.0, 15.0]
    assert r.setting_changes("epoch") == [0.5, 0.8, 1.5]
    assert r.setting_changes("samples") == [50.0, 80.0, 150.0]  # batch 10
    assert r.setting_changes("time") == [5.0, 8.0, 15.0]
    # killed after step 20 with its last checkpoint at step 10: the resume logs steps 11-20 again, without the
    # change at 15 (it was lost with those steps)
    write(p, started(30, step=10, epoch=1), *(step(s, t=30 + s) for s in range(11, 13)), mode="a")
    r.poll()
    assert r.setting_changes("step") == [5.0, 8.0]
    with pytest.raises(ValueError, match="unknown x axis"):
        r.setting_changes("wall")


def test_reads_every_series_against_every_axis(tmp_path):
    p = write(tmp_path / "metrics.jsonl", started(), *(step(s) for s in range(1, 11)), epoch(1),
              ev("validation", 15, step=15, val_loss=0.8, val_accuracy=0.6), *(step(s) for s in range(11, 21)),
              epoch(2))
    r = CurveReader(p)
    assert r.poll() is True
    assert set(SERIES) == set(r.curves())
    tl = r.curve("train_loss")
    assert tl.step == [float(s) for s in range(1, 21)]
    assert tl.y == pytest.approx([1.0 / s for s in range(1, 21)])
    assert tl.samples == [s * 10.0 for s in range(1, 21)]  # step x batch size
    assert tl.time == [float(s) for s in range(1, 21)]  # seconds since the started event
    assert tl.epoch == pytest.approx([s / 10 for s in range(1, 21)])
    vl = r.curve("val_loss")
    assert vl.step == [10.0, 15.0, 20.0]
    assert vl.epoch == [1.0, 1.5, 2.0]  # the mid-epoch validation: step / steps_per_epoch
    assert vl.y == pytest.approx([1.0, 0.8, 0.5])
    assert r.curve("val_accuracy").y == pytest.approx([0.51, 0.6, 0.52])
    for axis in X_AXES:
        xs, ys = r.curve("train_accuracy").points(axis)
        assert len(xs) == len(ys) == 20
    assert r.events["started"]["num_params"] == 1234 and r.events["epoch"]["epoch"] == 2
    assert r.notes == [] and r.damaged == 0
    with pytest.raises(ValueError):
        r.curve("nope")
    with pytest.raises(ValueError):
        tl.points("nope")


def test_half_written_last_line_waits_for_the_next_poll(tmp_path):
    p = write(tmp_path / "metrics.jsonl", started(), step(1), step(2))
    whole = step(3)
    write(p, whole[:25], mode="a")  # a live trainer in the middle of a write
    r = CurveReader(p)
    assert r.poll()
    assert r.curve("train_loss").step == [1.0, 2.0]
    assert r.pending == 25 and r.offset == p.stat().st_size - 25
    assert r.poll() is False  # nothing new
    write(p, whole[25:], mode="a")
    assert r.poll() is True
    assert r.curve("train_loss").step == [1.0, 2.0, 3.0]
    assert r.notes == [] and r.damaged == 0 and r.pending == 0


def test_damaged_lines_are_skipped_counted_and_noted(tmp_path):
    torn = step(3)[:30]  # a trainer killed mid-line, then resumed: the next event is glued to the torn one
    p = write(tmp_path / "metrics.jsonl", started(), step(1), "not json at all\n", step(2), "[1, 2]\n",
              torn + started(t=50, step=2, epoch=0), step(3, t=51), "\n", epoch(1, t=60))
    r = CurveReader(p)
    r.poll()
    assert r.curve("train_loss").step == [1.0, 2.0, 3.0]
    assert r.curve("val_loss").step == [10.0]
    assert r.damaged == 3
    assert r.notes == ["3 damaged lines skipped in metrics.jsonl (first at line 3)"]
    assert r.events["started"]["step"] == 2  # the event after the torn piece was read


def test_damaged_off_grid_step_lines_do_not_hide_the_next_event(tmp_path):
    p = write(tmp_path / "metrics.jsonl", started(), *(step(s) for s in range(1, 30)),
              step(30)[:40] + epoch(3), step(31))
    r = CurveReader(p, max_points=4)
    r.poll()
    assert r.curve("val_loss").step == [30.0] and r.damaged == 1
    assert r.curve("train_loss").step[-1] == 31.0


def test_other_protocol_version_is_read_with_one_note(tmp_path):
    p = write(tmp_path / "metrics.jsonl", started(v=0), *(ev("step", s, v=0, step=s, loss=0.5) for s in (1, 2, 3)),
              ev("epoch", 4, v=0, epoch=1, step=3, val_loss=0.4), ev("step", 5, v=7, step=4, loss=0.4, extra=1))
    r = CurveReader(p)
    r.poll()
    assert r.curve("train_loss").y == [0.5, 0.5, 0.5, 0.4]
    assert r.curve("train_accuracy").y == []  # a field the old events lack: no points, no error
    assert r.curve("val_loss").epoch == [1.0]
    notes = r.notes
    assert len(notes) == 1 and "protocol version 0, 7" in notes[0] and f"reads version {PROTOCOL_VERSION}" in notes[0]


def test_empty_and_missing_files(tmp_path):
    p = write(tmp_path / "metrics.jsonl")
    r = CurveReader(p)
    assert r.poll() is False and r.notes == []
    assert all(len(c) == 0 for c in r.curves().values())
    gone = CurveReader(tmp_path / "nothing.jsonl")
    assert gone.poll() is False and gone.notes == ["metrics.jsonl is missing"]
    write(tmp_path / "nothing.jsonl", started(), step(1))
    assert gone.poll() is True and gone.notes == []


def test_decimation_keeps_the_bound_and_an_even_resolution(tmp_path):
    n, cap = 1000, 20
    p = write(tmp_path / "metrics.jsonl", started(), *(step(s) for s in range(1, n + 1)))
    r = CurveReader(p, max_points=cap)
    r.poll()
    steps = r.curve("train_loss").step
    assert len(steps) <= cap
    assert steps[0] == 1.0 and steps[-1] == float(n)  # the whole run, up to the newest point
    grid = steps[:-1] if (steps[-1] - 1) % r.stride["train"] else steps
    gaps = {b - a for a, b in zip(grid, grid[1:])}
    assert gaps == {float(r.stride["train"])} and len(grid) >= cap // 2  # evenly spaced, and not sparse
    # reading the same file in many small polls gives the same points
    inc = tmp_path / "inc.jsonl"
    write(inc, started())
    r2 = CurveReader(inc, max_points=cap)
    for s in range(1, n + 1):
        write(inc, step(s), mode="a")
        if s % 37 == 0 or s == n:
            r2.poll()
    assert r2.curve("train_loss").step == steps
    with pytest.raises(ValueError):
        CurveReader(p, max_points=1)


def test_incremental_polling_reads_only_what_was_appended(tmp_path):
    p = write(tmp_path / "metrics.jsonl", started(), step(1), step(2), epoch(1, t=2.5))
    r = CurveReader(p)
    assert r.poll() is True
    first = r.offset
    assert first == p.stat().st_size
    assert r.poll() is False and r.offset == first
    write(p, ev("log", 3, level="info", message="hello"), mode="a")
    assert r.poll() is False and r.offset > first  # read, but no series changed
    write(p, step(3), epoch(2, t=3.5), mode="a")
    assert r.poll() is True
    assert r.curve("train_loss").step == [1.0, 2.0, 3.0] and r.curve("val_loss").step == [10.0, 20.0]
    assert r.events["log"]["message"] == "hello"
    # a validation at the end of an epoch, then the epoch's own event for the same step: one point, the later one
    write(p, ev("validation", 3.6, step=30, val_loss=0.9, val_accuracy=0.1), mode="a")
    assert r.poll() is True and r.curve("val_loss").y[-1] == 0.9
    write(p, epoch(3, t=3.7), mode="a")
    assert r.poll() is True
    assert r.curve("val_loss").step == [10.0, 20.0, 30.0] and r.curve("val_loss").y[-1] == pytest.approx(1 / 3)


def test_a_resumed_run_continues_and_a_replayed_step_replaces_the_old_one(tmp_path):
    p = write(tmp_path / "metrics.jsonl", started(steps_per_epoch=5), *(step(s, spe=5) for s in range(1, 6)),
              epoch(1, spe=5, t=5.5), step(6, spe=5), step(7, spe=5),
              # killed after step 7; the last checkpoint was at step 5: the resume logs 6 and 7 again
              started(t=100, step=5, epoch=1, steps_per_epoch=5), step(6, t=101, spe=5, loss=9.0),
              step(7, t=102, spe=5, loss=9.0), step(8, t=103, spe=5))
    r = CurveReader(p)
    r.poll()
    c = r.curve("train_loss")
    assert c.step == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert c.y[5:7] == [9.0, 9.0]  # the later copy
    assert c.time[:5] == [1.0, 2.0, 3.0, 4.0, 5.0]
    # wall time continues from the last event read before the resume (7 s), not from the gap until 100 s
    assert c.time[5:] == [8.0, 9.0, 10.0]
    assert c.samples == [s * 10.0 for s in range(1, 9)]
    assert r.curve("val_loss").step == [5.0]  # the epoch that the checkpoint holds stays


def test_samples_follow_a_batch_size_change_on_resume(tmp_path):
    p = write(tmp_path / "metrics.jsonl", started(batch_size=10), step(1), step(2),
              started(t=10, step=2, batch_size=20), step(3, t=11))
    r = CurveReader(p)
    r.poll()
    assert r.curve("train_loss").samples == [10.0, 20.0, 40.0]


def test_batch_size_from_config_when_the_started_event_is_lost(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"batch_size": 32}))
    p = write(tmp_path / "metrics.jsonl", "garbage\n", step(1), step(2))
    r = CurveReader(p)
    r.poll()
    assert r.curve("train_loss").samples == [32.0, 64.0]
    assert r.curve("train_loss").time == [0.0, 1.0]  # from the first event read


def test_a_replaced_file_is_read_again(tmp_path):
    p = write(tmp_path / "metrics.jsonl", started(), step(1), step(2), step(3))
    r = CurveReader(p)
    r.poll()
    write(p, started(), step(1))
    assert r.poll() is True
    assert r.curve("train_loss").step == [1.0]
    assert any("read again" in n for n in r.notes)


def test_nulls_leave_gaps(tmp_path):
    p = write(tmp_path / "metrics.jsonl", started(), step(1), ev("step", 2, step=2, epoch=0.2, loss=None), step(3))
    r = CurveReader(p)
    r.poll()
    assert r.curve("train_loss").step == [1.0, 3.0]


# --- run records ----------------------------------------------------------------------------------------------------


def finished_run(root: Path, name: str, early: bool = False, **config) -> Path:
    cfg = {"dataset": "digits", "model": "mlp", "optimizer": "adam", "lr": 0.01, "batch_size": 10, "epochs": 2,
           "dropout": 0.0, "seed": 0, "name": name, "runs_dir": str(root), **config}
    lines = [started(), *(step(s) for s in range(1, 21)), epoch(1), epoch(2)]
    if early:
        lines.append(ev("early_stopped", 21, epoch=2, best_epoch=1, best_val_loss=0.4))
    lines.append(ev("finished", 22, test_accuracy=0.9, test_loss=0.3, epochs=2, steps=20, train_seconds=4.0,
                    samples_per_second=50.0))
    status = {"name": name, "status": "finished", "pid": 2**22 + 7, "dataset": cfg["dataset"], "model": cfg["model"],
              "epoch": 2, "epochs": 2, "best_val_loss": 0.5, "best_val_accuracy": 0.52, "test_accuracy": 0.9,
              "train_seconds": 4.0, "started": T0 + cfg["seed"], "updated": T0 + 22}
    return make_run(root, name, cfg, status, tuple(lines))


def test_record_of_a_finished_run(tmp_path):
    d = finished_run(tmp_path, "a", parent={"run": "base", "epoch": 3, "step": 30})
    r = load_run(d)
    assert (r.name, r.status, r.dataset, r.model, r.params) == ("a", "finished", "digits", "mlp", 1234)
    assert (r.epochs_done, r.epochs_planned, r.best_val_loss, r.best_val_accuracy) == (2, 2, 0.5, 0.52)
    assert (r.test_accuracy, r.train_seconds, r.samples_per_second) == (0.9, 4.0, 50.0)
    assert r.parent == {"run": "base", "epoch": 3, "step": 30} and r.value("parent") == "base"
    assert r.notes == [] and r.live is False and r.status in STATUSES
    assert r.value("lr") == 0.01 and r.value("epochs") == 2 and r.value("unknown") is None
    for key in COLUMNS:
        r.value(key)
    d2 = json.loads(json.dumps(r.to_dict()))
    assert d2["name"] == "a" and d2["path"] == str(d)


def test_early_stopped_and_stopped_runs(tmp_path):
    assert load_run(finished_run(tmp_path, "e", early=True)).status == "early_stopped"
    d = make_run(tmp_path, "s", {"epochs": 5}, {"status": "stopped", "epoch": 1, "epochs": 5, "started": T0},
                 (started(), step(1), epoch(1), ev("stopped", 12, reason="user", step=10, epoch=1)))
    assert load_run(d).status == "stopped"


def test_live_paused_and_crashed(tmp_path):
    me = os.getpid()
    live = make_run(tmp_path, "live", {"epochs": 5}, {"status": "running", "pid": me, "started": T0},
                    (started(), step(1)))
    paused = make_run(tmp_path, "paused", {"epochs": 5}, {"status": "paused", "pid": me}, (started(),))
    crashed = make_run(tmp_path, "crashed", {"epochs": 5}, {"status": "running", "pid": 2**22 + 99},
                       (started(), step(1), step(2)[:20]))
    r = load_run(live)
    assert r.status == "live" and r.live and r.pid == me and r.notes == []
    assert load_run(paused).status == "paused"
    c = load_run(crashed)
    assert c.status == "crashed" and not c.live
    assert any("no trainer process" in n for n in c.notes) and any("half-written" in n for n in c.notes)
    # the lock file names the trainer (a resume that is starting: status.json still says stopped)
    starting = make_run(tmp_path, "starting", {"epochs": 5}, {"status": "stopped", "updated": T0}, (started(),))
    (starting / "trainer.lock").write_text(f"{me}\n")
    assert load_run(starting).status == "live"
    # a finished run's lock file with a pid that happens to be alive again is not a trainer
    done = finished_run(tmp_path, "done")
    (done / "trainer.lock").write_text(f"{me}\n")
    os.utime(done / "trainer.lock", (T0, T0))
    assert load_run(done).status == "finished"


def test_missing_and_damaged_files_give_a_record_with_notes(tmp_path):
    no_status = make_run(tmp_path, "no-status", {"dataset": "iris", "epochs": 2},
                         None, (started(), step(1), epoch(1), epoch(2),
                                ev("finished", 30, test_accuracy=0.8, epochs=2, train_seconds=3.0)))
    r = load_run(no_status)
    assert r.status == "finished" and r.dataset == "iris" and r.test_accuracy == 0.8
    assert r.best_val_loss == 0.5 and r.best_val_accuracy == 0.52  # found among the epoch events
    assert r.notes == ["status.json is missing"]

    no_config = make_run(tmp_path, "no-config", None, {"status": "finished", "epoch": 1}, (started(),))
    r = load_run(no_config)
    assert r.config == {"batch_size": 10} and "config.json is missing" in r.notes

    damaged = make_run(tmp_path, "damaged", None, None, ())
    (damaged / "config.json").write_text("{not json")
    (damaged / "status.json").write_text("[1, 2]")
    r = load_run(damaged)
    assert r.status == "unknown"
    assert "config.json is damaged (not JSON)" in r.notes and "status.json is damaged (not a JSON object)" in r.notes
    assert "metrics.jsonl is missing" in r.notes

    empty = make_run(tmp_path, "empty", {"epochs": 1}, {"status": "finished"}, ())
    (empty / "metrics.jsonl").write_text("")
    r = load_run(empty)
    assert r.status == "finished" and r.params is None

    old = make_run(tmp_path, "old", {"epochs": 1}, {"status": "finished"}, (started(v=0),))
    assert any("protocol version 0" in n for n in load_run(old).notes)


def test_load_runs_newest_first_by_name_filter_sort_limit(tmp_path):
    for i, (name, lr, dropout) in enumerate((("a", 0.1, 0.0), ("b", 0.01, 0.3), ("c", 0.001, 0.0))):
        finished_run(tmp_path, name, lr=lr, dropout=dropout, seed=i)
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "stray.txt").write_text("x")
    assert [r.name for r in load_runs(tmp_path)] == ["c", "b", "a"]
    assert [r.name for r in load_runs(tmp_path, ["b", str(tmp_path / "a"), "b"])] == ["b", "a"]
    assert [r.name for r in load_runs(tmp_path, filter="lr<0.05")] == ["c", "b"]
    assert [r.name for r in load_runs(tmp_path, sort="-lr", limit=2)] == ["a", "b"]
    assert [r.name for r in load_runs(tmp_path, sort="dropout")] == ["c", "a", "b"]  # ties keep their order
    with pytest.raises(ConfigError, match="no run 'zzz'"):
        load_runs(tmp_path, ["zzz"])
    with pytest.raises(ConfigError, match="no run 'not-a-run'"):
        load_runs(tmp_path, ["not-a-run"])
    with pytest.raises(ConfigError, match="unknown sort key"):
        load_runs(tmp_path, sort="-nope")
    assert load_runs(tmp_path / "missing") == []


def test_load_runs_default_folder_is_the_environments(tmp_path, monkeypatch):
    finished_run(tmp_path / "elsewhere", "x")
    monkeypatch.setenv("TUINET_RUNS_DIR", str(tmp_path / "elsewhere"))
    assert [r.name for r in load_runs()] == ["x"]


# --- filters, sorting, the diff -------------------------------------------------------------------------------------


def rec(_name: str, status: str = "finished", **config) -> RunRecord:
    return RunRecord(name=_name, path=Path(_name), status=status, dataset=config.get("dataset"),
                     model=config.get("model"), best_val_accuracy=config.pop("acc", None), config=config)


def names(records) -> list[str]:
    return [r.name for r in records]


RECS = [rec("a", lr=0.1, model="CNN-small", dataset="mnist", dropout=0.0, acc=0.9, nesterov=True),
        rec("b", status="live", lr=0.01, model="mlp", dataset="mnist", dropout=0.3, acc=0.95),
        rec("c", lr=0.001, model="cnn", dataset="iris", acc=None)]


@pytest.mark.parametrize("expr, want", [
    ("lr<0.05", ["b", "c"]),
    ("lr<=0.01", ["b", "c"]),
    ("lr>1e-2", ["a"]),
    ("lr=1e-2", ["b"]),
    ("lr>=0.01, dataset=mnist", ["a", "b"]),
    ("model~cnn", ["a", "c"]),
    ("model~CNN and dataset != iris", ["a"]),
    ("status=live", ["b"]),
    ("dataset=MNIST", ["a", "b"]),
    ("dropout=none", ["c"]),
    ("dropout!=0", ["b", "c"]),
    ("best_val_accuracy>0.92", ["b"]),
    ("nesterov=true", ["a"]),
    ("model='mlp'", ["b"]),
    ("name>a", ["b", "c"]),
    ("lr<abc", []),
    ("", ["a", "b", "c"]),
])
def test_filters(expr, want):
    keep = parse_filter(expr)
    assert [r.name for r in RECS if keep(r)] == want


@pytest.mark.parametrize("expr, words", [
    ("lr", ["lr", "KEY OP VALUE"]),
    ("lr<<0.1", ["'<<'", "not an operator"]),
    ("lrr<0.1", ["unknown filter key 'lrr'", "did you mean lr"]),
    ("lr<0.1,,dropout=0", ["empty term"]),
    ("lr<", ["no value"]),
    ("model='cnn", ["quote"]),
])
def test_bad_filters_say_what_is_wrong(expr, words):
    with pytest.raises(ConfigError) as e:
        parse_filter(expr)
    assert "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_sorting_puts_missing_values_last_either_way():
    assert names(sort_runs(RECS, "lr")) == ["c", "b", "a"]
    assert names(sort_runs(RECS, "-lr")) == ["a", "b", "c"]
    assert names(sort_runs(RECS, "best_val_accuracy")) == ["a", "b", "c"]
    assert names(sort_runs(RECS, "-best_val_accuracy")) == ["b", "a", "c"]
    assert names(sort_runs(RECS, "dropout")) == ["a", "b", "c"]
    assert names(sort_runs(RECS, "-dropout")) == ["b", "a", "c"]
    assert names(sort_runs(RECS, "model")) == ["c", "a", "b"]  # text: case-insensitive
    with pytest.raises(ConfigError, match="unknown sort key"):
        sort_runs(RECS, "bogus")


def test_settings_diff():
    a = rec("a", dataset="mnist", lr=0.1, batch_size=64, betas=[0.9, 0.999], seed=0, name="a", runs_dir="x",
            extra=1)
    b = rec("b", dataset="mnist", lr=0.01, batch_size=64.0, betas=(0.9, 0.999), seed=1, name="b", runs_dir="y",
            parent={"run": "a", "epoch": 1, "step": 10})
    assert settings_diff([a, b]) == [("lr", [0.1, 0.01]), ("seed", [0, 1]), ("extra", [1, None]),
                                     ("parent", [None, {"run": "a", "epoch": 1, "step": 10}])]
    assert settings_diff([a]) == [] and settings_diff([]) == []
    assert settings_diff([a, a]) == []
    keys = [k for k, _ in settings_diff([rec("x", **{k: 1 for k in SETTINGS}), rec("y", **{k: 2 for k in SETTINGS})])]
    assert keys == list(SETTINGS)


# --- the benchmark's runs folder --------------------------------------------------------------------------------------


def test_benchmark_fixture_makes_readable_runs(tmp_path):
    from benchmarks.compare_runs import make_runs

    root = make_runs(tmp_path / "runs", n=12, epochs=3, steps_per_epoch=50)
    records = load_runs(root)
    assert len(records) == 12
    by_status = {r.status for r in records}
    assert by_status == {"finished", "stopped", "crashed"}
    for r in records:
        assert r.params and r.dataset == "mnist" and r.epochs_planned == 3
        reader = CurveReader(r.metrics_path)
        reader.poll()
        assert reader.notes == []
        assert len(reader.curve("train_loss")) >= 2 and len(reader.curve("val_loss")) == r.epochs_done
        if r.status == "finished":
            assert r.test_accuracy is not None and r.samples_per_second is not None
