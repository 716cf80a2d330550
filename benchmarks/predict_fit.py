"""How well a run's weights read digits that were not made like MNIST's, through ``tuinet predict --fit``.

Run ``python -m benchmarks.predict_fit RUN [--runs-dir runs] [--count 300] [--seed 0] [--json]``. From MNIST's test set
it writes two sets of PNG files: the digits as they are, and the same digits "photographed": dark ink (80% of full
contrast) on a grainy grey page (grey 220, noise of standard deviation 6) of 160x120 pixels, three times larger and
off centre. Each set is read as ``tuinet predict`` reads images (:func:`tuinet.data.inputs.load_inputs`) with each
``--fit``, with ``--invert`` for ``stretch`` and ``pad`` on the photographed set (dark ink on light paper, as a user
would give it; ``digit`` needs none), and the run's weights classify it. Printed: the accuracy of each.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

#: the page the "photographed" digits are drawn on: size (height, width), grey level, grain, ink contrast, scale
PAGE, PAPER, GRAIN, INK, SCALE = (120, 160), 220.0, 6.0, 0.8, 3


def photographed(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An MNIST digit (28x28, light on black) as dark ink on a grainy grey page, larger and off centre (uint8)."""
    page = np.full(PAGE, PAPER) + rng.normal(0.0, GRAIN, PAGE)
    big = np.kron(digit.astype(np.float64), np.ones((SCALE, SCALE)))
    top = int(rng.integers(0, PAGE[0] - big.shape[0] + 1))
    left = int(rng.integers(0, PAGE[1] - big.shape[1] + 1))
    page[top:top + big.shape[0], left:left + big.shape[1]] -= big * INK
    return np.clip(page, 0, 255).astype(np.uint8)


def measure(run: str, runs_dir: str, count: int, seed: int) -> dict[str, float]:
    """Accuracy of ``run``'s weights on ``count`` MNIST test digits as they are and photographed, per ``--fit``."""
    from PIL import Image

    from tuinet.data import load_dataset
    from tuinet.data.inputs import FITS, load_inputs
    from tuinet.training.evaluation import checkpoint_model, resolve_checkpoint, saved_normalizer

    ckpt = resolve_checkpoint(run, runs_dir, False)
    model, norm = checkpoint_model(ckpt), saved_normalizer(ckpt)
    data = load_dataset("mnist", normalize="none")
    x, y = data.x_test[:count, :, :, 0], data.y_test[:count]
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"as they are": [], "photographed": []}
        for i, digit in enumerate(x):
            for name, pixels in (("as they are", digit.astype(np.uint8)), ("photographed", photographed(digit, rng))):
                path = Path(tmp) / f"{name[0]}{i}.png"
                Image.fromarray(pixels, mode="L").save(path)
                sets[name].append(str(path))
        for name, files in sets.items():
            for fit in FITS:
                invert = name == "photographed" and fit != "digit"
                inputs, _ = load_inputs(tuple(files), tuple(model.input_shape), None, invert=invert, fit=fit)
                pred = model.predict_proba(norm.transform(inputs)).argmax(axis=1)
                out[f"{name}, --fit {fit}{' --invert' if invert else ''}"] = float(np.mean(pred == y))
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.predict_fit", description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run name, folder or checkpoint trained on MNIST")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--count", type=int, default=300, help="MNIST test digits per set (default 300)")
    p.add_argument("--seed", type=int, default=0, help="seed of the pages' grain and placement")
    p.add_argument("--json", action="store_true", help="end with one JSON line of every accuracy")
    args = p.parse_args()
    result = measure(args.run, args.runs_dir, args.count, args.seed)
    print(f"{args.run}: accuracy on {args.count} MNIST test digits")
    for key, acc in result.items():
        print(f"  {key:<40s} {100 * acc:6.1f}%")
    if args.json:
        print(json.dumps({"run": args.run, "count": args.count, "accuracy": result}))


if __name__ == "__main__":
    main()
