"""What a batch size changed while a run trains does: the default MNIST run with its batch size kept, and changed
half way to smaller and larger sizes, side by side.

Run ``python -m benchmarks.batch_change`` (``--help`` for options). Each run is the run ``tuinet`` starts (MNIST's
row of defaults: the ``mlp`` preset, AdamW lr 0.002, weight decay 0.05, batch 128, cosine schedule, dropout 0.1),
given ``--epochs`` epochs; at the first step of epoch ``--at`` + 1 a ``set_batch_size`` command (the app's ``B``)
changes the batch size, which the trainer applies at once (no step of that epoch was taken); a size written with a
trailing ``s`` (``16s``) also scales the learning rate with it (``scale_lr``: ×new/old, the linear rule). Each run is its own
process, one after the other. For each it prints, over the epochs after the change: the median samples/s and the
steps per epoch, the step-to-step spread of the training loss (the median absolute difference between consecutive
steps' losses: how noisy a step is), and at the end the validation loss and accuracy and the test accuracy of the
last epoch's weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys


def child(epochs: int, at: int, size: int, limit: int | None, scale: bool) -> None:
    from tuinet.protocol import make_command
    from tuinet.training.config import TrainConfig
    from tuinet.training.defaults import with_dataset_defaults
    from tuinet.training.trainer import Trainer

    cfg = TrainConfig(**with_dataset_defaults({"dataset": "mnist", "epochs": epochs, "log_every": 1,
                                               "keep_epochs": 0, "limit": limit}))
    epochs_seen: list[dict] = []
    losses: list[float] = []
    trainer: Trainer

    def emit(e):
        if e["event"] == "epoch":
            epochs_seen.append(e)
            if e["epoch"] == at and size != cfg.batch_size:
                trainer.commands.put(make_command("set_batch_size", batch_size=size, scale_lr=scale))
        elif e["event"] == "step" and e["epoch"] > at:
            losses.append(e["loss"])

    trainer = Trainer(cfg, run_dir=False, emit=emit)
    end = trainer.run()
    after = epochs_seen[at:]
    spread = statistics.median(abs(b - a) for a, b in zip(losses, losses[1:]))
    print(json.dumps({"size": size, "scale": scale, "lr": trainer.base_lr, "steps_per_epoch": trainer.steps_per_epoch,
                      "samples_per_second": statistics.median(e["samples_per_second"] for e in after),
                      "spread": spread, "val_loss": after[-1]["val_loss"], "val_accuracy": after[-1]["val_accuracy"],
                      "test_last": (end.get("test_last") or {}).get("accuracy")}))


def main(argv=None) -> dict[str, dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=10, help="epochs of each run")
    ap.add_argument("--at", type=int, default=5, help="the completed epochs when the batch size changes")
    ap.add_argument("--sizes", default="128,16,16s,1024,1024s",
                    help="batch sizes from then on (128: the run left alone; a trailing s: the lr scaled with it)")
    ap.add_argument("--scale", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=int, help="the first N training digits only (default: all 54,000)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child is not None:
        child(a.epochs, a.at, a.child, a.limit, a.scale)
        return {}
    sizes = [s.strip() for s in a.sizes.split(",")]
    print(f"the default MNIST run{f' on {a.limit:,} digits' if a.limit else ''}, {a.epochs} epochs, batch 128 until "
          f"epoch {a.at}, then:")
    rows: dict[str, dict] = {}
    print(f"{'batch':>6} {'base lr':>8} {'steps/epoch':>12} {'samples/s':>10} {'loss spread':>12} {'val loss':>9} {'val acc':>8} "
          f"{'test acc':>9}")
    for size in sizes:
        out = subprocess.run([sys.executable, "-m", "benchmarks.batch_change", "--epochs", str(a.epochs), "--at",
                              str(a.at), "--child", size.rstrip("s")] + (["--limit", str(a.limit)] if a.limit else [])
                             + (["--scale"] if size.endswith("s") else []),
                             capture_output=True, text=True, check=True)
        r = rows[size] = json.loads(out.stdout.strip().splitlines()[-1])
        test = f"{r['test_last']:.2%}" if r["test_last"] is not None else "-"
        print(f"{size:>6} {r['lr']:>8.3g} {r['steps_per_epoch']:>12,} {r['samples_per_second']:>10,.0f} {r['spread']:>12.4f} "
              f"{r['val_loss']:>9.4f} {r['val_accuracy']:>8.2%} {test:>9}")
    return rows


if __name__ == "__main__":
    main()
