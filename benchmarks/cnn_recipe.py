"""CNN benchmark: the `cnn` MNIST recipe with tuinet and with PyTorch (interleaved), and per-layer timings.

Run ``python -m benchmarks.cnn_recipe`` (``--help`` for options). PyTorch is optional: without it only tuinet's
figures are printed. The recipe: the ``cnn`` preset, one epoch over the 60,000 MNIST training images, batch
256, Adam (lr 0.01, betas (0.7, 0.9)) with a one-cycle learning-rate schedule (OneCycleLR's defaults,
learning rate only: ``cycle_momentum=False`` on the PyTorch side so both keep beta1 = 0.7).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import numpy as np

from tuinet.engine import build_model, make_optimizer
from tuinet.bench.flops import model_training_flops, training_flops
from tuinet.bench.layers import conv_layer_times, torch_conv_layer_times
from tuinet.bench.peak import describe_machine, measure_machine
from tuinet.bench.torch_models import torch_available, torch_cnn_model, torch_threads
from tuinet.engine.threads import configure_threads, cores

# --- the schedule ----------------------------------------------------------------------------------------------


def one_cycle_lr(step: int, total_steps: int, max_lr: float, pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4) -> float:
    """The learning rate of ``torch.optim.lr_scheduler.OneCycleLR`` at ``step`` (the trainer's schedule)."""
    from tuinet.training.schedules import OneCycleSchedule

    schedule = OneCycleSchedule(total_steps, 1, pct_start=pct_start, div_factor=div_factor,
                                final_div_factor=final_div_factor)
    return max_lr * schedule.factor(step)


# --- per-layer timings -----------------------------------------------------------------------------------------


# --- PyTorch equivalents ---------------------------------------------------------------------------------------


# --- the recipe ------------------------------------------------------------------------------------------------


def load_mnist():
    """All 60,000 MNIST training images and the 10,000 test images (NHWC float32 in [0, 1])."""
    from tuinet.data import load_dataset

    d = load_dataset("mnist", val_split=0.0, log=lambda s: None)
    return d.x_train, d.y_train, d.x_test, d.y_test


def run_tuinet_recipe(data, seed: int, spec: str = "cnn", epochs: int = 1, batch_size: int = 256, lr: float = 0.01,
                      betas=(0.7, 0.9)) -> dict[str, float]:
    """Train ``spec`` with Adam + one-cycle on ``data`` = (x_train, y_train, x_test, y_test); time and accuracy."""
    x, y, xt, yt = data
    model = build_model(spec, x.shape[1:], 10, seed=seed)
    configure_threads(model)
    opt = make_optimizer("adam", model.params, lr=lr, betas=tuple(betas))
    n = len(x)
    per_epoch = -(-n // batch_size)
    total = per_epoch * epochs
    rng = np.random.default_rng(seed)
    step = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = rng.permutation(n)
        for b in range(per_epoch):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            opt.lr = one_cycle_lr(step, total, lr)
            model.train_step(x[idx], y[idx], opt)
            step += 1
    train_s = time.perf_counter() - t0
    acc = model.evaluate(xt, yt, batch_size=1000)["accuracy"]
    return {"seconds": train_s, "accuracy": float(acc)}


def run_torch_recipe(data, seed: int, spec: str = "cnn", epochs: int = 1, batch_size: int = 256, lr: float = 0.01,
                     betas=(0.7, 0.9), threads: int | None = None) -> dict[str, float]:
    """The same recipe in PyTorch (default init, OneCycleLR with cycle_momentum=False)."""
    import torch

    torch_threads(threads or cores())
    torch.manual_seed(seed)
    x, y, xt, yt = data
    ours = build_model(spec, x.shape[1:], 10, seed=seed)
    net = torch_cnn_model(ours.config()["layers"], ours.input_shape)
    xs = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    ys = torch.from_numpy(y)
    n = len(x)
    per_epoch = -(-n // batch_size)
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=tuple(betas))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=per_epoch * epochs, cycle_momentum=False)
    loss_fn = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    net.train()
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for b in range(per_epoch):
            idx = perm[b * batch_size:(b + 1) * batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xs[idx]), ys[idx])
            loss.backward()
            opt.step()
            sched.step()
    train_s = time.perf_counter() - t0
    net.eval()
    with torch.no_grad():
        xts = torch.from_numpy(np.ascontiguousarray(xt.transpose(0, 3, 1, 2)))
        pred = torch.cat([net(xts[i:i + 1000]).argmax(1) for i in range(0, len(xts), 1000)])
    acc = float((pred.numpy() == yt).mean())
    return {"seconds": train_s, "accuracy": acc}


