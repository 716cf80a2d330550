"""One clear line for every error a user can cause, in every command: `Error: ...` naming the file, option or layer,
a non-zero exit, no traceback, and no run folder left behind by a `train` that could not start."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from tests.cli.conftest import assert_clean_error, invoke
from tuinet.training.rundir import RunDir

IRIS = ["--dataset", "iris", "--model", "8", "--batch-size", "16", "--epochs", "1"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUINET_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A finished iris run (one epoch): its folder."""
    runs = tmp_path_factory.mktemp("runs")
    r = invoke("train", *IRIS, "--headless", "--runs-dir", runs, "--name", "base")
    assert r.exit_code == 0, r.output
    return runs / "base"


def _craft(src, dst, meta_change=None, array_change=None):
    """Copy checkpoint ``src`` to ``dst`` with its JSON record and/or arrays changed."""
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["tuinet.json"]))
    if meta_change:
        meta_change(meta)
    if array_change:
        array_change(arrays)
    arrays["tuinet.json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(dst, **arrays)
    return dst


def _set(*path_and_value):
    *path, value = path_and_value

    def change(meta):
        d = meta
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value

    return change


def _run_folders(runs_dir):
    return sorted(p.name for p in runs_dir.iterdir()) if runs_dir.exists() else []


# --- train: errors before training starts are one line, and leave no run folder ----------------------------------

def _bad_data(tmp_path, kind):
    if kind == "not-a-zip":
        p = tmp_path / "bad.npz"
        p.write_bytes(b"PK\x03\x04 not a zip at all")
    elif kind == "fifo":
        p = tmp_path / "pipe.csv"
        os.mkfifo(p)
    elif kind == "all-infinite":
        p = tmp_path / "inf.csv"
        p.write_text("a,b,label\n" + "".join(f"inf,{i},{i % 2}\n" for i in range(20)))
    elif kind == "text-classes":
        p = tmp_path / "names.csv"
        p.write_text("a,label\n" + "".join(f"{i},n{i}\n" for i in range(2000)))
    else:  # "missing"
        p = tmp_path / "nope.csv"
    return p


@pytest.mark.parametrize("kind, words", [
    ("not-a-zip", ["bad.npz", "not a readable .npz file"]),
    ("fifo", ["pipe.csv", "not a regular file"]),
    ("all-infinite", ["inf.csv", "every one of the 20 rows", "out-of-float32-range"]),
    ("text-classes", ["names.csv", "distinct text values"]),
    ("missing", ["nope.csv", "no such file"]),
])
def test_train_data_errors_are_one_line_with_no_run_folder(tmp_path, kind, words):
    data = _bad_data(tmp_path, kind)
    runs = tmp_path / "runs"
    r = invoke("train", "--dataset", data, "--model", "8", "--epochs", "1", "--headless", "--runs-dir", runs)
    assert_clean_error(r, *words)
    assert "training failed" not in r.output
    assert _run_folders(runs) == []


@pytest.mark.parametrize("model, words", [
    ("99999999999", ["model '99999999999'", "too large to fit in memory"]),
    ("8a", ["'8a'"]),
    ("lenet", ["Conv2D", "(4,)"]),
])
def test_train_model_errors_are_one_line_with_no_run_folder(tmp_path, model, words):
    runs = tmp_path / "runs"
    r = invoke("train", "--dataset", "iris", "--model", model, "--epochs", "1", "--headless", "--runs-dir", runs)
    assert_clean_error(r, *words)
    assert _run_folders(runs) == []


@pytest.mark.parametrize("detach", [False, True])
def test_train_onto_a_dangling_symlink_name(tmp_path, detach):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "dangle").symlink_to(tmp_path / "nowhere")
    r = invoke("train", *IRIS, "--name", "dangle", "--runs-dir", runs, "--detach" if detach else "--headless")
    assert_clean_error(r, "dangle", "already exists")
    assert _run_folders(runs) == ["dangle"] and not (tmp_path / "nowhere").exists()


