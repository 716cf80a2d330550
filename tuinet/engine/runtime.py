"""Process-wide runtime setup done before Numba compiles anything.

Numba's cache goes to ``$NUMBA_CACHE_DIR`` or, when the package directory is not writable, to a user cache
folder. Numba uses a thread-safe threading layer (OpenMP or TBB) so the training thread can launch parallel
kernels while the UI thread runs, and BLAS is limited so BLAS and Numba threads do not fight over the cores.

Start-up: the first kernel Numba runs in a process, even one loaded from its cache, first sets up Numba's
compiler (its typing and lowering registries: a few hundred milliseconds of imports);
:func:`tuinet.cli.common.load_blas_table` keeps that, in the command line's own process, from importing all of
``scipy.linalg`` for the one table of BLAS functions it asks for.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

_CONFIGURED = False


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".tuinet-write-probe"
        probe.write_text("")
        probe.unlink()
        return True
    except OSError:
        return False


def configure_numba_cache() -> None:
    """Point ``NUMBA_CACHE_DIR`` at a writable folder unless the user already chose one."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    package_dir = Path(__file__).resolve().parent
    if _writable(package_dir / "__pycache__"):
        return
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    for candidate in (Path(base) / "tuinet" / "numba", Path(tempfile.gettempdir()) / "tuinet-numba"):
        if _writable(candidate):
            os.environ["NUMBA_CACHE_DIR"] = str(candidate)
            return


_WIDE = False


def configure_vector_width() -> bool:
    """Let LLVM use 512-bit vectors on CPUs with AVX-512; True when it will.

    LLVM's tuning for most AVX-512 CPUs (Skylake-X to Emerald Rapids) includes ``prefer-256-bit``: its
    vectorizers then build 256-bit vectors, and Numba kernels reach at most half the FMA peak. Numba compiles for
    the host's CPU name and features (``NUMBA_CPU_FEATURES`` when set), so on an AVX-512 host the host's feature
    string is given with ``-prefer-256-bit`` added. A user who sets ``NUMBA_CPU_NAME`` or ``NUMBA_CPU_FEATURES``
    keeps exactly what they set. The feature string is part of the key of every entry in Numba's cache, so
    kernels compiled either way are never mixed up. Must run before Numba first compiles or loads a kernel.
    """
    if os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES"):
        feats = os.environ.get("NUMBA_CPU_FEATURES", "")
        return "+avx512f" in feats and "-prefer-256-bit" in feats
    try:
        import llvmlite.binding as ll

        feats = ll.get_host_cpu_features().flatten()
    except Exception:  # noqa: BLE001 - an unknown host: leave Numba's defaults
        return False
    if "+avx512f" not in feats.split(","):
        return False
    os.environ["NUMBA_CPU_FEATURES"] = feats + ",-prefer-256-bit"
    return True


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
KEEP_FREED_BYTES = 256 << 20  #: freed heap memory glibc keeps for reuse instead of returning it to the system
MMAP_THRESHOLD = 32 << 20  #: allocations up to this size come from the heap (glibc's largest allowed value)


def configure_allocator() -> bool:
    """Keep freed activation arrays' memory in the process for the next step (glibc only); True when set.

    A training step allocates its activations and gradients afresh (12.8 MB each for a 256 x 28 x 28 x 16
    layer) and frees them at its end. glibc returns the top of its heap to the system once more than about twice
    its (adaptive) mmap threshold is free, which happened every step, so every array of the next step was fresh
    memory: 1,100 page faults a step for the ``cnn`` preset at batch 256 and 2,000 for ``resnet``, each fresh
    12.8 MB array 8.8 ms to fill instead of 1.9. With arrays up to 32 MB taken from the heap and up to 256 MB of
    freed memory kept, the faults go (0 and about 80 a step). ``MALLOC_*`` variables set by the user win.
    """
    import platform
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") or os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                    and libc.mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
    except (OSError, AttributeError):
        return False


