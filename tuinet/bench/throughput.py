"""``tuinet bench``: training-step throughput of a model, interleaved with the same model in PyTorch (A B A B).

Both sides train on the same random batches (shape of the chosen dataset) with the same optimizer. Each side runs in
its own worker process, and the rounds alternate (tuinet, PyTorch, tuinet, ...) with a short pause between them:
in one process, OpenBLAS, Numba's and PyTorch's OpenMP threads keep spinning after their own work and halve the
other side's speed (the README's Speed section has the figures).
Each round times ``steps`` steps after a warm-up; the median round is reported, and the ratio is tuinet / PyTorch.
Each round also times, in tuinet's process, the model's matrix products alone for as many steps, back to back
through BLAS with every core (:mod:`tuinet.bench.gemm`): the GEMM-only ceiling at these shapes, and tuinet's share
of it.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import statistics
import time
from typing import Any

import numpy as np

from tuinet.engine.optim import make_optimizer
from tuinet.engine.spec import build_model
from tuinet.engine.threads import configure_threads, cores
from tuinet.bench.flops import model_training_flops, training_flops
from tuinet.bench.gemm import GemmCeiling
from tuinet.bench.torch_models import torch_available
from tuinet.errors import TuinetError

SHAPES = {"mnist": ((28, 28, 1), 10)}


def _shape(dataset: str) -> tuple[tuple[int, ...], int]:
    if dataset in SHAPES:
        return SHAPES[dataset]
    from tuinet.data import load_dataset

    d = load_dataset(dataset, log=lambda m: None)
    return tuple(d.input_shape), d.num_outputs


def _batches(input_shape, classes, batch_size, n=8, seed=0):
    rng = np.random.default_rng(seed)
    xs = [rng.random((batch_size,) + tuple(input_shape), dtype=np.float32) for _ in range(n)]
    ys = [rng.integers(0, classes, batch_size).astype(np.int64) for _ in range(n)]
    return xs, ys


class TuinetRunner:
    """Times our engine."""

    name = "tuinet"

    def __init__(self, model_spec, input_shape, classes, optimizer, batch_size):
        self.model = build_model(model_spec, input_shape, classes)
        self.opt = make_optimizer(optimizer, self.model.params)
        self.mode = configure_threads(self.model)
        self.xs, self.ys = _batches(input_shape, classes, batch_size)

    def run(self, steps: int) -> float:
        m, opt, xs, ys = self.model, self.opt, self.xs, self.ys
        t = time.perf_counter()
        for i in range(steps):
            m.train_step(xs[i % len(xs)], ys[i % len(ys)], opt)
        return time.perf_counter() - t

    def choose_mode(self, seconds: float = 0.2, rounds: int = 2) -> str:
        """For a dense model on several cores with no mode pinned (``TUINET_THREAD_MODE``, ``TUINET_THREADS``,
        ``TUINET_THREAD_TUNING=0``): time about ``seconds`` of steps with BLAS's threads and with Numba's (the
        products on the micro-kernels), ``rounds`` times each in turn, and keep the faster (shortest time), as the
        trainer's thread tuner does; returns the mode (which the caller passes to :func:`configure_threads` before
        each round)."""
        pinned = any(os.environ.get(v) for v in ("TUINET_THREAD_MODE", "TUINET_THREADS")) or os.environ.get(
            "TUINET_THREAD_TUNING", "1") == "0"
        if self.mode != "blas" or cores() < 2 or pinned:
            return self.mode
        steps = max(5, int(seconds / max(self.run(3) / 3, 1e-6)))
        best: dict[str, float] = {}
        for _ in range(rounds):
            for mode in ("blas", "numba"):
                configure_threads(self.model, mode)
                self.run(2)
                t = self.run(steps)
                best[mode] = min(best.get(mode, t), t)
        self.mode = min(best, key=best.get)
        configure_threads(self.model, self.mode)
        return self.mode


class TorchRunner:
    """Times the same architecture in PyTorch (CPU, float32, default threads = cores)."""

    name = "pytorch"

    def __init__(self, model, optimizer, batch_size, input_shape, classes):
        import torch

        from tuinet.bench.torch_models import torch_cnn_model, torch_threads

        self.torch = torch
        torch_threads(cores())
        self.net = torch_cnn_model(model.config()["layers"], model.input_shape)
        opt_cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                   "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[optimizer if optimizer != "momentum"
                                                                                  else "sgd"]
        kwargs = {"lr": 1e-3}
        if optimizer == "momentum":
            kwargs["momentum"] = 0.9
        self.opt = opt_cls(self.net.parameters(), **kwargs)
        self.loss = torch.nn.CrossEntropyLoss()
        xs, ys = _batches(input_shape, classes, batch_size)
        # PyTorch convs want NCHW: same data, transposed once outside the timed loop
        self.xs = [torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x) for x in xs]
        self.ys = [torch.from_numpy(y) for y in ys]

    def run(self, steps: int) -> float:
        net, opt, loss_fn, xs, ys = self.net, self.opt, self.loss, self.xs, self.ys
        t = time.perf_counter()
        for i in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xs[i % len(xs)]), ys[i % len(ys)])
            loss.backward()
            opt.step()
        return time.perf_counter() - t



def _worker(conn, kind: str, args: dict[str, Any]) -> None:
    """A benchmark side in its own process: build, warm up, then time rounds on request."""
    try:
        input_shape, classes = args["input_shape"], args["classes"]
        ceiling = None
        if kind == "tuinet":
            runner = TuinetRunner(args["model"], input_shape, classes, args["optimizer"], args["batch_size"])
            model, mode = runner.model, runner.mode
            if args.get("gemm", True):
                ceiling = GemmCeiling(model, args["batch_size"])
        else:
            # PyTorch's side never touches our thread settings (threadpoolctl limits slow PyTorch down 2-4x)
            model, mode = build_model(args["model"], input_shape, classes), "pytorch"
            runner = TorchRunner(model, args["optimizer"], args["batch_size"], input_shape, classes)
        t0 = time.perf_counter()
        runner.run(max(5, (args["steps"] or 0) // 10))
        warmup = time.perf_counter() - t0
        if kind == "tuinet":  # a dense model's faster all-core mode, as training picks it
            mode = runner.choose_mode()
        info = {"warmup_seconds": warmup, "params": model.num_params(), "mode": mode}
        # per-layer forward+backward times, asked for each round like the steps ("layers" requests below)
        info["has_layers"] = any(getattr(layer, "numba_parallel", False) for layer in model.layers)
        if kind == "tuinet":
            from tuinet.engine.conv.layers import convolution_algorithms

            info["convolutions"] = convolution_algorithms(model.layers)
        if ceiling is not None:
            configure_threads(mode="single" if mode == "single" else "blas")
            ceiling.run(max(2, (args["steps"] or 0) // 10))
            info["gemm_flops"], info["gemm_covered"] = ceiling.flops, ceiling.covered
        if kind == "pytorch":
            import torch

            info["torch_version"] = torch.__version__
        conn.send(info)
        while True:
            steps = conn.recv()
            if steps is None:
                break
            if isinstance(steps, tuple) and steps[0] == "layers":  # each layer alone, in the side's thread mode
                from tuinet.bench.layers import conv_layer_times, torch_conv_layer_times

                if kind == "tuinet":
                    conn.send(conv_layer_times(model, args["batch_size"], steps[1], fused=True))
                else:
                    conn.send(torch_conv_layer_times(model, args["batch_size"], steps[1], fused=True))
                continue
            if isinstance(steps, tuple):  # ("gemm", steps): the products alone, BLAS on every core
                configure_threads(mode="single" if mode == "single" else "blas")
                conn.send(ceiling.run(steps[1]))
                continue
            if kind == "tuinet":
                configure_threads(model, mode)
            conn.send(runner.run(steps))
    except Exception as e:  # noqa: BLE001 - reported by the parent
        conn.send({"error": f"{type(e).__name__}: {e}"})
    finally:
        conn.close()


#: each layer's forward+backward is timed this many times a round (the round's figure: their median)
LAYER_REPEATS = 5


def median_layer_rows(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per layer, the median over rounds of each round's row (the same layers in the same order every round) of
    ``forward_ms``, ``backward_ms`` and ``forward_backward_ms``."""
    out = []
    for rows in zip(*rounds):
        row = dict(rows[0])
        for key in ("forward_ms", "backward_ms", "forward_backward_ms"):
            row[key] = float(statistics.median(r[key] for r in rows))
        out.append(row)
    return out