def _warm_up(data, spec: str, with_torch: bool = False) -> None:
    """Compile (or load from the cache) every kernel the recipe uses, outside the timings; with ``with_torch``
    also run PyTorch's recipe on a few batches (its first run is otherwise ~30% slower than the next ones)."""
    x, y, xt, yt = data
    small = (x[:2048], y[:2048], xt[:100], yt[:100])
    run_tuinet_recipe(small, seed=0, spec=spec)
    if with_torch:
        run_torch_recipe(small, seed=0, spec=spec)


def _torch_worker(conn, spec: str, epochs: int, batch_size: int) -> None:
    """PyTorch's recipe in its own process: our threadpoolctl/Numba settings never touch it (in one process they
    slow PyTorch 2-4x, which would flatter us)."""
    try:
        data = load_mnist()
        x, y, xt, yt = data
        run_torch_recipe((x[:2048], y[:2048], xt[:100], yt[:100]), seed=0, spec=spec)  # warm-up
        conn.send("ready")
        while True:
            req = conn.recv()
            if req is None:
                break
            if isinstance(req, tuple) and req[0] == "layers":  # per-layer times, also away from our thread limits
                model = build_model(spec, x.shape[1:], 10)
                conn.send({"layers": torch_conv_layer_times(model, batch_size, req[1])})
                continue
            conn.send(run_torch_recipe(data, req, spec, epochs, batch_size))
    except Exception as e:  # noqa: BLE001 - reported by the parent
        conn.send({"error": f"{type(e).__name__}: {e}"})
    finally:
        conn.close()


class TorchRecipeProcess:
    """A persistent worker process that runs PyTorch's recipe for a seed on request."""

    def __init__(self, spec: str, epochs: int, batch_size: int):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_torch_worker, args=(child, spec, epochs, batch_size), daemon=True)
        self.proc.start()
        msg = self.conn.recv()
        if msg != "ready":
            raise RuntimeError(f"PyTorch worker failed: {msg}")

    def run(self, seed: int) -> dict[str, float]:
        """Run the recipe with ``seed``; returns seconds and accuracy."""
        time.sleep(0.3)  # let our spinning threads park
        self.conn.send(seed)
        out = self.conn.recv()
        if "error" in out:
            raise RuntimeError(f"PyTorch worker failed: {out['error']}")
        return out

    def layer_times(self, repeats: int) -> list[dict[str, Any]]:
        """PyTorch's per-layer forward+backward times, measured in the worker process."""
        time.sleep(0.3)
        self.conn.send(("layers", repeats))
        out = self.conn.recv()
        if "error" in out:
            raise RuntimeError(f"PyTorch worker failed: {out['error']}")
        return out["layers"]

    def close(self) -> None:
        """Stop the worker."""
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(5)


def _print_layers(model, batch_size: int, repeats: int, worker: "TorchRecipeProcess | None",
                  machine: dict | None) -> None:
    ours = conv_layer_times(model, batch_size, repeats)
    theirs = worker.layer_times(repeats) if worker is not None else None
    print(f"\nper-layer forward+backward, batch {batch_size} (median of {repeats}, ms; GFLOP/s of conv and dense "
          f"layers; ratio = tuinet time / torch time)")
    print(f"{'layer':<28}{'tuinet':>9}{'GFLOP/s':>9}{'of peak':>8}{'torch':>9}{'GFLOP/s':>9}{'ratio':>7}")
    for i, r in enumerate(ours):
        mflop = training_flops(model.layers[i], i == model.first_trainable) * batch_size / 1e6
        t = theirs[i]["forward_backward_ms"] if theirs else float("nan")
        ratio = r["forward_backward_ms"] / t if theirs and t > 0 else float("nan")
        ours_g = mflop / r["forward_backward_ms"] if mflop else float("nan")
        share = f"{ours_g / machine['peak_gflops']:>8.0%}" if machine else f"{'-':>8}"  # no peak measured: no share
        cells = f"{ours_g:>9.1f}{share}" if mflop else f"{'-':>9}{'-':>8}"
        theirs_g = f"{mflop / t:>9.1f}" if mflop and theirs else f"{'-':>9}"
        t_cell, ratio_cell = (f"{t:>9.2f}", f"{ratio:>7.2f}") if theirs else (f"{'-':>9}", f"{'-':>7}")
        print(f"{r['layer']:<28}{r['forward_backward_ms']:>9.2f}{cells}{t_cell}{theirs_g}{ratio_cell}")