def test_detach_with_bad_data_is_one_line_before_any_folder(tmp_path):
    runs = tmp_path / "runs"
    r = invoke("train", "--dataset", tmp_path / "nope.csv", "--detach", "--runs-dir", runs)
    assert_clean_error(r, "nope.csv")
    assert _run_folders(runs) == []


@pytest.mark.parametrize("args, words", [
    (["--l2", "nan"], ["option --l2", "finite"]),
    (["--l1", "inf"], ["option --l1", "finite"]),
    (["--seed", "-1"], ["option --seed", "whole number"]),
    (["--lr", "1e39"], ["option --lr", "infinite in float32"]),
    (["--gamma", "nan"], ["option --gamma", "finite"]),
    (["--clip-grad", "inf"], ["option --clip-grad"]),
    (["--init-gain", "0"], ["option --init-gain", "> 0"]),
    (["--init-gain", "nan"], ["option --init-gain"]),
    (["--momentum", "-inf"], ["option --momentum"]),
    (["--dropout", "nan"], ["option --dropout"]),
    (["--augment", "blur"], ["option --augment: unknown augmentation 'blur'; choose from shift=N"]),
    (["--augment", "rotate=200"], ["option --augment: augmentation 'rotate' must be from 0 to 180"]),
    (["--augment", "shift=1"], ["--augment shift: works on pictures, and iris's samples are rows of 4 values"]),
])
def test_numeric_options_range_checked(tmp_path, args, words):
    r = invoke("train", *IRIS, *args, "--headless", "--runs-dir", tmp_path / "runs")
    assert_clean_error(r, *words)
    assert _run_folders(tmp_path / "runs") == []


def test_config_that_is_a_device_or_a_fifo(tmp_path):
    assert_clean_error(invoke("train", "--config", "/dev/zero", "--headless"), "/dev/zero", "not a regular file")
    fifo = tmp_path / "exp.toml"
    os.mkfifo(fifo)
    assert_clean_error(invoke("train", "--config", fifo, "--headless"), "exp.toml", "not a regular file")


def test_training_on_a_table_with_infinite_values_learns(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["a,b,label"]
    for i in range(300):
        a, b = rng.normal(size=2)
        rows.append(f"{a:.4f},{b:.4f},{int(a + b > 0)}")
    rows[5], rows[9], rows[11] = "inf,1,0", "1e400,0,1", "0.5,1e39,1"
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    r = invoke("train", "--dataset", tmp_path / "t.csv", "--model", "8", "--epochs", "5", "--lr", "0.05",
               "--headless", "--json", "--runs-dir", tmp_path / "runs")
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.output.splitlines()]
    notes = [e["message"] for e in events if e["event"] == "log"]
    assert any("dropped 3 of 300 rows" in m and "a (2)" in m and "b (1)" in m for m in notes), notes
    epochs = [e for e in events if e["event"] == "epoch"]
    assert all(np.isfinite(e["val_loss"]) for e in epochs) and epochs[-1]["val_accuracy"] > 0.8
    assert not any(e["event"] == "diverged" for e in events)
    # the note is in the run's log too
    assert "dropped 3 of 300 rows" in (tmp_path / "runs" / os.listdir(tmp_path / "runs")[0] / "log.txt").read_text()


def test_confusion_event_stays_small_with_many_classes(tmp_path):
    rng = np.random.default_rng(0)
    k = 40
    rows = ["a,b,label"] + [f"{rng.normal():.3f},{rng.normal():.3f},c{i % k}" for i in range(400)]
    (tmp_path / "many.csv").write_text("\n".join(rows) + "\n")
    r = invoke("train", "--dataset", tmp_path / "many.csv", "--model", "8", "--epochs", "1", "--headless",
               "--runs-dir", tmp_path / "runs", "--name", "many")
    assert r.exit_code == 0, r.output
    conf = [e for e in RunDir(tmp_path / "runs" / "many").events() if e["event"] == "confusion"]
    assert conf and len(conf[0]["matrix"]) == 30 and conf[0]["num_classes"] == k and conf[0]["truncated"]


