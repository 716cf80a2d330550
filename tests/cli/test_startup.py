"""A headless training run imports only what its first steps need: the app, the sweeps, their libraries and all of
``scipy.linalg`` stay out (their imports cost a warm start most of a second; see benchmarks/startup.py), and a
dense model's run imports none of the convolutional layers (about 40 ms)."""

from __future__ import annotations

import json
import subprocess
import sys

#: modules a headless run of a dense model must not import (the app and its libraries, sweeps, the web server,
#: SciPy's linalg, the convolutional layers)
NOT_NEEDED = ("textual", "optuna", "plotext", "PIL", "apprise", "aiohttp", "textual_serve", "scipy.linalg",
              "tuinet.app", "tuinet.sweep", "tuinet.remote", "tuinet.cli.serve", "tuinet.cli.sweep",
              "tuinet.cli.compare", "tuinet.cli.runs", "tuinet.engine.conv", "tuinet.engine.norm",
              "tuinet.engine.residual", "tuinet.engine.cnn_specs")
#: SciPy's BLAS table is loaded on its own, without its package (see tuinet.cli.common.load_blas_table)
ALLOWED = ("scipy.linalg.cython_blas",)

SCRIPT = """
import json, sys
from tuinet.cli.entry import run
sys.argv[0] = "tuinet"
try:
    run()
except SystemExit as e:
    code = e.code
else:
    code = 0
found = sorted(m for m in sys.modules if m.split(".")[0] in {n.split(".")[0] for n in NOT_NEEDED})
print(json.dumps({"code": code, "modules": found}), file=sys.stderr)
"""


def test_headless_dense_training_imports_no_app_sweep_scipy_linalg_or_convolutions(tmp_path):
    args = ["train", "--headless", "--json", "--dataset", "spiral", "--model", "16", "--epochs", "1",
            "--runs-dir", str(tmp_path)]
    out = subprocess.run([sys.executable, "-c", f"NOT_NEEDED = {NOT_NEEDED!r}\n" + SCRIPT, *args],
                         capture_output=True, text=True, timeout=300, check=False)
    report = json.loads(out.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, out.stderr[-2000:]
    assert any(json.loads(line)["event"] == "finished" for line in out.stdout.splitlines() if line.startswith("{"))
    loaded = [m for m in report["modules"]
              if m not in ALLOWED and any(m == n or m.startswith(n + ".") for n in NOT_NEEDED)]
    assert loaded == []


def test_every_command_is_listed_and_found(tmp_path):
    """The command line imports a command's module only when it runs: each name in the table finds its command."""
    import click

    from tuinet.cli.group import COMMANDS, main

    ctx = click.Context(main)
    assert main.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        cmd = main.get_command(ctx, name)
        assert isinstance(cmd, click.Command) and cmd.name == name
    assert main.get_command(ctx, "no-such-command") is None


BLAS_SCRIPT = """
import sys
import numpy as np
from numba import njit
from tuinet.cli.common import load_blas_table
assert load_blas_table()

@njit
def dot(a, b):
    return np.dot(a, b)

rng = np.random.default_rng(0)
a, b = rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal((7, 3)).astype(np.float32)
assert np.allclose(dot(a, b), a @ b, rtol=1e-5, atol=1e-5)
assert "scipy.linalg" not in sys.modules
from scipy.linalg import cython_blas, solve  # importing the whole package later still works
assert cython_blas is sys.modules["scipy.linalg.cython_blas"] and solve(np.eye(2), np.ones(2)).tolist() == [1, 1]
print("ok")
"""


def test_blas_table_loads_without_scipy_linalg_and_numba_dot_uses_it():
    """Numba finds SciPy's BLAS table loaded on its own (no ``scipy.linalg`` import) and ``np.dot`` runs on it."""
    out = subprocess.run([sys.executable, "-c", BLAS_SCRIPT], capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


LAZY_SCRIPT = """
import sys
import tuinet.engine
from tuinet.engine.layers import Layer
assert "tuinet.engine.conv" not in sys.modules
layer = Layer.from_config({"type": "Conv2D", "filters": 4, "kernel_size": 3})  # a checkpoint's layer
assert type(layer).__name__ == "Conv2D"
print("ok")
"""


def test_convolutional_layers_and_presets_load_when_first_asked_for():
    """Not imported up front, the convolutional layers still come when a checkpoint, a preset or a spec names
    them, each in a fresh process."""
    from_config = subprocess.run([sys.executable, "-c", LAZY_SCRIPT], capture_output=True, text=True, timeout=300)
    assert from_config.returncode == 0 and from_config.stdout.strip() == "ok", from_config.stderr[-2000:]
    for spec, first in (("resnet", "Conv2D"), ("conv8k3,relu,maxpool2,flatten", "Conv2D")):
        code = ("import sys; from tuinet.engine import build_model; "
                f"m = build_model({spec!r}, (28, 28, 1), 10); print(m.layers[0].kind)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and out.stdout.strip() == first, out.stderr[-2000:]
