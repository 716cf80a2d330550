"""The parts of the ``resnet`` preset's residual blocks, tuinet against PyTorch, forward+backward each.

Run ``python -m benchmarks.resnet_parts [--batch-size 256] [--rounds 3] [--repeats 5]``. For each residual block of
the preset it times, on that block's real input shape: the two 3x3 convolutions, BatchNorm + ReLU, BatchNorm + skip
add + ReLU (how the block ends) and the projection (1x1 convolution, then its BatchNorm); the first convolution's
row includes the sum of the two paths' input gradients in the backward pass (tuinet adds the skip path's gradient
inside that convolution's backward pass, sample by sample; PyTorch's row adds it after). Each side runs in its own process (spinning OpenMP threads of one would slow
the other), the sides alternate round by round (A B A B), and each figure is the median over rounds of per-round
medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import numpy as np

def _median_ms(fn, repeats: int) -> float:
    """The median of ``repeats`` timed calls after one untimed warm-up call."""
    from tuinet.bench.layers import _median_ms as median_ms

    fn()
    return median_ms(fn, repeats)


def _tuinet_parts(batch: int, repeats: int) -> dict[str, float]:
    from tuinet.engine.spec import build_model
    from tuinet.engine.threads import configure_threads

    model = build_model("resnet", (28, 28, 1), 10)
    configure_threads(model)
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}
    for block in (layer for layer in model.layers if layer.kind == "ResidualBlock"):
        s = block.sublayers
        x = rng.random((batch,) + block.input_shape, dtype=np.float32)
        h = s["conv1"].forward(x, True)
        g = rng.standard_normal(h.shape).astype(np.float32)
        tag = block.describe()

        def conv(layer, inp, dy, dx_add=None):
            layer.forward(inp, True)
            layer.backward(dy, True, dx_add=dx_add)

        def bn_relu(inp=h, dy=g):
            y = s["bn1"].forward_act(inp, True, relu=True)
            s["bn1"].backward_act(dy, y, True)

        skip = x if not block.has_projection else rng.random(h.shape, dtype=np.float32)

        def bn_skip_relu(inp=h, dy=g, skip=skip):
            y = s["bn2"].forward_act(inp, True, relu=True, skip=skip)
            s["bn2"].backward_act(dy, y, True, keep_masked=True)

        dskip = rng.random(x.shape, dtype=np.float32)
        out[f"{tag}: conv1 3x3 + gradient sum"] = _median_ms(lambda: conv(s["conv1"], x, g, dskip), repeats)
        out[f"{tag}: conv2 3x3"] = _median_ms(lambda: conv(s["conv2"], h, g), repeats)
        out[f"{tag}: BN + ReLU"] = _median_ms(bn_relu, repeats)
        out[f"{tag}: BN + skip + ReLU"] = _median_ms(bn_skip_relu, repeats)
        if block.has_projection:
            out[f"{tag}: proj 1x1 conv"] = _median_ms(lambda: conv(s["proj"], x, g), repeats)

            def proj_bn(inp=h, dy=g):
                s["proj_bn"].forward(inp, True)
                s["proj_bn"].backward(dy, True)

            out[f"{tag}: proj BN"] = _median_ms(proj_bn, repeats)
    return out


def _torch_parts(batch: int, repeats: int) -> dict[str, float]:
    import torch

    from tuinet.bench.torch_models import torch_cnn_model, torch_threads
    from tuinet.engine.spec import build_model
    from tuinet.engine.threads import cores

    torch_threads(cores())
    model = build_model("resnet", (28, 28, 1), 10)
    out: dict[str, float] = {}
    for block in (layer for layer in model.layers if layer.kind == "ResidualBlock"):
        tw = torch_cnn_model([block.config()], block.input_shape)[0]
        h_, w_, c = block.input_shape
        x = torch.rand(batch, c, h_, w_, requires_grad=True)
        conv1, bn1, relu, conv2, bn2 = tw.main
        with torch.no_grad():
            h = conv1(x)
        h.requires_grad_(True)
        g = torch.randn_like(h)
        skip = x if tw.proj is None else torch.rand_like(h).requires_grad_(True)
        tag = block.describe()

        def run(fn, dy=g):
            fn().backward(dy)

        a, b = torch.rand_like(x), torch.rand_like(x)

        def conv1_sum():
            run(lambda: conv1(x))
            a.add_(b)

        out[f"{tag}: conv1 3x3 + gradient sum"] = _median_ms(conv1_sum, repeats)
        out[f"{tag}: conv2 3x3"] = _median_ms(lambda: run(lambda: conv2(h)), repeats)
        out[f"{tag}: BN + ReLU"] = _median_ms(lambda: run(lambda: relu(bn1(h))), repeats)
        out[f"{tag}: BN + skip + ReLU"] = _median_ms(lambda: run(lambda: torch.relu(bn2(h) + skip)), repeats)
        if tw.proj is not None:
            pconv, pbn = tw.proj
            out[f"{tag}: proj 1x1 conv"] = _median_ms(lambda: run(lambda: pconv(x)), repeats)
            out[f"{tag}: proj BN"] = _median_ms(lambda: run(lambda: pbn(h)), repeats)
    return out


def main(argv: list[str] | None = None) -> int:
    """Alternate the two sides' processes, then print one table."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.resnet_parts", description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--side", choices=("tuinet", "pytorch"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        parts = (_tuinet_parts if args.side == "tuinet" else _torch_parts)(args.batch_size, args.repeats)
        print(json.dumps(parts))
        return 0
    runs: dict[str, list[dict[str, float]]] = {"tuinet": [], "pytorch": []}
    for _ in range(args.rounds):
        for side in runs:
            cmd = [sys.executable, "-m", "benchmarks.resnet_parts", "--side", side, "--batch-size",
                   str(args.batch_size), "--repeats", str(args.repeats)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[side].append(json.loads(res.stdout.strip().splitlines()[-1]))
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"resnet block parts, batch {args.batch_size}, forward+backward ms (median of {args.rounds} rounds x "
          f"{args.repeats} repeats), load average {load}")
    print(f"{'part':<44s} {'tuinet':>8s} {'PyTorch':>8s} {'speedup':>8s}")
    for key in runs["tuinet"][0]:
        ours = statistics.median(r[key] for r in runs["tuinet"])
        theirs = statistics.median(r[key] for r in runs["pytorch"])
        print(f"{key:<44s} {ours:8.2f} {theirs:8.2f} {theirs / max(ours, 1e-9):7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
