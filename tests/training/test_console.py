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


def test_the_ready_line_says_what_the_compile_helper_did():
    out = io.StringIO()
    printer = ConsolePrinter(out, tty=False)
    printer(make_event("compiled", seconds=21.5, helper_kernels=6))
    printer(make_event("compiled", seconds=0.2, helper_kernels=0))
    assert out.getvalue().splitlines() == ["kernels ready in 21.5 s (6 compiled by the compile helper)",
                                           "kernels ready in 0.2 s"]