# --- eval, predict, resume: crafted checkpoints ------------------------------------------------------------------

def _nan_weight(a):
    a["model/dense_0.W"][0, 0] = np.nan


def _inf_bias(a):
    a["model/dense_2.b"][0] = np.inf


def _float64_beyond_float32(a):
    a["model/dense_0.W"] = a["model/dense_0.W"].astype(np.float64) * 1e300


CRAFTED = {
    "version_text": (_set("version", "x"), None, ["invalid checkpoint version 'x'"]),
    "version_list": (_set("version", [1]), None, ["invalid checkpoint version"]),
    "version_future": (_set("version", 99), None, ["version 99 is newer"]),
    "layers_text": (_set("model", "layers", "abc"), None, ["layers must be a non-empty list"]),
    "layers_ints": (_set("model", "layers", [1, 2]), None, ["layers must be a non-empty list"]),
    "layer_type": (_set("model", "layers", 0, "type", "Bogus"), None, ["unknown layer type 'Bogus'"]),
    "layer_units": (_set("model", "layers", 0, "units", -5), None, ["Dense needs at least 1 unit"]),
    "huge_units": (_set("model", "layers", 0, "units", 10**12), None, ["layer 1 (Dense)", "would need"]),
    "huge_input": (_set("model", "input_shape", [10**9, 10**9]), None, ["input shape", "too large"]),
    "input_text": (_set("model", "input_shape", "abc"), None, ["invalid model input shape"]),
    "model_list": (_set("model", [1]), None, ["invalid model description"]),
    "extra_list": (_set("extra", [1]), None, ["invalid extra record"]),
    "dataset_list": (_set("extra", "dataset", [1]), None, ["invalid dataset record"]),
    "class_names": (_set("extra", "dataset", "class_names", 5), None, ["class_names must be a list"]),
    "feature_names": (_set("extra", "dataset", "feature_names", 5), None, ["feature_names must be a list"]),
    "normalizer_kind": (_set("extra", "dataset", "normalizer", "kind", "bogus"), None, ["invalid normalizer"]),
    "normalizer_text": (_set("extra", "dataset", "normalizer", "shift", "abc"), None, ["invalid normalizer"]),
    "normalizer_nan": (_set("extra", "dataset", "normalizer", "scale", [float("nan")] * 4), None,
                       ["invalid normalizer", "NaN"]),
    "normalizer_width": (_set("extra", "dataset", "normalizer", "shift", [0.0] * 7), None, ["invalid normalizer"]),
    "nan_weight": (None, _nan_weight, ["weight dense_0.W", "NaN, infinite"]),
    "inf_bias": (None, _inf_bias, ["weight dense_2.b", "NaN, infinite"]),
    "float64_1e300": (None, _float64_beyond_float32, ["weight dense_0.W", "NaN, infinite"]),
}


@pytest.fixture
def predict_rows(tmp_path):
    p = tmp_path / "rows.csv"
    p.write_text("sepal_length_cm,sepal_width_cm,petal_length_cm,petal_width_cm\n5.1,3.5,1.4,0.2\n")
    return p


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_checkpoint_is_one_line_in_eval_and_predict(base_run, tmp_path, predict_rows, case):
    meta_change, array_change, words = CRAFTED[case]
    ck = _craft(base_run / "latest.npz", tmp_path / f"{case}.npz", meta_change, array_change)
    assert_clean_error(invoke("eval", ck), f"{case}.npz", *words)
    assert_clean_error(invoke("predict", ck, predict_rows), f"{case}.npz", *words)


def test_crafted_saved_configuration_in_eval(base_run, tmp_path):
    ck = _craft(base_run / "latest.npz", tmp_path / "cfg.npz", _set("extra", "config", "seed", "x"))
    assert_clean_error(invoke("eval", ck), "cfg.npz", "invalid saved training configuration", "'seed'")


