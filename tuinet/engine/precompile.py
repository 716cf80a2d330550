"""Helper processes that compile a model's kernels while the first training step compiles them too.

Numba compiles one kernel at a time in a process (a global compiler lock), so a first run's compile keeps one
core busy however many the machine has: 30-40 s of a convolutional model's first step on one core of two. The
trainer therefore starts a helper process as soon as its first step starts compiling (:class:`CompileHelper`; one
per core beyond the trainer's, up to :data:`MAX_HELPERS`, which share the work through exclusive claims).
The helper builds the same model and optimizer and runs one training step, one evaluation and the trainer's
finiteness check with tuinet's kernels *recorded, not run* (:func:`record_kernel_calls`: each kernel and its
argument types, in call order), then compiles that list **from its end** into Numba's on-disk cache, while the
trainer compiles from its beginning, as its step calls the kernels. Each kernel the trainer then reaches that the
helper has compiled is a cache load (tens of milliseconds) instead of a compile. The two meet near the middle:
the trainer marks each kernel it is about to compile or load (a file in the helper's folder) and the helper stops
when it reaches one so marked; a kernel the helper is compiling at that moment, the trainer waits for and loads
(rather than compile it a second time beside the helper).

Nothing depends on the helper: it only fills Numba's cache, with the same code the trainer would compile (same
source, same CPU features: the cache's own key checks both). If it fails, is slow or is stopped, the trainer
compiles what is missing itself. It is stopped when the first step and the pictures after it are done, and it stops
by itself when the trainer's process is gone (removing its folder, which the trainer would otherwise remove).
``TUINET_COMPILE_HELPER=0`` turns it off; it is never started on a single core.

The helper runs :func:`main` with a folder holding ``job.json`` (what to build, see :meth:`CompileHelper.job_for`)
and its marks; ``TUINET_COMPILE_HELPER_LOG=FILE`` keeps a copy of its log (what it compiled, when, how long).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable

ENV = "TUINET_COMPILE_HELPER"  #: "0" turns the helper off
MAX_HELPERS = 3  #: helper processes at most (one per core beyond the trainer's): a first step has 15-25 kernels


@functools.lru_cache(maxsize=None)
def _stand_in(py_func) -> tuple[bool, Any]:
    """What a recorded (not run) call of a kernel returns: ``(True, value)`` with a stand-in for the value its
    Python source returns (0 for an arithmetic or comparison result, a tuple of as many 0s as the tuple it
    returns), ``(False, None)`` when it returns nothing; a kernel returning anything else (a variable: perhaps an
    object the caller hands on) or whose source cannot be read is run (``(True, RUN)``)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(py_func)))
    except (OSError, TypeError, SyntaxError):
        return True, RUN
    body = tree.body[0]
    found: list[ast.expr] = []

    class _Find(ast.NodeVisitor):
        def visit_Return(self, node):
            if node.value is not None and not (isinstance(node.value, ast.Constant) and node.value.value is None):
                found.append(node.value)

        def visit_FunctionDef(self, node):  # a nested function's returns are its own
            if node is body:
                self.generic_visit(node)

        visit_Lambda = visit_AsyncFunctionDef = visit_FunctionDef

    _Find().visit(body)
    if not found:
        return False, None
    value = found[0]
    if isinstance(value, ast.Tuple):
        return True, (0,) * len(value.elts)
    if isinstance(value, (ast.BinOp, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.Constant)):
        return True, 0  # a number or a truth value
    return True, RUN  # perhaps an object the caller hands on (a typed list): the real one


RUN = object()  #: a stand-in meaning "run the kernel"


@functools.lru_cache(maxsize=None)
def _star_at(py_func) -> int | None:
    """The position of a kernel's ``*args`` parameter, or None."""
    params = list(inspect.signature(py_func).parameters.values())
    for i, p in enumerate(params):
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            return i
    return None


def _ours(dispatcher) -> bool:
    return (getattr(getattr(dispatcher, "py_func", None), "__module__", None) or "").startswith("tuinet")


