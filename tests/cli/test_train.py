"""`tuinet train`/`resume` from the command line: headless output, config files, bad configs, signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.cli.conftest import assert_clean_error, invoke
from tuinet.engine.checkpoint import load_checkpoint
from tuinet.protocol import PICTURE_EVENTS
from tuinet.training.rundir import RunDir

IRIS = ["--dataset", "iris", "--model", "16", "--batch-size", "16", "--lr", "0.02"]
FINISHED_KEYS = {"test_accuracy", "test_loss", "epochs", "train_seconds", "samples_per_second", "run_dir"}


def test_json_lines_one_event_per_line_last_is_finished(tmp_path):
    r = invoke("train", *IRIS, "--epochs", "3", "--headless", "--json", "--runs-dir", tmp_path, "--name", "j")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(e, dict) and "event" in e and e["v"] == 1 for e in events)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and {"step", "epoch", "checkpoint_saved"} <= set(kinds)
    assert kinds.count("epoch") == 3
    last = events[-1]
    assert last["event"] == "finished" and FINISHED_KEYS <= last.keys()
    assert last["epochs"] == 3 and 0 <= last["test_accuracy"] <= 1 and last["run_dir"].endswith("j")
    # metrics.jsonl holds the same stream, minus the bulky picture events
    logged = [e["event"] for e in RunDir(tmp_path / "j").events()]
    assert logged == [k for k in kinds if k not in PICTURE_EVENTS]


def test_plain_output_one_line_per_epoch_no_carriage_returns(tmp_path):
    r = invoke("train", *IRIS, "--epochs", "4", "--headless", "--runs-dir", tmp_path)
    assert r.exit_code == 0, r.output
    assert "\r" not in r.output and "\x1b" not in r.output
    epoch_lines = [ln for ln in r.output.splitlines() if ln.startswith("epoch ")]
    assert [ln.split(":")[0] for ln in epoch_lines] == [f"epoch {i}/4" for i in range(1, 5)]
    assert "finished 4 epochs" in r.output and "test accuracy" in r.output


def test_config_file_with_command_line_override(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text('[train]\ndataset = "iris"\nmodel = "8"\nepochs = 2\nlr = 0.01\noptimizer = "sgd"\n'
                   'momentum = 0.9\nname = "fromfile"\n')
    r = invoke("train", "--config", cfg, "--lr", "0.05", "--epochs", "3", "--headless", "--runs-dir", tmp_path)
    assert r.exit_code == 0, r.output
    saved = RunDir(tmp_path / "fromfile").read_json("config.json")
    assert (saved["dataset"], saved["model"], saved["optimizer"], saved["momentum"]) == ("iris", "8", "sgd", 0.9)
    assert saved["lr"] == 0.05 and saved["epochs"] == 3  # the command line wins
    ck = load_checkpoint(tmp_path / "fromfile" / "latest.npz")
    assert ck.meta["optimizer"]["hyperparams"]["momentum"] == 0.9


@pytest.mark.parametrize("text, words", [
    ("dataset = 'iris'\nlearnrate = 0.1\n", ["bad.toml", "learnrate"]),
    ("dataset = 'iris'\nepochs = 'many'\n", ["bad.toml", "epochs"]),
    ("dataset = 'iris'\nlr = -0.5\n", ["bad.toml", "lr"]),
])
def test_bad_config_file_one_line_error(tmp_path, text, words):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    r = invoke("train", "--config", bad, "--headless", "--runs-dir", tmp_path / "runs")
    assert_clean_error(r, *words)
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_bad_config_file_subprocess_no_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = -1\n")
    p = subprocess.run([sys.executable, "-m", "tuinet.cli", "train", "--config", str(bad), "--headless"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert p.returncode == 1
    assert p.stderr.strip().splitlines() == [f"Error: {bad}: lr must be a positive number, got -1.0"]
    assert "Traceback" not in p.stderr + p.stdout


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_stops_with_checkpoint_and_resume_continues(tmp_path, sig, headless_trainer):
    proc = headless_trainer("sig")
    deadline = time.time() + 60
    steps = 0
    for line in proc.stdout:
        if json.loads(line)["event"] == "step":
            steps += 1
            if steps == 3:
                break
        assert time.time() < deadline
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err
    last = json.loads(out.splitlines()[-1])
    assert last["event"] == "stopped" and last["reason"] == signal.Signals(sig).name
    rd = RunDir(tmp_path / "sig")
    status = rd.read_json("status.json")
    assert status["status"] == "stopped" and status["step"] == last["step"]
    ck = load_checkpoint(rd.latest)
    assert ck.extra["trainer"]["global_step"] == last["step"] >= 3

    # resume picks it up from that step and runs to the (changed) end
    target = last["epoch"] + 1
    r = invoke("resume", "sig", "--runs-dir", tmp_path, "--epochs", target, "--json")
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.output.splitlines()]
    started = events[0]
    assert started["event"] == "started" and started["resumed"] and started["step"] == last["step"]
    assert events[-1]["event"] == "finished" and events[-1]["epochs"] == target
    assert rd.read_json("status.json")["status"] == "finished"


def test_resume_unknown_run_is_one_line(tmp_path):
    r = invoke("resume", "ghost", "--runs-dir", tmp_path)
    assert r.exit_code != 0 and r.output.strip().startswith("Error:") and "ghost" in r.output
    assert_clean_error(r, "ghost")