@pytest.mark.parametrize("detach", [False, True])
def test_resume_refuses_non_finite_weights(base_run, tmp_path, detach):
    runs = tmp_path / "runs"
    r = invoke("train", *IRIS, "--headless", "--runs-dir", runs, "--name", "r")
    assert r.exit_code == 0, r.output
    _craft(runs / "r" / "latest.npz", runs / "r" / "latest.npz", array_change=_nan_weight)
    before = (runs / "r" / "status.json").read_text()
    r = invoke("resume", "r", "--runs-dir", runs, "--detach" if detach else "--headless")
    assert_clean_error(r, "latest.npz", "weight dense_0.W", "NaN")
    assert (runs / "r" / "status.json").read_text() == before


def test_resume_refuses_non_finite_optimizer_state(tmp_path):
    runs = tmp_path / "runs"
    assert invoke("train", *IRIS, "--headless", "--runs-dir", runs, "--name", "r").exit_code == 0

    def nan_state(a):
        key = next(k for k in a if k.startswith("optim/"))
        a[key].reshape(-1)[0] = np.inf

    _craft(runs / "r" / "latest.npz", runs / "r" / "latest.npz", array_change=nan_state)
    assert_clean_error(invoke("resume", "r", "--runs-dir", runs, "--headless"), "optimizer state", "infinite")


def test_predict_input_fifo_is_one_line(base_run, tmp_path):
    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    out = []
    t = threading.Thread(target=lambda: out.append(invoke("predict", base_run / "latest.npz", fifo)))
    t.start()
    t.join(30)
    assert out, "predict blocked on a FIFO"
    assert_clean_error(out[0], "rows.csv", "not a regular file")


# --- TUINET_THREAD_MODE, as the README documents it ----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["single", "blas", "numba"])
def test_thread_modes_in_eval_predict_and_bench(base_run, predict_rows, mode):
    env = {"TUINET_THREAD_MODE": mode}
    r = invoke("eval", base_run, "--json", env=env)
    assert r.exit_code == 0 and "test_accuracy" in json.loads(r.output), r.output
    r = invoke("predict", base_run / "latest.npz", predict_rows, env=env)
    assert r.exit_code == 0 and "rows.csv:2" in r.output, r.output
    r = invoke("bench", "--dataset", "iris", "--steps", "2", "--rounds", "1", "--no-torch", "--json", env=env)
    assert r.exit_code == 0 and json.loads(r.output), r.output
    assert os.environ.get("TUINET_THREADS") == "2"  # restored after the benchmark


def test_unknown_thread_mode_is_one_line(base_run, predict_rows):
    env = {"TUINET_THREAD_MODE": "turbo"}
    assert_clean_error(invoke("eval", base_run, env=env), "TUINET_THREAD_MODE", "turbo")
    assert_clean_error(invoke("predict", base_run / "latest.npz", predict_rows, env=env), "TUINET_THREAD_MODE")
    assert_clean_error(invoke("bench", "--steps", "2", "--rounds", "1", "--no-torch", env=env), "TUINET_THREAD_MODE")


def test_bad_thread_count_is_one_line(base_run, tmp_path):
    env = {"TUINET_THREADS": "abc"}
    assert_clean_error(invoke("eval", base_run, env=env), "TUINET_THREADS", "abc")
    r = invoke("train", *IRIS, "--headless", "--runs-dir", tmp_path / "runs", env=env)
    assert_clean_error(r, "TUINET_THREADS")
    assert _run_folders(tmp_path / "runs") == []


@pytest.mark.parametrize("args, option", [(["--rounds", "0"], "--rounds"), (["--steps", "-5"], "--steps"),
                                          (["--batch-size", "0"], "--batch-size")])
def test_bench_counts_range_checked(args, option):
    r = invoke("bench", "--no-torch", *args)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"Error: Invalid value for '{option}'" in r.output
