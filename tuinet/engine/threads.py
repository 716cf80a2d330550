"""Who gets the cores: BLAS threads or Numba threads, chosen per model.

On two cores, OpenBLAS worker threads and Numba's OpenMP threads both spin while they wait for work; when both
pools have two threads, each steals the other's core and a training step becomes many times slower (figures in
docs/cnn.md). So only one pool is ever wider than one thread:

* dense-only models spend their time in sgemm: BLAS gets every core, Numba kernels run on one thread;
* models with convolutions spend it in Numba's direct conv kernels: Numba gets every core, BLAS one thread
  (their Dense layers' products then run on Numba's threads too, :mod:`tuinet.engine.gemm`).

Those are the defaults; while training, :class:`ThreadTuner` also times a dense model with Numba's threads and
their products (it starts there when their kernel is cached: 17-20% faster than BLAS's threads for the default
``mlp`` on two AVX-512 cores) and one thread for everything, and keeps the fastest.
"""

from __future__ import annotations

import os
from collections import deque
from statistics import median  # of a few dozen step times: 1 us where np.median takes 20 (every step)

import numba

from tuinet.engine import runtime
from tuinet.engine.fpmode import flush_denormals
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


def numba_products_apply(model) -> bool:
    """True for a model without convolutions that has layers of matrix products (``dense_products``: Dense, a
    dense residual block): the "numba" mode would run them on Numba's threads (:mod:`tuinet.engine.gemm`), a
    setting the thread tuner also tries."""
    layers = getattr(model, "all_layers", model.layers)
    return not uses_numba_parallel(model) and any(getattr(layer, "dense_products", False) for layer in layers)


_mode: str | None = None  # the mode configure_threads set last


def current_mode() -> str | None:
    """The thread mode :func:`configure_threads` set last in this process (None before the first call)."""
    return _mode


def configure_threads(model=None, mode: str | None = None) -> str:
    """Give the cores to BLAS or to Numba for ``model`` (call from the thread that trains); returns the mode.

    Args:
        model: the model to train; convolutional models give the cores to Numba.
        mode: force ``"blas"``, ``"numba"`` or ``"single"`` (one thread for both); ``TUINET_THREAD_MODE`` also
            forces it.
    """
    flush_denormals()  # in the thread that trains, and so in the Numba threads it starts (see engine/fpmode.py)
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
    global _mode
    _mode = mode
    return mode


def _numba_ready() -> bool:
    from tuinet.engine.gemm import numba_products_ready  # (imports the product kernels' module: not at import)

    return numba_products_ready()


