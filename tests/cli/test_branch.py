"""``tuinet train --from RUN[@EPOCH]``: a branched run from the command line, and its one-line errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from tests.cli.conftest import assert_clean_error, invoke

# every setting given: digits' own defaults (training/defaults.py) would change the steps the tests count
DIGITS = ("--dataset", "digits", "--model", "32", "--seed", "2", "--batch-size", "64", "--optimizer", "adam",
          "--lr", "0.001", "--schedule", "constant")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs folder holding ``p``: a finished 3-epoch digits run that kept every epoch's checkpoint."""
    runs = tmp_path_factory.mktemp("runs")
    r = invoke("train", *DIGITS, "--epochs", "3", "--headless", "--runs-dir", runs, "--name", "p")
    assert r.exit_code == 0, r.output
    return runs


def _craft(path, change):
    """Rewrite checkpoint ``path`` with its arrays and JSON record passed through ``change(arrays, meta)``."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays["tuinet.json"]))
    change(arrays, meta)
    arrays["tuinet.json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _folders(runs):
    return sorted(p.name for p in runs.iterdir() if p.is_dir())


def test_branch_headless_prints_the_branch_point_and_records_the_parent(runs):
    r = invoke("train", "--from", "p@1", "--lr", "0.0001", "--epochs", "4", "--headless", "--runs-dir", runs)
    assert r.exit_code == 0, r.output
    assert "branched from run p at epoch 1 (step 23, epoch-0001.npz)" in r.output
    assert "optimizer state carried" in r.output
    assert "epoch 2/4" in r.output and "epoch 1/4" not in r.output
    cfg = json.loads((runs / "p-from1" / "config.json").read_text())
    assert cfg["parent"]["run"] == "p" and cfg["parent"]["epoch"] == 1 and cfg["lr"] == 0.0001
    assert cfg["model"] == "32" and cfg["dataset"] == "digits"


def test_branch_json_started_event_carries_the_parent(runs):
    r = invoke("train", "--from", "p@best", "--optimizer", "sgd", "--epochs", "5", "--json", "--runs-dir", runs,
               "--name", "sgd-branch")
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    started = next(e for e in events if e["event"] == "started")
    assert started["parent"]["run"] == "p" and started["parent"]["checkpoint"] == "best.npz"
    assert started["parent"]["optimizer_state"] == "fresh" and started["optimizer"] == "sgd"
    assert started["epoch"] == started["parent"]["epoch"]
    assert events[-1]["event"] == "finished"


def test_a_plain_run_says_it_has_no_parent(runs):
    r = invoke("train", *DIGITS, "--epochs", "1", "--json", "--runs-dir", runs, "--name", "plain", "--keep-epochs", "0")
    started = next(json.loads(x) for x in r.output.splitlines() if '"started"' in x)
    assert started["parent"] is None and started["config"]["keep_epochs"] == 0
    assert not list((runs / "plain").glob("epoch-*.npz"))


@pytest.mark.parametrize("args, words", [
    (("--from", "nope@2"), ("no run 'nope'",)),
    (("--from", "p@7"), ("run p has no checkpoint for epoch 7", "it keeps epochs 1-3", "p@best")),
    (("--from", "p@2", "--model", "64"), ("--model 64 does not fit run p's checkpoint", "architecture")),
    (("--from", "p@2", "--seed", "9"), ("--seed cannot change on a branch", "parent's exact data split")),
    (("--from", "p@2", "--dataset", "iris"), ("--dataset cannot change on a branch",)),
    (("--from", "p@2", "--epochs", "2"), ("--epochs 2", "more than 2")),
    (("--from", "p"), ("its 3 planned epochs", "give --epochs more than 3")),
    (("--from", "p@2", "--lr", "-1"), ("--lr",)),
    (("--from", "p@2", "--keep-epochs", "-1"), ("--keep-epochs",)),
])
def test_branch_errors_are_one_line_and_leave_no_folder(runs, args, words):
    before = _folders(runs)
    assert_clean_error(invoke("train", *args, "--headless", "--runs-dir", runs), *words)
    assert _folders(runs) == before


def test_branch_refuses_non_finite_weights(runs):
    import shutil

    shutil.copytree(runs / "p", runs / "bad")
    (runs / "bad" / "trainer.lock").unlink()

    def nan(arrays, meta):
        key = next(k for k in arrays if k.startswith("model/"))
        arrays[key].reshape(-1)[0] = np.nan

    _craft(runs / "bad" / "epoch-0002.npz", nan)
    assert_clean_error(invoke("train", "--from", "bad@2", "--headless", "--runs-dir", runs), "epoch-0002.npz", "NaN")


def test_branch_from_mid_epoch_refuses_another_batch_size(runs):
    import shutil

    shutil.copytree(runs / "p", runs / "mid")

    def mid_epoch(arrays, meta):
        meta["extra"]["trainer"]["step_in_epoch"] = 5

    _craft(runs / "mid" / "latest.npz", mid_epoch)
    assert_clean_error(invoke("train", "--from", "mid", "--epochs", "5", "--batch-size", "32", "--headless",
                              "--runs-dir", runs), "--batch-size cannot change from the middle of an epoch", "mid@3")
    assert_clean_error(invoke("train", "--from", "mid@best", "--epochs", "5", "--headless", "--runs-dir", runs,
                              "--name", "p"),
                       "run 'p' already exists")


def test_branch_detached(runs):
    """--detach: the background trainer branches from the record in config.json."""
    from tuinet.training.rundir import RunDir

    r = invoke("train", "--from", "p@2", "--epochs", "4", "--detach", "--runs-dir", runs, "--name", "bg")
    assert r.exit_code == 0, r.output
    rd = RunDir(runs / "bg")
    deadline = time.monotonic() + 60
    while rd.read_json("status.json").get("status") != "finished" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rd.read_json("status.json")["status"] == "finished"
    started = next(e for e in rd.events() if e["event"] == "started")
    assert started["parent"]["run"] == "p" and started["epoch"] == 2


def test_branch_layers_a_config_file_between_the_parent_and_the_options(runs, tmp_path):
    toml = tmp_path / "b.toml"
    toml.write_text("[train]\nlr = 0.002\nl2 = 0.001\nepochs = 4\n")
    r = invoke("train", "--from", f"{runs / 'p'}@2", "--config", toml, "--lr", "0.0003", "--headless",
               "--runs-dir", runs, "--name", "layered")
    assert r.exit_code == 0, r.output
    cfg = json.loads((runs / "layered" / "config.json").read_text())
    assert (cfg["lr"], cfg["l2"], cfg["epochs"], cfg["model"]) == (0.0003, 0.001, 4, "32")
    toml.write_text('[train]\nparent = {run = "p", epoch = 2, step = 46, checkpoint = "epoch-0002.npz"}\n')
    assert_clean_error(invoke("train", "--from", "p@2", "--config", toml, "--headless", "--runs-dir", runs),
                       "b.toml", "'parent' is set by --from")