def entry_key(dispatcher, args) -> str:
    """A file-name-safe key of one compilation: the kernel's module and name and its argument types."""
    py = dispatcher.py_func
    text = f"{py.__module__}.{py.__qualname__}{tuple(args)}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def record_kernel_calls(fn: Callable[[], Any]) -> list[tuple[Any, tuple]]:
    """Run ``fn()`` with tuinet's kernels recorded instead of run; returns ``[(dispatcher, argument types)]`` in
    the order of their first call, each compilation once.

    Arrays the kernels would write stay as they were; a kernel that returns a value (a loss, a check) returns 0
    instead (or a tuple of 0s), enough for the Python code around it to go on. A part kernel handed to a
    parallel launcher (:class:`~tuinet.engine.parts.PartKernel`) is recorded right after its launcher, as
    the trainer compiles it. An exception in ``fn`` ends the recording there (what was recorded is kept).
    Calls from other threads run as usual.
    """
    from numba.core.registry import CPUDispatcher

    from tuinet.engine.parts import PartKernel

    calls: list[tuple[Any, tuple]] = []
    seen: set[str] = set()
    me = threading.get_ident()
    real = CPUDispatcher.__call__

    def add(dispatcher, args) -> None:
        key = entry_key(dispatcher, args)
        if key not in seen:
            seen.add(key)
            calls.append((dispatcher, args))

    def record(self, *args, **kws):
        if kws or threading.get_ident() != me or not _ours(self):
            return real(self, *args, **kws)
        returns, value = _stand_in(self.py_func)
        if value is RUN:
            return real(self, *args, **kws)
        star = _star_at(self.py_func)
        folded = args if star is None else (*args[:star], tuple(args[star:]))  # as Numba's dispatcher folds them
        add(self, tuple(self.typeof_pyval(a) for a in folded))
        for a in args:
            if isinstance(a, PartKernel) and a.signature() is not None:
                add(a.dispatcher, tuple(a.signature().args))
        return value if returns else None

    CPUDispatcher.__call__ = record  # a class attribute: Python calls of every dispatcher go through it
    try:
        import numpy as np

        with np.errstate(all="ignore"):
            fn()
    except Exception:  # noqa: BLE001 - the step ran on unset arrays; what was recorded is what it reached
        pass
    finally:
        del CPUDispatcher.__call__
    return calls


def first_step_kernels(job: dict[str, Any]) -> list[tuple[Any, tuple]]:
    """The kernels (with argument types) of the first training step, evaluation and checks of ``job``'s run, and
    the optimizer's one-thread kernel."""
    import numba
    import numpy as np

    from tuinet.engine import kernels as K
    from tuinet.engine.optim import make_optimizer
    from tuinet.engine.spec import build_model
    from tuinet.engine.threads import configure_threads

    model = build_model(job["model"], tuple(job["input_shape"]), job["num_outputs"], task=job["task"],
                        activation=job["activation"], dropout=job["dropout"], l1=job["l1"], l2=job["l2"],
                        seed=job["seed"], features=job["features"])
    optimizer = make_optimizer(job["optimizer"], model.params, lr=job["lr"], **job["hyper"])
    configure_threads(model, mode=job["thread_mode"])
    n = job["batch_size"]
    x = np.zeros((n, *job["input_shape"]), job["x_dtype"])
    y = np.zeros((n, *job["y_shape"]), job["y_dtype"])

    augmenter = None
    if job.get("augment"):  # the trainer augments each batch before its step (engine/augment.py)
        from types import SimpleNamespace

        from tuinet.engine.augment import Augmenter

        channels = job["input_shape"][-1] if len(job["input_shape"]) == 3 else 1
        augmenter = Augmenter(SimpleNamespace(**job["augment"]), tuple(job["input_shape"]), np.zeros(channels), 0)

    def step() -> None:
        if augmenter is not None:
            augmenter(x)
        model.compute_gradients(x, y)
        optimizer.step(model.grads)
        threads = numba.get_num_threads()
        if threads > 1:  # the optimizer's one-thread kernel too (the thread tuner may switch to it later)
            numba.set_num_threads(1)
            try:
                optimizer.step(model.grads)
            finally:
                numba.set_num_threads(threads)
        for p in model.params:
            K.all_finite(p.reshape(-1))
        if model.is_classifier:
            model.predict_proba(x)
        model.evaluate(x, y)

    return record_kernel_calls(step)