class ThreadTuner:
    """Pick the fastest of "all cores" and "one core" while training runs, and check again now and then.

    Two cores shared with a UI thread, other processes or a busy machine can make a two-thread step slower than a
    one-thread step: a parallel kernel or sgemm waits at its barrier for a thread the OS has descheduled (figures
    in docs/cnn.md). So the trainer times blocks of steps under each setting, A B A B, keeps the faster, and
    probes again every ``reprobe`` steps.

    A setting's rate is samples per step over the *median* step time of its blocks, not total samples over total
    time: a burst of other work (the app redrawing) slows a few steps a lot and would otherwise decide the probe.
    A block lasts ``block`` steps and at least ``min_block_seconds``, so on a fast small model the blocks are long
    enough to span several redraw intervals.

    Between probes the tuner also watches for a *collapse* of the multi-core setting: when another process starts
    on the same cores, two-thread steps can become 10-100x slower at once and stay so for tens of seconds. A run
    of ``collapse_steps`` consecutive steps, each over ``collapse_factor`` times the recent median step time (per
    sample) and together lasting at least ``collapse_seconds``, switches to one thread at once (a single slow step
    such as a redraw does not). Whenever one thread is chosen (after a collapse or a probe), a short probe (one
    block per setting) checks after ``recheck_seconds`` of training whether the cores are free again; each check
    that keeps one thread doubles the wait, up to ``reprobe_seconds``.

    A dense model has two all-core settings: BLAS's threads ("blas") and Numba's, with the Dense layers' products
    on the micro-kernels of :mod:`tuinet.engine.gemm` ("numba"). A full probe (each scheduled one, and one after
    :meth:`rebase`) times both and one thread; the faster all-core one becomes :attr:`wide`, the setting the
    collapse and slowdown checks and the short probes (:attr:`wide` against one thread) work with. Until the
    first scheduled probe (after ``reprobe_seconds`` of training) the tuner knows one of the two: "numba" when its
    product kernel is in the cache (:func:`~tuinet.engine.gemm.numba_products_ready`: loading it takes 0.1-0.2 s),
    else "blas", as compiling that kernel (2.2 s, once per machine) would cost a run of a few seconds more than it
    gains. On two AVX-512 cores the default run (mlp, batch 128) trains at 134-135k samples/s on Numba's threads
    against 112-113k on BLAS's (both pinned), and a third setting in the first probe cost about what it gained.

    Switching changes float rounding in the last bit (sgemm on one or two threads sums in another order), so for
    bit-identical reruns fix the mode: ``TUINET_THREAD_TUNING=0`` (or ``TUINET_THREAD_MODE``/``TUINET_THREADS``).

    Args:
        model: the model being trained (decides "blas" or "numba" for the multi-core setting).
        numba_products: whether a dense model's probes try the "numba" setting: None as above (one of the two
            until the first scheduled probe), True both from the first probe on (starting on "blas"), False never (a
            model with convolutions: always its setting).
        block: the fewest steps per timed block.
        rounds: blocks per setting in one probe.
        min_block_seconds: the shortest block.
        reprobe: the fewest steps between probes.
        reprobe_seconds: the shortest training time between probes (a probe spends half its steps on the slower
            setting, so probing a fast model every ``reprobe`` steps would cost a few percent).
        collapse_factor: how many times the recent median a multi-core step must take to count as slow
            (``None``: no collapse detection).
        collapse_steps: consecutive slow steps that make a collapse.
        collapse_seconds: the shortest slow stretch that makes a collapse (longer than a redraw of the app).
        recheck_seconds: training time on one thread before the first short re-check.
        window: recent steps whose median is the reference.
        slowdown_factor: when the multi-core steps of the last ``slowdown_window`` seconds take on average this
            many times the last probe's time per sample, for at least ``slowdown_seconds``, a short probe (one
            block on each setting) runs at once instead of at the next scheduled probe: a competing process often
            makes two-thread training 2-4x slower, mostly in stalls, not the 10-100x steps of a collapse
            (``None``, or no collapse detection: off).
    """

    def __init__(self, model, block: int = 10, rounds: int = 2, reprobe: int = 3000,
                 min_block_seconds: float = 0.1, reprobe_seconds: float = 30.0,
                 collapse_factor: float | None = 3.0, collapse_steps: int = 3, collapse_seconds: float = 0.25,
                 recheck_seconds: float = 2.0, window: int = 31, slowdown_factor: float | None = 1.6,
                 slowdown_window: float = 0.25, slowdown_seconds: float = 0.5, numba_products: bool | None = None):
        self.wide = "numba" if uses_numba_parallel(model) else "blas"
        if not numba_products_apply(model):
            numba_products = False
        self.forced = os.environ.get("TUINET_THREAD_MODE")
        if os.environ.get("TUINET_THREAD_TUNING", "1") == "0" and not self.forced:
            self.forced = self.wide  # no probing: results stay bit-for-bit reproducible run to run
        #: an all-core setting left out of the probes until the first scheduled one (see the class doc)
        self._deferred: str | None = None
        others = [] if numba_products is False else ["numba"]
        if numba_products is None and not self.forced and cores() >= 2:
            if _numba_ready():  # a dense model starts on Numba's threads; BLAS's join the first scheduled probe
                self.wide, others, self._deferred = "numba", ["blas"], "blas"
            else:
                self._deferred = "numba"
        #: the settings a full probe may time (the all-core ones first)
        self.candidates = [self.wide] if cores() < 2 else [self.wide] + others + ["single"]
        self.wides = [c for c in self.candidates if c != "single"]  #: the all-core settings among them
        self.block, self.rounds, self.reprobe = block, rounds, reprobe
        self.min_block_seconds = min_block_seconds
        self.reprobe_seconds = reprobe_seconds
        self.collapse_factor, self.collapse_steps = collapse_factor, collapse_steps
        self.collapse_seconds, self.recheck_seconds = collapse_seconds, recheck_seconds
        self._since_probe_seconds = 0.0
        self.mode = self.forced or self.wide
        self._plan: list[str] = []
        self._steps: dict[str, list[float]] = {}  # step seconds per setting in this probe
        self._samples: dict[str, int] = {}  # samples in those steps
        self._steps_left = 0
        self.probing = False
        self._t = 0.0
        self._since_probe = 0
        self._recent: deque[float] = deque(maxlen=window)  # seconds per sample of recent multi-core steps
        self._recent_single: deque[float] = deque(maxlen=window)  # ... and of recent one-thread steps
        self._slow: list[float] = []  # the current stretch of slow steps: seconds per sample
        self._slow_seconds = 0.0
        self._recheck_wait = recheck_seconds
        self._single_seconds = 0.0  # training time on one thread since it was chosen or last re-checked
        self.last_rates: dict[str, float] = {}
        self.last_reason = ""
        self.collapses = 0
        self.slowdown_factor, self.slowdown_seconds = slowdown_factor, slowdown_seconds
        self._ref: float | None = None  # seconds per sample of multi-core steps in the last probe
        self.slowdown_window = slowdown_window
        self._latest: deque[tuple[float, float]] = deque()  # (seconds, samples) of the latest multi-core steps
        self._latest_s = self._latest_n = 0.0
        self._slowed_for = 0.0  # training time since their average went over slowdown_factor x the reference
        self.slowdowns = 0
        self.apply(self.mode)
        if self.tuning:
            self._start_probe(self.rounds)

    @property
    def tuning(self) -> bool:
        """True when the tuner may switch settings (not forced, and more than one core)."""
        return not self.forced and len(self.candidates) > 1

    def apply(self, mode: str) -> None:
        """Set the thread pools for ``mode`` ("blas", "numba" or "single")."""
        configure_threads(mode=mode)

    def rebase(self) -> None:
        """The work per step changed (the batch size): forget the step times measured so far, whose time per
        sample no longer compares (a smaller batch costs more per sample and would read as a collapse), and probe
        again, since the faster setting can differ with the batch."""
        self._recent.clear()
        self._recent_single.clear()
        self._slow, self._slow_seconds = [], 0.0
        self._clear_latest()
        self._ref = None
        if self.tuning:  # (a probe under way starts again: its blocks would mix the two sizes)
            self._start_probe(self.rounds)

    def _probe_modes(self, full: bool, scheduled: bool = False) -> list[str]:
        """The settings a probe times: a full one every candidate (a dense model's deferred all-core setting from
        the first ``scheduled`` probe on, see the class doc), a short one :attr:`wide` and one thread."""
        if not full:
            return [self.wide, "single"]
        if scheduled:
            self._deferred = None
        return [c for c in self.candidates if c != self._deferred]

    def _start_probe(self, rounds: int, by_mean: bool = False, scheduled: bool = False) -> None:
        self._by_mean = by_mean  # judge by total time (stalls count), not the median step
        modes = self._probe_modes(rounds > 1, scheduled)
        self._plan = [c for _ in range(rounds) for c in modes]
        self._steps = {c: [] for c in modes}
        self._samples = {c: 0 for c in modes}
        self._short = rounds == 1
        self._block = self.block if rounds > 1 else max(self.collapse_steps, self.block // 2)
        self._next_block()

    def _next_block(self) -> None:
        self.mode = self._plan.pop(0)
        self.apply(self.mode)
        self._steps_left = self._block
        self.probing = True
        self._t = 0.0

    def record(self, seconds: float, samples: int) -> str | None:
        """Account one step; returns the mode when a probe just finished or a collapse switched it, else None."""
        self._since_probe += 1
        self._since_probe_seconds += seconds
        if self.probing:
            return self._record_probe(seconds, samples)
        if not self.tuning:
            return None
        if self.mode != self.wide:
            self._single_seconds += seconds
            self._recent_single.append(seconds / max(samples, 1))
            if self._single_seconds >= self._recheck_wait:
                self._recheck_wait = min(self._recheck_wait * 2, self.reprobe_seconds)  # if one thread wins again
                self._start_probe(1)  # short: one block on all cores, one on one core
            return None
        if self.collapse_factor and self._collapsed(seconds / max(samples, 1), seconds):
            return self.mode
        if self.collapse_factor and self.slowdown_factor and self._slowed(seconds / max(samples, 1), seconds):
            self._start_probe(1, by_mean=True)
            return None
        if self._since_probe >= self.reprobe and self._since_probe_seconds >= self.reprobe_seconds:
            self._start_probe(self.rounds, scheduled=True)
        return None

    def _collapsed(self, per_sample: float, seconds: float) -> bool:
        """Watch one multi-core step; on a collapse switch to one thread and return True."""
        if len(self._recent) < min(8, self._recent.maxlen or 8):
            self._recent.append(per_sample)
            return False
        typical = median(self._recent)
        if per_sample <= self.collapse_factor * typical:
            self._recent.append(per_sample)
            self._slow, self._slow_seconds = [], 0.0
            return False
        self._slow.append(per_sample)  # slow steps stay out of the reference median
        self._slow_seconds += seconds
        if len(self._slow) < self.collapse_steps or self._slow_seconds < self.collapse_seconds:
            return False
        slow = median(self._slow)
        self.last_reason = (f"all-core steps collapsed to {1 / slow:,.0f} samples/s from a median of "
                            f"{1 / typical:,.0f}; one thread until the cores are free")
        self.collapses += 1
        self._slow, self._slow_seconds = [], 0.0
        self._single_seconds, self._recheck_wait = 0.0, self.recheck_seconds
        self.mode = "single"
        self.apply(self.mode)
        return True

    def _slowed(self, per_sample: float, seconds: float) -> bool:
        """True when the multi-core steps of the latest ``slowdown_window`` seconds have taken, on average (stalls
        included: a competitor often leaves most steps fast and stalls a few), over ``slowdown_factor`` times the
        last probe's time per sample, continuously for ``slowdown_seconds`` of training."""
        if self._ref is None:
            if len(self._recent) < min(8, self._recent.maxlen or 8):
                return False
            self._ref = median(self._recent)
        latest = self._latest
        latest.append((seconds, seconds / max(per_sample, 1e-30)))
        self._latest_s += seconds
        self._latest_n += latest[-1][1]
        while len(latest) > 1 and self._latest_s - latest[0][0] >= self.slowdown_window:
            s, n = latest.popleft()
            self._latest_s -= s
            self._latest_n -= n
        average = self._latest_s / max(self._latest_n, 1e-30)
        if self._latest_s < self.slowdown_window or average <= self.slowdown_factor * self._ref:
            self._slowed_for = 0.0
            return False
        self._slowed_for += seconds
        if self._slowed_for < self.slowdown_seconds:
            return False
        self.last_reason = (f"all-core steps slowed to {1 / average:,.0f} samples/s from {1 / self._ref:,.0f}; "
                            f"a short check of one thread")
        self.slowdowns += 1
        self._clear_latest()
        return True

    def _clear_latest(self) -> None:
        self._latest.clear()
        self._latest_s = self._latest_n = self._slowed_for = 0.0

    def _record_probe(self, seconds: float, samples: int) -> str | None:
        self._t += seconds
        self._steps[self.mode].append(seconds)
        self._samples[self.mode] += samples
        self._steps_left = max(self._steps_left - 1, 0)
        self.last_rates = {c: (self._samples[c] / len(v)) / max(median(v), 1e-9)
                           for c, v in self._steps.items() if v}
        if self._short and self.mode == self.wide and self.collapse_factor and self._recent_single \
                and seconds / max(samples, 1) > self.collapse_factor * median(self._recent_single):
            return self._finish_probe("single")  # the cores are still busy: no need to finish a slow block
        if self._steps_left > 0 or self._t < self.min_block_seconds:
            return None
        if self._plan:
            self._next_block()
            return None
        if self._by_mean:  # a slowdown probe: the competitor shows as stalls, which the median would hide
            mean = {c: self._samples[c] / max(sum(v), 1e-9) for c, v in self._steps.items() if v}
            return self._finish_probe(max(mean, key=mean.get))
        return self._finish_probe(max(self.last_rates, key=self.last_rates.get))

    def _finish_probe(self, mode: str) -> str:
        self.mode = mode
        wides = {c: r for c, r in self.last_rates.items() if c in self.wides}
        if mode in self.wides:
            self.wide = mode
        elif len(wides) > 1:  # one thread won: the faster all-core setting is the one to check again later
            self.wide = max(wides, key=wides.get)
        self.probing = False
        self._plan = []
        self._since_probe, self._since_probe_seconds = 0, 0.0
        rates = ", ".join(f"{k} {v:,.0f}" for k, v in self.last_rates.items())
        if self.mode != self.wide:
            self.last_reason = f"samples/s: {rates}; next check in {self._recheck_wait:g} s"
            self._single_seconds = 0.0
        else:
            self._recheck_wait = self.recheck_seconds
            self.last_reason = f"samples/s: {rates}"
        self._recent.clear()
        self._slow, self._slow_seconds = [], 0.0
        wide = self._steps.get(self.wide, [])
        self._clear_latest()
        self._ref = None
        if wide and self._samples[self.wide]:
            per = self._samples[self.wide] / len(wide)
            self._recent.extend(s / per for s in wide)  # the probe's all-core steps are the first reference
            self._ref = median(wide) / per
        self.apply(self.mode)
        return self.mode
