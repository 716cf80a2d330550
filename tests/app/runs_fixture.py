"""A deterministic runs folder for the Compare screen's tests: run folders written by hand (config.json, status.json,
metrics.jsonl) with fixed times, shaped as a trainer writes them, so no training is needed and snapshots do not move.

Runs (newest first): a live one (its trainer.lock names this test process, which is alive), three finished digits
runs that differ in lr / optimizer / dropout, and one that crashed (status.json says running, its pid is dead).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
DEAD_PID = 999_999_999  # no such process

BASE_CONFIG: dict[str, Any] = {
    "dataset": "digits", "model": "mlp", "activation": None, "optimizer": "adam", "lr": 0.001, "momentum": None,
    "betas": None, "weight_decay": None, "batch_size": 64, "epochs": 12, "seed": 0, "val_split": 0.1,
    "normalize": "auto", "limit": None, "l1": 0.0, "l2": 0.0, "dropout": 0.0, "schedule": "constant",
    "clip_grad": None, "runs_dir": "runs", "name": None,
}

#: name -> (config changes, how fast the loss falls, final status, epochs done, start offset in seconds)
RUNS: dict[str, tuple[dict[str, Any], float, str, int, float]] = {
    "adam-lr0.001": ({}, 1.0, "finished", 12, 0.0),
    "adam-lr0.01-dropout": ({"lr": 0.01, "dropout": 0.3}, 1.6, "finished", 12, 600.0),
    "sgd-lr0.1": ({"optimizer": "sgd", "lr": 0.1, "momentum": 0.9}, 0.6, "finished", 12, 1200.0),
    "crashed-run": ({"lr": 0.003}, 0.8, "crashed", 4, 1800.0),
    "live-run": ({"lr": 0.002, "batch_size": 32}, 1.2, "live", 5, 2400.0),
}
SPE = 23  # steps per epoch (digits: 1437 training samples at batch 64)
CLASSES = [str(i) for i in range(10)]


def _event(kind: str, t: float, **fields: Any) -> str:
    return json.dumps({"event": kind, "v": 1, "time": round(t, 3), **fields}, separators=(",", ":"))


def _confusion(epoch: int, speed: float) -> list[list[int]]:
    m = [[0] * 10 for _ in range(10)]
    for i in range(10):
        wrong = max(0, int(round(6 * math.exp(-epoch * speed / 4))) + (i % 3))
        m[i][i] = 18 - min(wrong, 10)
        m[i][(i + 3) % 10] = min(wrong, 10)
    return m


def write_run(runs: Path, name: str, changes: dict[str, Any], speed: float, status: str, epochs_done: int,
              offset: float) -> Path:
    """One run folder; returns its path."""
    d = runs / name
    d.mkdir(parents=True)
    cfg = {**BASE_CONFIG, **changes, "name": name}
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    start = T0 + offset
    t = start
    lines = [_event("started", t, name=name, run_dir=str(d), config=cfg,
                    dataset={"name": "digits", "task": "classification", "input_shape": [64], "num_outputs": 10,
                             "class_names": CLASSES},
                    num_params=50826, steps_per_epoch=SPE, total_steps=SPE * cfg["epochs"], epochs=cfg["epochs"],
                    batch_size=cfg["batch_size"], optimizer=cfg["optimizer"], lr=cfg["lr"], step=0, epoch=0)]
    best_loss, best_acc = math.inf, None
    for epoch in range(1, epochs_done + 1):
        for k in range(5, SPE + 1, 6):
            step = (epoch - 1) * SPE + k
            e = step / SPE
            t += 0.05
            loss = 2.0 * math.exp(-e * speed) + 0.05 + 0.03 * math.sin(step)
            acc = min(0.999, 1 - 0.85 * math.exp(-e * speed * 1.2) + 0.01 * math.cos(step))
            lines.append(_event("step", t, step=step, epoch=e, loss=loss, penalty=0.0, accuracy=acc, lr=cfg["lr"],
                                samples_per_second=9000.0 + 100 * speed, batches=6))
        t += 0.1
        val_loss = 1.6 * math.exp(-epoch * speed / 2) + 0.09 + 0.002 * epoch * (2 - speed)
        val_acc = min(0.99, 1 - 0.7 * math.exp(-epoch * speed / 2) - 0.02)
        if val_loss < best_loss:
            best_loss, best_acc = val_loss, val_acc
        lines.append(_event("epoch", t, epoch=epoch, step=epoch * SPE, train_loss=val_loss * 0.8,
                            train_accuracy=val_acc + 0.01, val_loss=val_loss, val_accuracy=val_acc, lr=cfg["lr"],
                            seconds=1.2, samples_per_second=9000.0 + 100 * speed))
        lines.append(_event("confusion", t, epoch=epoch, split="val", matrix=_confusion(epoch, speed),
                            class_names=CLASSES))
    test_acc = None
    if status == "finished":
        test_acc = round(best_acc - 0.01, 4)
        lines.append(_event("finished", t + 0.5, test_accuracy=test_acc, test_loss=best_loss + 0.02,
                            epochs=epochs_done, steps=epochs_done * SPE, train_seconds=round(t - start, 3),
                            samples_per_second=9000.0 + 100 * speed, best_val_accuracy=best_acc,
                            best_epoch=epochs_done, run_dir=str(d)))
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    pid = {"live": os.getpid(), "crashed": DEAD_PID}.get(status, 4242)
    st = {"name": name, "status": {"live": "running", "crashed": "running"}.get(status, status), "pid": pid,
          "dataset": "digits", "model": "mlp", "optimizer": cfg["optimizer"], "epoch": epochs_done,
          "epochs": cfg["epochs"], "step": epochs_done * SPE, "best_val_accuracy": best_acc,
          "best_val_loss": best_loss, "test_accuracy": test_acc, "test_loss": None,
          "train_seconds": round(t - start, 2), "started": start, "updated": t}
    (d / "status.json").write_text(json.dumps(st, indent=2))
    if status == "live":
        (d / "trainer.lock").write_text(str(os.getpid()))
    return d


def make_runs(runs: Path, names: list[str] | None = None) -> Path:
    """The fixture's runs folder at ``runs`` (all of :data:`RUNS`, or those named)."""
    runs.mkdir(parents=True, exist_ok=True)
    for name in names or list(RUNS):
        write_run(runs, name, *RUNS[name])
    return runs


def append_epoch(run: Path, epoch: int, val_loss: float, val_acc: float) -> None:
    """Append one more epoch to a (live) run's metrics.jsonl and status.json, as its trainer would."""
    st = json.loads((run / "status.json").read_text())
    t = st["updated"] + 2.0
    with open(run / "metrics.jsonl", "a") as f:
        f.write(_event("step", t - 0.1, step=epoch * SPE, epoch=float(epoch), loss=val_loss * 0.8, penalty=0.0,
                       accuracy=val_acc, lr=0.002, samples_per_second=9100.0, batches=23) + "\n")
        f.write(_event("epoch", t, epoch=epoch, step=epoch * SPE, train_loss=val_loss * 0.8,
                       train_accuracy=val_acc, val_loss=val_loss, val_accuracy=val_acc, lr=0.002, seconds=1.2,
                       samples_per_second=9100.0) + "\n")
    st.update(epoch=epoch, step=epoch * SPE, updated=t)
    if val_loss < (st.get("best_val_loss") or math.inf):
        st.update(best_val_loss=val_loss, best_val_accuracy=val_acc)
    (run / "status.json").write_text(json.dumps(st, indent=2))
