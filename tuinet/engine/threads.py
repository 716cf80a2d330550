"""Who gets the cores: BLAS threads or Numba threads, chosen per model.

On two cores, OpenBLAS worker threads and Numba's OpenMP threads both spin while they wait for work; when both
pools have two threads, each steals the other's core and a training step becomes many times slower (figures in
docs/cnn.md). So only one pool is ever wider than one thread:

* dense-only models spend their time in sgemm: BLAS gets every core, Numba kernels run on one thread;
* models with convolutions spend it in Numba's direct conv kernels: Numba gets every core, BLAS one thread.
"""

from __future__ import annotations

import os

import numba
import numpy as np

from tuinet.engine import runtime
from tuinet.errors import ConfigError

#: the thread modes: the cores to BLAS, the cores to Numba, or one thread for both
MODES = ("blas", "numba", "single")


def cores() -> int:
    """Cores available to this process (``TUINET_THREADS`` overrides)."""
    env = os.environ.get("TUINET_THREADS")
    if env:
        if not env.strip().isdigit():
            raise ConfigError(f"TUINET_THREADS={env!r}: expected a whole number of threads")
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def check_thread_settings() -> None:
    """Raise ConfigError (one line) for a bad ``TUINET_THREADS`` or ``TUINET_THREAD_MODE``, before any work."""
    cores()
    mode = os.environ.get("TUINET_THREAD_MODE")
    if mode and mode not in MODES:
        raise ConfigError(f"TUINET_THREAD_MODE={mode!r}: choose blas, numba or single")


def uses_numba_parallel(model) -> bool:
    """True when the model has layers whose heavy work runs in parallel Numba kernels (convolutions)."""
    return any(getattr(layer, "numba_parallel", False) for layer in getattr(model, "all_layers", model.layers))


def configure_threads(model=None, mode: str | None = None) -> str:
    """Give the cores to BLAS or to Numba for ``model`` (call from the thread that trains); returns the mode.

    Args:
        model: the model to train; convolutional models give the cores to Numba.
        mode: force ``"blas"``, ``"numba"`` or ``"single"`` (one thread for both); ``TUINET_THREAD_MODE`` also
            forces it.
    """
    if mode is None:
        check_thread_settings()
        mode = os.environ.get("TUINET_THREAD_MODE") or None
    elif mode not in MODES:
        raise ValueError(f"thread mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode is None:
        mode = "numba" if model is not None and uses_numba_parallel(model) else "blas"
    n = cores()
    if mode == "numba":
        runtime.limit_blas_threads(1)
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    elif mode == "blas":
        runtime.limit_blas_threads(n)
        numba.set_num_threads(1)
    else:
        runtime.limit_blas_threads(1)
        numba.set_num_threads(1)
    return mode


class ThreadTuner:
    """Pick the faster of "all cores" and "one core" while training runs, and check again now and then.

    Two cores shared with a UI thread, other processes or a busy machine can make a two-thread step slower than a
    one-thread step: a parallel kernel or sgemm waits at its barrier for a thread the OS has descheduled (figures
    in docs/cnn.md). So the trainer times blocks of steps under each setting, A B A B, keeps the faster, and
    probes again every ``reprobe`` steps.

    A setting's rate is samples per step over the *median* step time of its blocks, not total samples over total
    time: a burst of other work (the app redrawing) slows a few steps a lot and would otherwise decide the probe.
    A block lasts ``block`` steps and at least ``min_block_seconds``, so on a fast small model the blocks are long
    enough to span several redraw intervals.

    Switching changes float rounding in the last bit (sgemm on one or two threads sums in another order), so for
    bit-identical reruns fix the mode: ``TUINET_THREAD_TUNING=0`` (or ``TUINET_THREAD_MODE``/``TUINET_THREADS``).

    Args:
        model: the model being trained (decides "blas" or "numba" for the multi-core setting).
        block: the fewest steps per timed block.
        rounds: blocks per setting in one probe.
        min_block_seconds: the shortest block.
        reprobe: the fewest steps between probes.
        reprobe_seconds: the shortest training time between probes (a probe spends half its steps on the slower
            setting, so probing a fast model every ``reprobe`` steps would cost a few percent).
    """

    def __init__(self, model, block: int = 10, rounds: int = 2, reprobe: int = 3000,
                 min_block_seconds: float = 0.1, reprobe_seconds: float = 30.0):
        self.wide = "numba" if uses_numba_parallel(model) else "blas"
        self.candidates = [self.wide] if cores() < 2 else [self.wide, "single"]
        self.forced = os.environ.get("TUINET_THREAD_MODE")
        if os.environ.get("TUINET_THREAD_TUNING", "1") == "0" and not self.forced:
            self.forced = self.wide  # no probing: results stay bit-for-bit reproducible run to run
        self.block, self.rounds, self.reprobe = block, rounds, reprobe
        self.min_block_seconds = min_block_seconds
        self.reprobe_seconds = reprobe_seconds
        self._since_probe_seconds = 0.0
        self.mode = self.forced or self.wide
        self._plan: list[str] = []
        self._steps: dict[str, list[float]] = {}  # step seconds per setting in this probe
        self._samples: dict[str, int] = {}  # samples in those steps
        self._steps_left = 0
        self.probing = False
        self._t = 0.0
        self._since_probe = 0
        self.last_rates: dict[str, float] = {}
        self.apply(self.mode)
        if not self.forced and len(self.candidates) > 1:
            self._start_probe()

    def apply(self, mode: str) -> None:
        """Set the thread pools for ``mode`` ("blas", "numba" or "single")."""
        configure_threads(mode=mode)

    def _start_probe(self) -> None:
        self._plan = [c for _ in range(self.rounds) for c in self.candidates]
        self._steps = {c: [] for c in self.candidates}
        self._samples = {c: 0 for c in self.candidates}
        self._next_block()

    def _next_block(self) -> None:
        self.mode = self._plan.pop(0)
        self.apply(self.mode)
        self._steps_left = self.block
        self.probing = True
        self._t = 0.0

    def record(self, seconds: float, samples: int) -> str | None:
        """Account one step; returns the chosen mode when a probe just finished, else None."""
        self._since_probe += 1
        self._since_probe_seconds += seconds
        if not self.probing:
            if not self.forced and len(self.candidates) > 1 and self._since_probe >= self.reprobe \
                    and self._since_probe_seconds >= self.reprobe_seconds:
                self._since_probe = 0
                self._since_probe_seconds = 0.0
                self._start_probe()
            return None
        self._t += seconds
        self._steps[self.mode].append(seconds)
        self._samples[self.mode] += samples
        self._steps_left = max(self._steps_left - 1, 0)
        if self._steps_left > 0 or self._t < self.min_block_seconds:
            return None
        if self._plan:
            self._next_block()
            return None
        self.last_rates = {c: (self._samples[c] / len(v)) / max(float(np.median(v)), 1e-9)
                           for c, v in self._steps.items()}
        self.mode = max(self.last_rates, key=self.last_rates.get)
        self.probing = False
        self.apply(self.mode)
        return self.mode
