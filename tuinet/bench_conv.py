"""CNN benchmark: the `cnn` MNIST recipe with tuinet and with PyTorch (interleaved), and per-layer timings.

Run ``python -m tuinet.bench_conv`` (``--help`` for options). PyTorch is optional: without it only tuinet's
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


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(statistics.median(times))


def conv_layer_times(model, batch_size: int = 256, repeats: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """Median forward+backward milliseconds of each layer of a tuinet model on one random batch.

    Returns one dict per layer: ``name``, ``layer`` (its description), ``forward_ms``, ``backward_ms``,
    ``forward_backward_ms``. Call :func:`configure_threads` first (as training does).
    """
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size,) + model.input_shape, dtype=np.float32)
    first = model._first_trainable
    rows = []
    for i, layer in enumerate(model.layers):
        y = layer.forward(x, True)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        need_dx = i > first
        layer.backward(dy, need_dx)  # warm up (compiles on first use)
        fwd = _median_ms(lambda: layer.forward(x, True), repeats)

        def fb():
            layer.forward(x, True)
            layer.backward(dy, need_dx)

        total = _median_ms(fb, repeats)
        rows.append({"name": layer.name, "layer": layer.describe(), "forward_ms": fwd,
                     "backward_ms": max(total - fwd, 0.0), "forward_backward_ms": total})
        x = y
    return rows


# --- PyTorch equivalents ---------------------------------------------------------------------------------------


def torch_available() -> bool:
    """True when PyTorch can be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_cnn_model(layer_configs: list[dict[str, Any]], input_shape: tuple[int, ...]):
    """The PyTorch ``nn.Sequential`` equivalent of tuinet layer configs (``model.config()["layers"]``).

    It takes NCHW input. Flatten first moves channels last, so flattened features are in tuinet's NHWC order
    (weights can be copied across with :func:`copy_weights_to_torch`). Asymmetric ``same`` padding uses
    ``nn.ZeroPad2d`` as TensorFlow-style padding does.
    """
    import torch
    from torch import nn

    from tuinet.engine.conv import conv_geometry
    from tuinet.engine.layers import Layer

    class ToNHWC(nn.Module):
        def forward(self, x):
            return x.permute(0, 2, 3, 1)

    class Residual(nn.Module):
        def __init__(self, block):
            super().__init__()
            s = block.sublayers
            self.main = nn.Sequential(_conv(s["conv1"], block.input_shape), nn.BatchNorm2d(block.filters), nn.ReLU(),
                                      _conv(s["conv2"], s["conv2"].input_shape), nn.BatchNorm2d(block.filters))
            self.proj = (nn.Sequential(_conv(s["proj"], block.input_shape), nn.BatchNorm2d(block.filters))
                         if block.has_projection else None)

        def forward(self, x):
            skip = self.proj(x) if self.proj is not None else x
            return torch.relu(self.main(x) + skip)

    def _conv(layer, in_shape):
        h, w, c = in_shape
        (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
        _, pt, pb = conv_geometry(h, kh, sh, layer.padding)
        _, pl, pr = conv_geometry(w, kw, sw, layer.padding)
        if pt == pb and pl == pr:
            return nn.Conv2d(c, layer.filters, (kh, kw), (sh, sw), (pt, pl), bias=layer.use_bias)
        return nn.Sequential(nn.ZeroPad2d((pl, pr, pt, pb)),
                             nn.Conv2d(c, layer.filters, (kh, kw), (sh, sw), 0, bias=layer.use_bias))

    acts = {"ReLU": nn.ReLU, "Tanh": nn.Tanh, "Sigmoid": nn.Sigmoid, "GELU": nn.GELU, "Linear": nn.Identity}
    mods = []
    shape = tuple(input_shape)
    rng = np.random.default_rng(0)
    for cfg in layer_configs:
        layer = Layer.from_config(cfg)
        out_shape = layer.build(shape, rng)
        kind = cfg["type"]
        if kind == "Conv2D":
            mods.append(_conv(layer, shape))
        elif kind == "MaxPool2D":
            mods.append(nn.MaxPool2d(tuple(layer.pool_size), tuple(layer.stride)))
        elif kind == "AvgPool2D":
            mods.append(nn.AvgPool2d(tuple(layer.pool_size), tuple(layer.stride)))
        elif kind == "GlobalAvgPool":
            mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        elif kind == "BatchNorm":
            bn = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
            mods.append(bn(shape[-1], eps=layer.eps, momentum=layer.momentum))
        elif kind == "ResidualBlock":
            mods.append(Residual(layer))
        elif kind == "Flatten":
            mods += ([ToNHWC()] if len(shape) == 3 else []) + [nn.Flatten()]
        elif kind == "Dense":
            mods.append(nn.Linear(shape[0], layer.units, bias=layer.use_bias))
        elif kind == "Dropout":
            mods.append(nn.Dropout(layer.rate))
        elif kind == "LeakyReLU":
            mods.append(nn.LeakyReLU(layer.slope))
        elif kind in acts:
            mods.append(acts[kind]())
        else:
            raise ValueError(f"no PyTorch equivalent for layer type {kind}")
        shape = out_shape
    return nn.Sequential(*mods)


def copy_weights_to_torch(model, tmodel) -> None:
    """Copy a tuinet model's parameters and BN running statistics into its :func:`torch_cnn_model` twin."""
    import torch

    ours = []
    for layer in model.layers:
        subs = list(layer.sublayers.values()) if hasattr(layer, "sublayers") else [layer]
        ours += subs
    params = [(lay, name, p) for lay in ours for name, p, _ in lay.named_params()]
    tparams = [p for m in tmodel.modules() if not list(m.children()) for p in m.parameters(recurse=False)]
    if len(params) != len(tparams):
        raise ValueError(f"{len(params)} tuinet parameters vs {len(tparams)} in the PyTorch model")
    with torch.no_grad():
        for (lay, name, p), tp in zip(params, tparams):
            a = p
            if p.ndim == 4:  # (KH, KW, Cin, Cout) -> (Cout, Cin, KH, KW)
                a = p.transpose(3, 2, 0, 1)
            elif p.ndim == 2:  # Dense (in, out) -> Linear (out, in)
                a = p.T
            tp.copy_(torch.from_numpy(np.ascontiguousarray(a)))
        bns = [m for m in tmodel.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        ours_bn = [lay for lay in ours if lay.buffers]
        for lay, m in zip(ours_bn, bns):
            m.running_mean.copy_(torch.from_numpy(lay.buffers["running_mean"]))
            m.running_var.copy_(torch.from_numpy(lay.buffers["running_var"]))


def torch_conv_layer_times(model, batch_size: int = 256, repeats: int = 10, seed: int = 0,
                           threads: int | None = None) -> list[dict[str, Any]]:
    """PyTorch's median forward+backward ms for the equivalent of each layer of a tuinet model.

    Same rows as :func:`conv_layer_times` (``name``, ``layer``, ``forward_ms``, ``backward_ms``,
    ``forward_backward_ms``), in the same order; the first trainable layer computes no input gradient.
    """
    import torch

    torch.set_num_threads(threads or cores())
    torch.manual_seed(seed)
    shape = model.input_shape
    x = torch.rand((batch_size,) + (tuple(shape[2:]) + tuple(shape[:2]) if len(shape) == 3 else tuple(shape)))
    first = model._first_trainable
    rows = []
    for i, layer in enumerate(model.layers):
        mod = torch_cnn_model([layer.config()], shape)
        xin = x.detach().requires_grad_(i > first)
        y = mod(xin)
        dy = torch.randn_like(y)

        def fwd():
            with torch.no_grad():
                mod(xin)

        def fb():
            out = mod(xin)
            if out.requires_grad:
                out.backward(dy)

        fb()
        f_ms = _median_ms(fwd, repeats)
        t_ms = _median_ms(fb, repeats)
        rows.append({"name": layer.name, "layer": layer.describe(), "forward_ms": f_ms,
                     "backward_ms": max(t_ms - f_ms, 0.0), "forward_backward_ms": t_ms})
        x = y.detach()
        shape = layer.output_shape
    return rows


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

    torch.set_num_threads(threads or cores())
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


def _print_layers(model, batch_size: int, repeats: int, worker: "TorchRecipeProcess | None") -> None:
    ours = conv_layer_times(model, batch_size, repeats)
    theirs = worker.layer_times(repeats) if worker is not None else None
    print(f"\nper-layer forward+backward, batch {batch_size} (median of {repeats}, ms)")
    print(f"{'layer':<24}{'tuinet':>10}{'torch':>10}{'ratio':>8}")
    for i, r in enumerate(ours):
        t = theirs[i]["forward_backward_ms"] if theirs else float("nan")
        ratio = r["forward_backward_ms"] / t if theirs and t > 0 else float("nan")
        print(f"{r['layer']:<24}{r['forward_backward_ms']:>10.2f}{t:>10.2f}{ratio:>8.2f}")


def _load() -> str:
    try:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - not available
        return "load average n/a"


def main(argv: list[str] | None = None) -> int:
    """Run the recipe for each seed, tuinet and PyTorch interleaved, then the per-layer table."""
    ap = argparse.ArgumentParser(prog="python -m tuinet.bench_conv", description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--spec", default="cnn", help="model preset or spec (default cnn)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is installed")
    ap.add_argument("--layers-only", action="store_true", help="only the per-layer table")
    ap.add_argument("--repeats", type=int, default=10, help="repeats per layer timing")
    args = ap.parse_args(argv)
    with_torch = torch_available() and not args.no_torch
    data = load_mnist()
    model = build_model(args.spec, data[0].shape[1:], 10)
    configure_threads(model)
    print(f"{args.spec}: {model.num_params():,} params, {cores()} cores, torch: "
          f"{'yes' if with_torch else 'not used'}; {_load()}")
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
        print(line)
    _print_layers(model, args.batch_size, args.repeats, worker)
    if worker is not None:
        worker.close()
    print(_load())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