#: with no step count given, each round runs about this many seconds of tuinet's training ...
ROUND_SECONDS = 2.0
#: ... in at least and at most this many steps (a dense model's step takes well under a millisecond; `resnet`'s at
#: batch 256 a sixth of a second, where a fixed 300 steps made a round 50 s and the benchmark over 10 minutes)
AUTO_STEPS = (5, 300)


def auto_steps(seconds_per_step: float) -> int:
    """Steps per round for about :data:`ROUND_SECONDS` of tuinet's training, within :data:`AUTO_STEPS`."""
    lo, hi = AUTO_STEPS
    if not seconds_per_step > 0:
        return hi
    return int(min(hi, max(lo, round(ROUND_SECONDS / seconds_per_step))))


def run_bench(model: str = "mlp", dataset: str = "mnist", optimizer: str = "adam", batch_size: int = 64,
              steps: int | None = None, rounds: int = 5, use_torch: bool = True, json_out: bool = False,
              machine: dict[str, Any] | bool | None = None, gemm: bool = True) -> dict[str, Any]:
    """Time training steps of ``model`` (and PyTorch's equivalent, interleaved); print and return the figures.

    ``steps``: per round, for each side; None: as many as about :data:`ROUND_SECONDS` of tuinet's training takes,
    from 3 timed steps after the warm-up (:func:`auto_steps`).

    ``machine``: the measured peaks (:func:`tuinet.bench.peak.measure_machine`); measured here when None, left out
    when False. With them every rate also reads as GFLOP/s and as a share of the measured peak. ``gemm``: also
    time the model's products alone each round (the GEMM-only ceiling, :mod:`tuinet.bench.gemm`).
    """
    input_shape, classes = _shape(dataset)
    built = build_model(model, input_shape, classes)  # a bad spec fails here with a clear error, before any process
    if machine is None:
        from tuinet.bench.peak import measure_machine

        machine = measure_machine()
    kinds = ["tuinet"]
    torch_note = None
    if use_torch and torch_available():
        kinds.append("pytorch")
    elif use_torch:
        torch_note = "PyTorch not installed: no side-by-side figures (pip install torch to compare)"
    args = {"model": model, "input_shape": input_shape, "classes": classes, "optimizer": optimizer,
            "batch_size": batch_size, "steps": steps, "gemm": gemm}
    ctx = mp.get_context("spawn")
    workers, infos = {}, {}
    try:
        for kind in kinds:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, kind, args), daemon=True)
            proc.start()
            workers[kind] = (proc, parent)
            infos[kind] = parent.recv()
            if "error" in infos[kind]:
                raise TuinetError(f"{kind} benchmark failed: {infos[kind]['error']}")
        auto = steps is None
        if auto:
            workers["tuinet"][1].send(3)
            steps = auto_steps(workers["tuinet"][1].recv() / 3)
        times: dict[str, list[float]] = {k: [] for k in kinds}
        layer_rounds: dict[str, list[list[dict[str, Any]]]] = {k: [] for k in kinds}
        gemm_times: list[float] = []
        for _ in range(rounds):
            for kind in kinds:
                time.sleep(0.3)  # let the other side's spinning threads park
                workers[kind][1].send(steps)
                times[kind].append(workers[kind][1].recv())
            # each layer alone, both sides in turn every round (before the GEMM ceiling: OpenBLAS's threads would
            # still be spinning and slow the first layers' Numba threads); a figure is the median over the rounds
            # of each round's median of LAYER_REPEATS, so a burst of other work on the machine moves one round's
            for kind in kinds if infos["tuinet"].get("has_layers") else ():
                time.sleep(0.3)
                workers[kind][1].send(("layers", LAYER_REPEATS))
                layer_rounds[kind].append(workers[kind][1].recv())
            if "gemm_flops" in infos["tuinet"]:
                time.sleep(0.3)
                workers["tuinet"][1].send(("gemm", steps))
                gemm_times.append(workers["tuinet"][1].recv())
    finally:
        for proc, conn in workers.values():
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(5)
    warmup = infos["tuinet"]["warmup_seconds"]
    mode = infos["tuinet"]["mode"]
    result: dict[str, Any] = {
        "model": model, "dataset": dataset, "optimizer": optimizer, "batch_size": batch_size, "steps": steps,
        "steps_auto": auto,
        "rounds": rounds, "params": infos["tuinet"]["params"], "thread_mode": mode, "cores": cores(),
        "warmup_seconds": round(warmup, 3),
    }
    convs = infos["tuinet"].get("convolutions") or []
    if convs:  # which of the model's convolutions run by Winograd's F(4x4, 3x3) (TUINET_WINOGRAD=0: none)
        result["convolutions"] = len(convs)
        result["winograd_layers"] = [name for name, algo in convs if algo == "winograd"]
    try:
        import os

        result["load_average"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    for name, ts in times.items():
        sps = [steps * batch_size / t for t in ts]
        result[f"{name}_samples_per_second"] = statistics.median(sps)
        result[f"{name}_rounds"] = [round(s) for s in sps]
    result["samples_per_second"] = result["tuinet_samples_per_second"]
    if gemm_times:
        rates = [steps * infos["tuinet"]["gemm_flops"] / t / 1e9 for t in gemm_times]
        result["gemm_ceiling_gflops"] = statistics.median(rates)
        result["gemm_ceiling_rounds"] = [round(r, 1) for r in rates]
        result["gemm_ceiling_covered"] = infos["tuinet"]["gemm_covered"]
    if "pytorch_samples_per_second" in result:
        result["ratio_vs_pytorch"] = result["tuinet_samples_per_second"] / result["pytorch_samples_per_second"]
        result["torch_version"] = infos["pytorch"]["torch_version"]
    if layer_rounds["tuinet"]:
        ours = median_layer_rows(layer_rounds["tuinet"])
        theirs = median_layer_rows(layer_rounds["pytorch"]) if layer_rounds.get("pytorch") else None
        result["layer_rounds"] = len(layer_rounds["tuinet"])
        result["conv_layers"] = [
            {"name": row["layer"], "tuinet_ms": row["forward_backward_ms"],
             "pytorch_ms": theirs[i]["forward_backward_ms"] if theirs else None,
             "mflop": training_flops(built.layers[i], i == built.first_trainable) * batch_size / 1e6,
             **({"fused": True} if row.get("fused") else {})}
            for i, row in enumerate(ours)]
        # a whole training step against the sum of its layers' times (each layer timed alone on a warm cache)
        for name in ("tuinet", "pytorch"):
            if f"{name}_samples_per_second" in result and (name == "tuinet" or theirs):
                result[f"{name}_step_ms"] = batch_size / result[f"{name}_samples_per_second"] * 1e3
                result[f"{name}_layer_sum_ms"] = sum(row[f"{name}_ms"] for row in result["conv_layers"])
    _add_flop_rates(result, built, machine or None)
    if torch_note:
        result["note"] = torch_note
    if json_out:
        print(json.dumps(result))
    else:
        _print_report(result, list(times), torch_note)
    return result


def _add_flop_rates(result: dict[str, Any], model, machine: dict[str, Any] | None) -> None:
    """GFLOP/s of each side and of each layer, and their shares of the measured peaks, into ``result``."""
    flops = model_training_flops(model)
    result["mflop_per_sample"] = flops / 1e6
    if machine:
        result["machine"] = machine
    for name in ("tuinet", "pytorch"):
        if f"{name}_samples_per_second" in result:
            gflops = result[f"{name}_samples_per_second"] * flops / 1e9
            result[f"{name}_gflops"] = gflops
            if machine:
                result[f"{name}_share_of_sgemm"] = gflops / machine["sgemm_gflops"]
                result[f"{name}_share_of_peak"] = gflops / machine["peak_gflops"]
            if result.get("gemm_ceiling_gflops"):
                result[f"{name}_share_of_gemm_ceiling"] = gflops / result["gemm_ceiling_gflops"]
    if result.get("gemm_ceiling_gflops"):
        ceiling = result["gemm_ceiling_gflops"]
        if result.get("gemm_ceiling_covered") == 1.0:  # every product timed: the ceiling reads as samples/s too
            result["gemm_ceiling_samples_per_second"] = ceiling * 1e9 / flops
        if machine:
            result["gemm_ceiling_share_of_sgemm"] = ceiling / machine["sgemm_gflops"]
    for row in result.get("conv_layers", []):
        for name in ("tuinet", "pytorch"):
            ms = row.get(f"{name}_ms")
            row[f"{name}_gflops"] = row["mflop"] / ms if ms and row["mflop"] else None


def _print_report(result: dict[str, Any], sides: list[str], torch_note: str | None) -> None:
    """The human-readable report of :func:`run_bench`."""
    machine = result.get("machine")
    if machine:
        from tuinet.bench.peak import describe_machine

        for line in describe_machine(machine):
            print(line)
    print(f"{result['model']} on {result['dataset']} shapes, {result['optimizer']}, batch {result['batch_size']}: "
          f"{result['params']:,} params, {result['mflop_per_sample']:.2f} MFLOP per training sample, "
          f"{result['rounds']} rounds x {result['steps']} steps"
          f"{' (about %gs of tuinet training each)' % ROUND_SECONDS if result.get('steps_auto') else ''}, "
          f"threads: {result['thread_mode']} "
          f"({result['cores']} cores)")
    if result.get("convolutions"):
        wino = result["winograd_layers"]
        print(f"  convolutions: {len(wino)} of {result['convolutions']} by Winograd F(4x4, 3x3)"
              + (f" ({', '.join(wino)})" if wino else "") + ", the rest direct"
              + ("; TUINET_WINOGRAD=0 runs all direct" if wino else ""))
    for name in sides:
        share = ""
        if machine:
            share = (f", {result[f'{name}_share_of_sgemm']:.0%} of sgemm, "
                     f"{result[f'{name}_share_of_peak']:.0%} of FMA peak")
        if f"{name}_share_of_gemm_ceiling" in result:
            share += f", {result[f'{name}_share_of_gemm_ceiling']:.0%} of its GEMMs alone"
        print(f"  {name:8s} {result[f'{name}_samples_per_second']:>10,.0f} samples/s, "
              f"{result[f'{name}_gflops']:6.1f} GFLOP/s{share} (median; rounds: "
              f"{', '.join(f'{s:,}' for s in result[f'{name}_rounds'])})")
    if "gemm_ceiling_gflops" in result:
        sps = result.get("gemm_ceiling_samples_per_second")
        head = f"{sps:>10,.0f} samples/s, " if sps else f"{'':>10s}             "
        share = f", {result['gemm_ceiling_share_of_sgemm']:.0%} of sgemm" if machine else ""
        covered = result["gemm_ceiling_covered"]
        what = "the model's GEMMs alone, back to back through BLAS" + (
            "" if covered == 1.0 else f"; {covered:.0%} of its FLOP, the largest im2col products left out")
        print(f"  {'GEMMs':8s} {head}{result['gemm_ceiling_gflops']:6.1f} GFLOP/s{share} ({what}; median of "
              f"{len(result['gemm_ceiling_rounds'])} rounds)")
    if "ratio_vs_pytorch" in result:
        print(f"  ratio    {result['ratio_vs_pytorch']:.2f}x PyTorch {result['torch_version']}")
    if result.get("conv_layers"):
        print(f"  {'layer (forward+backward)':<26s} {'tuinet ms':>9s} {'GFLOP/s':>8s} {'PyTorch ms':>10s} "
              f"{'GFLOP/s':>8s} {'speedup':>7s}   (each layer alone: median of {result['layer_rounds']} rounds' "
              f"medians of {LAYER_REPEATS})")
    for row in result.get("conv_layers", []):
        if row.get("fused"):
            print(f"  {row['name']:<26s} (fused into the row above)")
            continue
        tg = f"{row['tuinet_gflops']:8.1f}" if row.get("tuinet_gflops") else f"{'-':>8s}"
        if row.get("pytorch_ms") is not None:
            pg = f"{row['pytorch_gflops']:8.1f}" if row.get("pytorch_gflops") else f"{'-':>8s}"
            theirs = f"{row['pytorch_ms']:10.2f} {pg} {row['pytorch_ms'] / max(row['tuinet_ms'], 1e-9):6.2f}x"
        else:
            theirs = ""
        print(f"  {row['name']:<26s} {row['tuinet_ms']:9.2f} {tg} {theirs}")
    if "tuinet_layer_sum_ms" in result:
        line = f"  whole step: tuinet {result['tuinet_step_ms']:.1f} ms (layer sum {result['tuinet_layer_sum_ms']:.1f})"
        if "pytorch_layer_sum_ms" in result:
            line += (f", PyTorch {result['pytorch_step_ms']:.1f} ms (layer sum "
                     f"{result['pytorch_layer_sum_ms']:.1f})")
        print(line)
    if torch_note:
        print("  " + torch_note)