def compile_from_end(calls: list[tuple[Any, tuple]], folder: Path, parent: int) -> int:
    """Compile ``calls`` last first, until one the trainer has started (``main-KEY`` in ``folder``) or the
    trainer's process ``parent`` is gone; returns how many were compiled or loaded.

    Each is claimed first (``start-KEY``, created exclusively: one another helper has claimed is skipped; then the
    trainer's mark is checked: of two processes that each write their mark and then look for the other's, at least
    one sees the other) and marked ``done-KEY`` once in Numba's cache.
    """
    done = 0
    for dispatcher, args in reversed(calls):
        key = entry_key(dispatcher, args)
        start = folder / f"start-{key}"
        try:
            os.close(os.open(start, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:  # another helper's
            continue
        if (folder / f"main-{key}").exists() or os.getppid() != parent:
            start.unlink()
            break
        t0 = time.perf_counter()
        try:
            dispatcher.compile(args)
        except Exception as e:  # noqa: BLE001 - the trainer compiles this one itself
            start.unlink()
            print(f"{dispatcher.py_func.__qualname__}: {type(e).__name__}: {e}", flush=True)
            continue
        (folder / f"done-{key}").touch()
        print(f"{time.time():.2f} {time.perf_counter() - t0:6.2f} s {dispatcher.py_func.__qualname__}", flush=True)
        done += 1
    return done


_before_compile: Callable[[Any, tuple], None] | None = None  # set while a helper runs (CompileHelper.start)


def before_compile(dispatcher, args) -> None:
    """Called before this process compiles (or loads) ``dispatcher`` for ``args`` outside Numba's own call path
    (:class:`~tuinet.engine.parts.PartKernel`): with a helper running, waits for the helper when it is
    compiling that very kernel."""
    hook = _before_compile
    if hook is not None:
        hook(dispatcher, args)


def _die_with_parent() -> None:
    """Linux: have the kernel send this process SIGTERM when the process that started it dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def remove_if_orphaned(folder: Path, parent: int) -> bool:
    """Remove the helpers' ``folder`` when their trainer (process ``parent``) is gone (killed, or ended without
    stopping them: nobody else would); True when removed."""
    if os.getppid() == parent:
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0])
    job = json.loads((folder / "job.json").read_text())
    parent = job["parent"]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C in the terminal is the trainer's to handle

    def on_sigterm(signum, frame):
        # PR_SET_PDEATHSIG: the trainer's thread that started this process has ended without stopping it (the
        # trainer stops its helpers with SIGKILL before that thread ends), so nobody else will remove the folder.
        # (The process may not look gone yet: when a thread of a dying process ends first, the kernel hands its
        # children to another thread of the same process, which getppid() cannot tell apart.)
        shutil.rmtree(folder, ignore_errors=True)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    _die_with_parent()
    try:
        if os.getppid() == parent:
            calls = first_step_kernels(job)
            (folder / "planned").write_text(str(len(calls)))
            compile_from_end(calls, folder, parent)
    finally:
        # done (or failed): wait, idle, for the trainer to stop this process and remove the folder; if the trainer
        # ends first (killed, or without stopping its helpers), remove it here
        while os.getppid() == parent:
            time.sleep(0.2)
        remove_if_orphaned(folder, parent)
    return 0


class CompileHelper:
    """The trainer's side: start the helper once its first step compiles, mark what it compiles, stop the helper.

    Args:
        job: what the helper builds (:meth:`job_for`).
    """

    def __init__(self, job: dict[str, Any]):
        self.job = job
        self.folder: Path | None = None
        self.procs: list[subprocess.Popen] = []

    @staticmethod
    def count() -> int:
        """How many helper processes to start: one per core beyond the trainer's, at most :data:`MAX_HELPERS`."""
        from tuinet.engine.threads import cores

        return max(1, min(cores() - 1, MAX_HELPERS))

    @property
    def started(self) -> bool:
        return bool(self.procs)

    def alive(self) -> bool:
        """True while at least one helper process runs."""
        return any(p.poll() is None for p in self.procs)

    @staticmethod
    def enabled() -> bool:
        """False when ``TUINET_COMPILE_HELPER=0`` or on a single core."""
        from tuinet.engine.threads import cores

        if os.environ.get(ENV, "1").strip() in ("0", "false", "no", "off"):
            return False
        try:
            return cores() >= 2
        except Exception:  # noqa: BLE001 - a bad TUINET_THREADS is reported elsewhere
            return False

    @staticmethod
    def job_for(config, data, thread_mode: str | None, augment: dict[str, Any] | None = None) -> dict[str, Any]:
        """The job of a trainer's run: its model, optimizer, batch and data shapes, and its augmentation's setting
        (``shift``, ``rotate``, ...; None: none) (JSON)."""
        return {
            "model": config.model, "input_shape": list(data.input_shape), "num_outputs": data.num_outputs,
            "task": data.task, "activation": config.activation, "dropout": config.dropout, "l1": config.l1,
            "l2": config.l2, "seed": config.seed,
            "features": config.features.split(",") if config.features else None, "augment": augment,
            "optimizer": config.optimizer, "lr": config.lr, "hyper": config.optimizer_hyperparams(),
            "batch_size": int(min(config.batch_size, len(data.x_train))), "thread_mode": thread_mode,
            "x_dtype": str(data.x_train.dtype), "y_dtype": str(data.y_train.dtype),
            "y_shape": list(data.y_train.shape[1:]), "parent": os.getpid(),
        }

    def start(self) -> bool:
        """Start the helper processes (once: :meth:`count` of them, which share the list from its end); False when
        none could be started. From then until :meth:`stop`, this thread's compilations from Python (Numba's
        dispatcher) and of part kernels wait for a helper that is compiling the same kernel (:meth:`wait_for`)."""
        if self.procs or self.folder is not None:
            return bool(self.procs)
        try:
            self.folder = Path(tempfile.mkdtemp(prefix="tuinet-compile-"))
            (self.folder / "job.json").write_text(json.dumps(self.job))
            root = str(Path(__file__).resolve().parents[2])  # this tuinet, installed or not (a sweep's worker)
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
            for i in range(self.count()):
                with open(self.folder / f"helper-{i}.log", "wb") as log:
                    self.procs.append(subprocess.Popen([sys.executable, "-c", _HELPER_MAIN, str(self.folder)],
                                                       stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                                       start_new_session=True))
        except (OSError, TypeError, ValueError):
            if not self.procs:
                return False
        self._install_wait()
        return True

    def _install_wait(self) -> None:
        global _before_compile
        from numba.core.registry import CPUDispatcher

        thread = threading.get_ident()

        def hook(dispatcher, args) -> None:
            if threading.get_ident() == thread:
                self.wait_for(dispatcher, args)

        _before_compile = hook
        real = getattr(CPUDispatcher, "_compile_for_args", None)
        if real is None:  # another Numba: its calls compile without waiting (the helper still fills the cache)
            return

        def compile_for_args(dispatcher, *args, **kws):  # the dispatcher's path from a Python call to a compile
            if threading.get_ident() == thread and not kws:
                try:
                    hook(dispatcher, tuple(dispatcher.typeof_pyval(a) for a in args))
                except Exception:  # noqa: BLE001 - never in the way of the call itself
                    pass
            return real(dispatcher, *args, **kws)

        CPUDispatcher._compile_for_args = compile_for_args

    def _remove_wait(self) -> None:
        global _before_compile
        from numba.core.registry import CPUDispatcher

        if "_compile_for_args" in CPUDispatcher.__dict__:
            del CPUDispatcher._compile_for_args
        _before_compile = None

    def mark(self, dispatcher, args) -> None:
        """The trainer starts compiling ``dispatcher`` for ``args``: the helper stops when it gets there."""
        if self.folder is not None and _ours(dispatcher):
            try:
                (self.folder / f"main-{entry_key(dispatcher, args)}").touch()
            except OSError:
                pass

    def wait_for(self, dispatcher, args, timeout: float = 600.0) -> bool:
        """Mark ``dispatcher`` for ``args`` as the trainer's; if the helper is compiling it right now, wait until it
        is in the cache (or the helper is gone) and return True, so the trainer loads it instead of compiling it
        a second time at once."""
        if self.folder is None or not self.procs or not _ours(dispatcher):
            return False
        self.mark(dispatcher, args)
        key = entry_key(dispatcher, args)
        start, done = self.folder / f"start-{key}", self.folder / f"done-{key}"
        waited = False
        t_end = time.monotonic() + timeout
        while start.exists() and not done.exists() and self.alive() and time.monotonic() < t_end:
            waited = True
            time.sleep(0.02)
        return waited

    def done(self) -> int:
        """How many kernels the helper has put into the cache so far."""
        if self.folder is None:
            return 0
        try:
            return sum(1 for p in self.folder.iterdir() if p.name.startswith("done-"))
        except OSError:
            return 0

    def stop(self) -> int:
        """Stop the helpers (those still running) and remove their folder; returns how many kernels they compiled."""
        n = self.done()
        if self.procs:
            self._remove_wait()
            for p in self.procs:
                if p.poll() is None:  # at once, even inside a compile: the cache's files are each written whole
                    p.kill()  # (a temporary file renamed) and its save lock goes with the process
            for p in self.procs:
                p.wait()
            self.procs = []
        if self.folder is not None:
            if os.environ.get("TUINET_COMPILE_HELPER_LOG"):
                with open(os.environ["TUINET_COMPILE_HELPER_LOG"], "wb") as out:
                    for log in sorted(self.folder.glob("helper-*.log")):
                        out.write(f"# {log.name}\n".encode() + log.read_bytes())
            shutil.rmtree(self.folder, ignore_errors=True)
        return n


#: the helper process's program (``-m`` would run this module a second time, as ``__main__``, beside the copy that
#: importing the engine has already loaded)
_HELPER_MAIN = "import sys; from tuinet.engine.precompile import main; sys.exit(main(sys.argv[1:]))"