#: bytes to which the arrays Numba allocates (np.empty, np.zeros in a kernel) are aligned: a cache line, one 512-bit
#: vector
ARRAY_ALIGNMENT = 64


def configure_array_alignment() -> bool:
    """Align the arrays the kernels allocate to 64 bytes (Numba's default is 32, for AVX's 256-bit vectors).

    With 512-bit vectors a 32-byte-aligned work buffer makes every vector load and store of it span two cache
    lines. Which buffers were aligned changed with the allocator's state: the part a Numba worker thread ran
    mostly got aligned ones, the part the main thread ran mostly not, and the main thread's part of a Winograd
    pass took 10-25% longer than the worker's on the same work (a ``resnet`` step at batch 256 about 4% slower).
    Numba asks its target context for the alignment when it compiles an allocation, so this must run before the
    kernels compile; their cache entries carry the engine's source stamp, so ones compiled with another alignment
    are not loaded. Returns True when set."""
    from numba.core import base

    current = base.BaseContext.get_preferred_array_alignment
    if getattr(current, "tuinet", False):
        return True

    def preferred(context, ty):
        return max(ARRAY_ALIGNMENT, current(context, ty))

    preferred.tuinet = True  # type: ignore[attr-defined]
    base.BaseContext.get_preferred_array_alignment = preferred
    return True


_SAVE_LOCK = ".tuinet-cache-save.lock"


