"""The headless printer says once that kernels compile; the per-kernel reports are for the app's live screen."""

from __future__ import annotations

import io

from tuinet.protocol import make_event
from tuinet.training.console import ConsolePrinter


def test_compiling_is_one_line_however_many_kernels_compile():
    out = io.StringIO()
    printer = ConsolePrinter(out, tty=False)
    printer(make_event("compiling", message="compiling kernels"))
    for i, name in enumerate(["conv2d_forward", "_panel_gemm", "_mk3x32"]):
        printer(make_event("compiling", message=f"compiling {name}", kernel=name, kernels_done=i, elapsed=i * 3.0))
    printer(make_event("compiled", seconds=9.5))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("compiling kernels") and lines[1] == "kernels ready in 9.5 s"
