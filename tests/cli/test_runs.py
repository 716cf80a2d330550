"""`tuinet runs`, `eval`, `predict`, `plot` and `export` on real (small) runs, through click's CliRunner."""

from __future__ import annotations

import csv
import io
import json
import os
import re

import numpy as np
import pytest
from tests.cli.conftest import assert_clean_error, invoke
from tuinet.cli import main
from tuinet.data import load_dataset
from tuinet.engine.checkpoint import load_checkpoint
from tuinet.training.config import TrainConfig
from tuinet.training.rundir import RunDir
from tuinet.training.trainer import Trainer

ANSI = re.compile(r"\x1b\[")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished runs: an MLP on an MNIST subset and a small net on iris."""
    root = tmp_path_factory.mktemp("runs")
    for kw in (dict(name="digits", dataset="mnist", limit=1000, model="32", epochs=2, log_every=4),
               dict(name="flowers", dataset="iris", model="16", epochs=30, lr=0.02, batch_size=16, log_every=2)):
        final = Trainer(TrainConfig(runs_dir=str(root), seed=1, **kw)).run()
        assert final["event"] == "finished", final
    return root


# --- runs ----------------------------------------------------------------------------------------------------------


def test_runs_table_and_json(runs):
    r = invoke("runs", "--runs-dir", runs)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "DATASET", "MODEL", "EPOCHS", "BEST", "VAL", "ACC", "BEST", "VAL",
                                "LOSS", "TEST@BEST", "TEST@LAST", "TRAIN", "TIME"]
    # newest first: flowers was trained after digits
    assert lines[1].split()[:5] == ["flowers", "finished", "iris", "16", "30/30"]
    assert lines[2].split()[:5] == ["digits", "finished", "mnist", "32", "2/2"]
    j = json.loads(invoke("runs", "--runs-dir", runs, "--json").output)
    assert [s["name"] for s in j] == ["flowers", "digits"]
    st = RunDir(runs / "digits").read_json("status.json")
    assert j[1]["test_accuracy"] == st["test_accuracy"] and j[1]["live"] is False
    assert f"{st['test_accuracy'] * 100:.2f}%" in lines[2]


def test_runs_marks_live_and_crashed(tmp_path):
    for name, pid in (("alive", os.getpid()), ("gone", 2**22 + 12345)):
        rd = RunDir(tmp_path / name)
        rd.write_json("config.json", {"dataset": "iris", "model": "16", "epochs": 5})
        rd.update_status(name=name, status="running", pid=pid, epoch=1, epochs=5, started=1.0)
    j = {s["name"]: s for s in json.loads(invoke("runs", "--runs-dir", tmp_path, "--json").output)}
    assert j["alive"]["live"] is True and j["alive"]["status"] == "running"
    assert j["gone"]["live"] is False and j["gone"]["status"] == "crashed"
    out = invoke("runs", "--runs-dir", tmp_path).output
    assert re.search(r"^\*\s+alive\s+running", out, re.M) and "* live" in out
    assert re.search(r"^\s+gone\s+crashed", out, re.M)


def test_runs_empty_folder(tmp_path):
    r = invoke("runs", "--runs-dir", tmp_path / "none")
    assert r.exit_code == 0 and "no runs" in r.output


# --- eval ----------------------------------------------------------------------------------------------------------


def test_eval_matches_the_trainers_test_result(runs):
    r = invoke("eval", "digits", "--runs-dir", runs, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    st = RunDir(runs / "digits").read_json("status.json")
    assert res["test_accuracy"] == pytest.approx(st["test_accuracy"], abs=1e-12)
    assert res["test_loss"] == pytest.approx(st["test_loss"], rel=1e-5)
    cm = np.array(res["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == res["samples"] == 1000
    assert np.trace(cm) / cm.sum() == pytest.approx(res["test_accuracy"])
    for i, c in enumerate(res["per_class"]):
        assert c["samples"] == cm[i].sum() and c["correct"] == cm[i, i]
        assert c["accuracy"] == pytest.approx(cm[i, i] / cm[i].sum())


def test_eval_text_report_and_checkpoint_path_and_best(runs):
    r = invoke("eval", runs / "flowers" / "latest.npz")
    assert r.exit_code == 0, r.output
    assert "test loss" in r.output and "per-class accuracy" in r.output and "confusion matrix" in r.output
    for name in ("setosa", "versicolor", "virginica"):
        assert name in r.output
    best = invoke("eval", "flowers", "--runs-dir", runs, "--best")
    assert best.exit_code == 0 and "best.npz" in best.output


def test_eval_text_shows_classes_named_by_their_index_once(runs):
    from tuinet.cli.runs import format_eval

    r = invoke("eval", runs / "digits" / "latest.npz")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    head = lines.index("per-class accuracy") + 1
    assert lines[head].split() == ["#", "samples", "correct", "accuracy"]  # MNIST's classes are "0".."9"
    assert lines[head + 1].split()[0] == "0" and len(lines[head + 1].split()) == 4
    cm_head = lines.index("confusion matrix (rows: true class, columns: predicted class)") + 1
    assert lines[cm_head].split() == [str(j) for j in range(10)]
    for row in lines[cm_head + 1:cm_head + 11]:
        assert len(row.split()) == 11 and len(row) == len(lines[cm_head])  # the index, then the columns, aligned
    # named classes keep their names, one column, and the matrix stays aligned under its header
    rep = {"checkpoint": "x.npz", "dataset": "d", "samples": 4, "test_loss": 0.1, "test_accuracy": 0.5,
           "class_names": ["cat", "dog"], "confusion_matrix": [[1, 1], [1, 1]],
           "per_class": [{"class": "cat", "samples": 2, "correct": 1, "accuracy": 0.5},
                         {"class": "dog", "samples": 2, "correct": 1, "accuracy": 0.5}]}
    text = format_eval(rep).splitlines()
    assert text[text.index("per-class accuracy") + 1].split() == ["#", "class", "samples", "correct", "accuracy"]
    i = text.index("confusion matrix (rows: true class, columns: predicted class)")
    assert text[i + 2].split() == ["0", "cat", "1", "1"] and len(text[i + 2]) == len(text[i + 1])


def test_eval_applies_the_saved_normalizer(runs, tmp_path):
    """A checkpoint whose saved normalizer is changed gives different results: eval does use it."""
    from tuinet.engine.checkpoint import save_checkpoint

    ck = load_checkpoint(runs / "flowers" / "latest.npz")
    extra = json.loads(json.dumps(ck.extra))
    extra["dataset"]["normalizer"]["shift"] = [v + 3.0 for v in extra["dataset"]["normalizer"]["shift"]]
    save_checkpoint(tmp_path / "shifted.npz", ck.build_model(), extra=extra)
    a = json.loads(invoke("eval", runs / "flowers" / "latest.npz", "--json").output)
    b = json.loads(invoke("eval", tmp_path / "shifted.npz", "--json").output)
    assert a["test_loss"] != pytest.approx(b["test_loss"])


def test_eval_errors(runs, tmp_path):
    assert_clean_error(invoke("eval", "nothing-here", "--runs-dir", runs), "nothing-here")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert_clean_error(invoke("eval", tmp_path / "junk.npz"), "junk.npz")
    assert_clean_error(invoke("eval", runs / "flowers" / "latest.npz", "--best"), "--best")


# --- predict -------------------------------------------------------------------------------------------------------


def test_predict_images_equals_model_on_test_samples(runs, tmp_path):
    from PIL import Image

    raw = load_dataset("mnist", limit=1000, seed=1, normalize="none")
    ck = load_checkpoint(runs / "digits" / "latest.npz")
    model = ck.build_model()
    from tuinet.data import Normalizer

    norm = Normalizer.from_dict(ck.extra["dataset"]["normalizer"])
    files = []
    for i in range(3):
        p = tmp_path / f"d{i}.png"
        Image.fromarray(raw.x_test[i, :, :, 0].astype(np.uint8), mode="L").save(p)
        files.append(p)
    # an RGB JPEG of another size is converted to gray and resized
    big = np.kron(raw.x_test[3, :, :, 0], np.ones((2, 2))).astype(np.uint8)
    Image.fromarray(np.stack([big] * 3, axis=-1), mode="RGB").save(tmp_path / "big.jpg", quality=95)
    probs = model.predict_proba(norm.transform(raw.x_test[:4]))
    r = invoke("predict", runs / "digits" / "latest.npz", *files, tmp_path / "big.jpg", "--json", "--top-k", "3")
    assert r.exit_code == 0, r.output
    out = [json.loads(line) for line in r.output.splitlines()]
    assert [o["input"] for o in out] == ["d0.png", "d1.png", "d2.png", "big.jpg"]
    for i, o in enumerate(out[:3]):
        top = o["predictions"]
        assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
        assert top[0]["index"] == int(probs[i].argmax())
        assert top[0]["probability"] == pytest.approx(float(probs[i].max()), abs=1e-5)
        assert top[0]["class"] == ck.extra["dataset"]["class_names"][top[0]["index"]]
    text = invoke("predict", "digits", files[0], "--runs-dir", runs)
    assert text.exit_code == 0 and text.output.startswith("d0.png")
    assert re.search(r"d0\.png\s+\S+ \d+\.\d\d%$", text.output.strip())


def test_predict_fit_stretches_with_a_note_or_pads(runs, tmp_path):
    from PIL import Image

    from tuinet.data import Normalizer
    from tuinet.data.inputs import load_inputs

    raw = load_dataset("mnist", limit=1000, seed=1, normalize="none")
    wide = np.zeros((28, 56), np.uint8)  # a digit with as much empty paper again beside it
    wide[:, :28] = raw.x_test[0, :, :, 0].astype(np.uint8)
    Image.fromarray(wide, mode="L").save(tmp_path / "wide.png")
    ck = load_checkpoint(runs / "digits" / "latest.npz")
    norm = Normalizer.from_dict(ck.extra["dataset"]["normalizer"])
    for fit in ("stretch", "pad", "digit"):
        r = invoke("predict", runs / "digits" / "latest.npz", tmp_path / "wide.png", "--json", "--fit", fit)
        assert r.exit_code == 0, r.output
        if fit == "stretch":  # the default says what it did, on stderr: the JSON on stdout stays parseable
            assert r.stderr.startswith("note: wide.png is 56x28") and "--fit pad" in r.stderr
        else:
            assert r.stderr == ""
        x, _ = load_inputs((str(tmp_path / "wide.png"),), (28, 28, 1), None, fit=fit)
        p = ck.build_model().predict_proba(norm.transform(x))[0]
        (top,) = json.loads(r.stdout)["predictions"]
        assert top["index"] == int(p.argmax()) and top["probability"] == pytest.approx(float(p.max()), abs=1e-5)
    assert invoke("predict", runs / "digits", tmp_path / "wide.png", "--fit", "crop").exit_code == 2
    Image.fromarray(np.full((30, 40), 90, np.uint8), mode="L").save(tmp_path / "blank.png")
    assert_clean_error(invoke("predict", runs / "digits", tmp_path / "blank.png", "--fit", "digit"), "blank.png",
                       "no digit")


def test_predict_csv_rows_by_feature_name(runs, tmp_path):
    raw = load_dataset("iris", seed=1, normalize="none")
    ck = load_checkpoint(runs / "flowers" / "latest.npz")
    names = ck.extra["dataset"]["feature_names"]
    from tuinet.data import Normalizer

    probs = ck.build_model().predict_proba(Normalizer.from_dict(ck.extra["dataset"]["normalizer"])
                                           .transform(raw.x_test[:5]))
    # columns shuffled and the label column kept: picked by name
    order = [2, 0, 3, 1]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["species"] + [names[i] for i in order])
    for x in raw.x_test[:5]:
        w.writerow(["?"] + [repr(float(x[i])) for i in order])
    (tmp_path / "rows.csv").write_text(buf.getvalue())
    r = invoke("predict", runs / "flowers", tmp_path / "rows.csv", "--json")
    assert r.exit_code == 0, r.output
    out = [json.loads(line) for line in r.output.splitlines()]
    assert [o["input"] for o in out] == [f"rows.csv:{i}" for i in range(2, 7)]
    for o, p in zip(out, probs):
        assert o["predictions"][0]["index"] == int(p.argmax())
        assert o["predictions"][0]["probability"] == pytest.approx(float(p.max()), abs=1e-5)
    # headerless rows in the trained order also work
    (tmp_path / "plain.csv").write_text("\n".join(",".join(str(float(v)) for v in x) for x in raw.x_test[:2]))
    r2 = invoke("predict", runs / "flowers", tmp_path / "plain.csv", "-k", "2")
    assert r2.exit_code == 0 and len(r2.output.splitlines()) == 2


def test_predict_errors(runs, tmp_path):
    ck = runs / "flowers" / "latest.npz"
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    assert_clean_error(invoke("predict", ck, tmp_path / "bad.csv"), "bad.csv", "sepal_length_cm")
    (tmp_path / "short.csv").write_text("1,2,3\n")
    assert_clean_error(invoke("predict", ck, tmp_path / "short.csv"), "short.csv", "3 values", "4 features")
    (tmp_path / "x.png").write_bytes(b"\x89PNG broken")
    assert_clean_error(invoke("predict", runs / "digits" / "latest.npz", tmp_path / "x.png"), "x.png")
    assert_clean_error(invoke("predict", ck, tmp_path / "x.png"), "x.png", "not images")
    assert_clean_error(invoke("predict", ck, tmp_path / "missing.csv"), "missing.csv", "no such file")
    (tmp_path / "notes.doc").write_text("hi")
    assert_clean_error(invoke("predict", ck, tmp_path / "notes.doc"), "unknown file type")


# --- plot and export -------------------------------------------------------------------------------------------


def test_plot_draws_loss_and_accuracy(runs):
    r = invoke("plot", "digits", "--runs-dir", runs, "--width", "70", "--height", "12", "--no-color")
    assert r.exit_code == 0, r.output
    assert "loss" in r.output and "accuracy" in r.output and "epoch" in r.output
    assert "train (per step)" in r.output and "validation (per epoch)" in r.output
    assert not ANSI.search(r.output)
    assert max(len(line) for line in r.output.splitlines()) <= 70
    # printed into a pipe (as here) the charts keep the height asked: plotext fitted them into an 80x24 terminal
    assert len(r.output.splitlines()) >= 2 * 12, r.output
    # each legend sits in a right-hand corner, away from where its curves end (not over the first epoch)
    legend_rows = [line for line in r.output.splitlines() if "train (per step)" in line]
    assert len(legend_rows) == 2 and all(line.index("train (per step)") > 70 // 2 for line in legend_rows), r.output
    colored = invoke("plot", "digits", "--runs-dir", runs, "--width", "70", "--color")
    assert ANSI.search(colored.output)


def test_plot_errors(runs, tmp_path):
    assert_clean_error(invoke("plot", "nope", "--runs-dir", runs), "nope")
    rd = RunDir(tmp_path / "empty")
    rd.write_json("config.json", {"dataset": "iris"})
    assert_clean_error(invoke("plot", tmp_path / "empty"), "no metrics")


def test_export_csv_one_row_per_metric_event(runs, tmp_path):
    events = list(RunDir(runs / "digits").events())
    n = sum(e["event"] in ("step", "epoch", "validation") for e in events)
    r = invoke("export", "digits", "--runs-dir", runs)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert len(rows) == n and {row["event"] for row in rows} == {"step", "epoch"}
    epochs = [row for row in rows if row["event"] == "epoch"]
    ev_epochs = [e for e in events if e["event"] == "epoch"]
    assert [float(row["val_loss"]) for row in epochs] == pytest.approx([e["val_loss"] for e in ev_epochs])
    steps = [int(row["step"]) for row in rows]
    assert steps == sorted(steps)
    out = tmp_path / "m.csv"
    r2 = invoke("export", runs / "digits", "-o", out)
    assert r2.exit_code == 0 and out.read_text() == r.output


def test_export_keeps_the_later_copy_of_a_repeated_step(tmp_path):
    """After a crash, a resumed run writes steps past its last checkpoint again; the newer values win."""
    rd = RunDir(tmp_path / "r")
    rd.write_json("config.json", {})
    for loss in (1.0, 0.5):
        rd.append_event({"event": "step", "step": 10, "epoch": 0.5, "loss": loss})
    rd.append_event({"event": "epoch", "step": 20, "epoch": 1, "train_loss": 0.4, "val_loss": 0.3})
    rd.close()
    rows = list(csv.DictReader(io.StringIO(invoke("export", rd.path).output)))
    assert [(r["event"], r["loss"] or r["val_loss"]) for r in rows] == [("step", "0.5"), ("epoch", "0.3")]


def test_every_command_has_help_with_defaults():
    for cmd in ("runs", "eval", "predict", "plot", "export"):
        r = invoke(cmd, "--help")
        assert r.exit_code == 0
        opts = main.commands[cmd].params
        for p in opts:
            if p.param_type_name == "option" and p.name != "help":
                assert p.help, f"{cmd} --{p.name} has no help"
                assert "default" in p.help.lower() or p.show_default, f"{cmd} --{p.name} does not state its default"