def configure_cache_lock() -> bool:
    """Make Numba's cache writes safe between processes (POSIX only); True when done.

    Numba saves a kernel by reading the function's index file, adding the new entry (named after the first free
    data-file number) and writing the index and the data file, each atomically but not together. Two processes
    saving two signatures of one function at once can both pick the same data-file name, and the index then points
    one signature at the other's machine code. tuinet can compile in two processes at once (the compile helper of
    :mod:`tuinet.engine.precompile`, parallel sweep trials), so every save takes an exclusive ``flock`` on one lock
    file in the cache folder for its read-modify-write. Loads need no lock (each file is replaced atomically).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return False
    from numba.core import caching

    cls = caching.IndexDataCacheFile
    if getattr(cls.save, "_tuinet_locked", False):
        return True
    unlocked = cls.save

    def save(self, key, data):
        try:
            fd = os.open(os.path.join(self._cache_path, _SAVE_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return unlocked(self, key, data)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return unlocked(self, key, data)
        finally:
            os.close(fd)  # closing releases the lock

    save._tuinet_locked = True
    cls.save = save
    return True


def source_tree_stamp(root: str | os.PathLike) -> str:
    """A sha256 over every ``.py`` file under ``root``: relative paths and contents."""
    root = Path(root)
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


class _TreeStampedLocator:
    """A Numba cache locator whose source stamp is its own (the function's file) plus a source tree's stamp."""

    def __init__(self, inner, tree_stamp: str):
        self._inner = inner
        self._tree_stamp = tree_stamp

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def get_source_stamp(self):
        return (self._inner.get_source_stamp(), self._tree_stamp)


@functools.lru_cache(maxsize=None)
def tree_cache_class(root: str):
    """The Numba function-cache class of :func:`cache_with_tree` for the source tree ``root`` (one per process and
    tree: the tree's stamp is computed once)."""
    from numba.core import caching

    stamp = source_tree_stamp(root)

    class _Impl(caching.CompileResultCacheImpl):
        def __init__(self, py_func):
            super().__init__(py_func)
            self._locator = _TreeStampedLocator(self._locator, stamp)

    class TreeStampedCache(caching.FunctionCache):
        _impl_class = _Impl

    return TreeStampedCache


def cache_with_tree(dispatcher, root: str | os.PathLike):
    """Turn on Numba's on-disk cache for ``dispatcher`` (made without ``cache=True``), valid only while no source
    file under ``root`` changes; returns the dispatcher.

    Numba checks a cached kernel against its own source file only, but a kernel also holds the code of every
    kernel it calls and of the code generators it uses, from other files: after an update that changes
    ``conv/microkernels.py`` (the tile shapes) but not ``conv/kernels.py``, Numba loaded the old tiles' kernels
    while the Python side laid out buffers for the new ones, and the process crashed. With the whole engine's
    stamp in every kernel's, any change to the engine's sources recompiles its kernels. (Numba keeps the stamp
    in each function's index file and drops the index when the stamp differs.) Falls back to Numba's own cache
    if its internals are not the expected ones.
    """
    try:
        dispatcher._cache = tree_cache_class(os.path.abspath(root))(dispatcher.py_func)
    except (AttributeError, TypeError):  # pragma: no cover - another Numba's cache classes
        dispatcher.enable_caching()
    return dispatcher


#: the engine's sources, whose stamp every tuinet kernel's cache entry carries (:func:`cache_with_tree`)
ENGINE_DIR = str(Path(__file__).resolve().parent)


def wide_vectors() -> bool:
    """True when Numba compiles tuinet's kernels with 512-bit vectors (see :func:`configure_vector_width`)."""
    configure()
    return _WIDE


def configure() -> None:
    """Configure the Numba cache, vector width and threading layer; safe to call many times."""
    global _CONFIGURED, _WIDE
    if _CONFIGURED:
        return
    _CONFIGURED = True
    configure_numba_cache()
    _WIDE = configure_vector_width()
    configure_allocator()
    configure_array_alignment()
    os.environ.setdefault("NUMBA_THREADING_LAYER", "threadsafe")
    import numba

    numba.config.THREADING_LAYER = os.environ["NUMBA_THREADING_LAYER"]
    configure_cache_lock()
    if os.environ.get("NUMBA_CPU_FEATURES"):
        numba.config.CPU_FEATURES = os.environ["NUMBA_CPU_FEATURES"]


_blas_limiter = None


def limit_blas_threads(n: int | None = None) -> None:
    """Limit BLAS (OpenBLAS/MKL) to ``n`` threads (default: all cores), kept for the life of the process."""
    global _blas_limiter
    from threadpoolctl import threadpool_limits

    if n is None:
        n = os.cpu_count() or 1
    _blas_limiter = threadpool_limits(limits=n, user_api="blas")


@contextmanager
def watch_compiles(callback, prefix: str = "tuinet", on_compile=None):
    """Call ``callback(kernel_name, kernels_done)`` each time Numba starts compiling a kernel in this thread.

    Only kernels whose module starts with ``prefix`` are reported (Numba's own overloads compile inside them);
    loads from Numba's cache are not compiles and are not reported. Kernels that others call compile inside
    their caller's compilation, so the name is the innermost kernel being compiled; ``kernels_done`` counts the
    reported compilations finished so far. Used by the trainer to say, live, what its first step is compiling.
    ``on_compile(dispatcher, argument_types)``, when given, is called first for each such kernel that starts
    compiling at the top level (called from Python, not inside another kernel's compilation).
    """
    from numba.core import event

    thread = threading.get_ident()

    def ours(ev) -> object | None:
        py = getattr(ev.data.get("dispatcher"), "py_func", None)
        if threading.get_ident() == thread and (getattr(py, "__module__", None) or "").startswith(prefix):
            return py
        return None

    class _Watch(event.Listener):
        done = 0
        depth = 0

        def on_start(self, ev):
            if threading.get_ident() != thread:
                return
            self.depth += 1
            py = ours(ev)
            if py is not None:
                if on_compile is not None and self.depth == 1:
                    on_compile(ev.data["dispatcher"], tuple(ev.data.get("args") or ()))
                callback(py.__qualname__, self.done)

        def on_end(self, ev):
            if threading.get_ident() != thread:
                return
            self.depth -= 1
            if ours(ev) is not None:
                self.done += 1

    with event.install_listener("numba:compile", _Watch()):
        yield