def _load() -> str:
    try:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - not available
        return "load average n/a"


def main(argv: list[str] | None = None) -> int:
    """Run the recipe for each seed, tuinet and PyTorch interleaved, then the per-layer table."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cnn_recipe", description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--spec", default="cnn", help="model preset or spec (default cnn)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is installed")
    ap.add_argument("--layers-only", action="store_true", help="only the per-layer table")
    ap.add_argument("--repeats", type=int, default=10, help="repeats per layer timing")
    ap.add_argument("--no-peak", action="store_true", help="skip measuring the machine's peak first")
    args = ap.parse_args(argv)
    machine = None if args.no_peak else measure_machine()
    if machine:
        print("\n".join(describe_machine(machine)))
    with_torch = torch_available() and not args.no_torch
    data = load_mnist()
    model = build_model(args.spec, data[0].shape[1:], 10)
    configure_threads(model)
    flops = model_training_flops(model) * len(data[0]) * args.epochs  # one recipe run
    print(f"{args.spec}: {model.num_params():,} params, {flops / len(data[0]) / args.epochs / 1e6:.2f} MFLOP per "
          f"training sample, {cores()} cores, torch: {'yes' if with_torch else 'not used'}; {_load()}")
    _warm_up(data, args.spec, False)
    configure_threads(model)
    worker = TorchRecipeProcess(args.spec, args.epochs, args.batch_size) if with_torch else None
    if not args.layers_only:
        ours, theirs = [], []
        for s in (int(v) for v in args.seeds.split(",")):
            r = run_tuinet_recipe(data, s, args.spec, args.epochs, args.batch_size)
            ours.append(r)
            line = f"seed {s}: tuinet {r['seconds']:6.2f} s  acc {r['accuracy']:.4f}"
            if with_torch:
                t = worker.run(s)
                time.sleep(0.3)
                theirs.append(t)
                line += f"   |  torch {t['seconds']:6.2f} s  acc {t['accuracy']:.4f}   ratio {r['seconds'] / t['seconds']:.2f}"
            print(line + f"   ({_load()})", flush=True)
        med = statistics.median
        line = f"median: tuinet {med(r['seconds'] for r in ours):.2f} s, acc {med(r['accuracy'] for r in ours):.4f}"
        if theirs:
            line += (f"  |  torch {med(t['seconds'] for t in theirs):.2f} s, acc "
                     f"{med(t['accuracy'] for t in theirs):.4f}  |  time ratio "
                     f"{med(r['seconds'] for r in ours) / med(t['seconds'] for t in theirs):.2f}")
        g = flops / med(r["seconds"] for r in ours) / 1e9
        line += f"\ntuinet {g:.1f} GFLOP/s"
        if machine:
            line += (f" = {g / machine['peak_gflops']:.0%} of the {machine['peak_gflops']:.0f} GFLOP/s FMA peak "
                     f"({g / machine['fma_gflops']:.0%} of the Numba-compiled FMA loop's {machine['fma_gflops']:.0f})")
        if theirs:
            line += f"; torch {flops / med(t['seconds'] for t in theirs) / 1e9:.1f} GFLOP/s"
        print(line)
    _print_layers(model, args.batch_size, args.repeats, worker, machine)
    if worker is not None:
        worker.close()
    print(_load())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
