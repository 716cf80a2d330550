"""Pieces every click command module shares: context settings, the ``--runs-dir`` option, one-line errors."""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.machinery
import importlib.util
import os
import sys

import click

from tuinet.errors import TuinetError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}

#: ``--runs-dir``, the same on every command that reads or writes runs
runs_dir_option = click.option("--runs-dir", help="Folder holding the runs.  [default: $TUINET_RUNS_DIR or ./runs]")


def check_thread_env() -> None:
    """One line for a bad ``TUINET_THREADS`` or ``TUINET_THREAD_MODE``, before a command starts its work."""
    from tuinet.engine.threads import check_thread_settings

    check_thread_settings()


_BLAS_TABLE = "scipy.linalg.cython_blas"


def load_blas_table() -> bool:
    """Load SciPy's table of BLAS functions (``scipy.linalg.cython_blas``) without importing ``scipy.linalg``.

    Numba's ``np.dot`` calls BLAS through that table, and Numba imports it when its compiler is first set up, even
    to load a cached kernel that calls no BLAS. ``import scipy.linalg.cython_blas`` first runs
    ``scipy/linalg/__init__.py``, which imports all of ``scipy.linalg`` and, since SciPy 1.15, its array-API layer
    (which touches every NumPy submodule, ``numpy.f2py`` included): about 0.2 s of a warm start, none of it used.
    The table is an extension module that imports nothing of its package, so it is loaded from its file under its
    own name; Numba's import (and any Cython module's) then finds it in ``sys.modules``.

    Called by the training commands once NumPy, SciPy and Numba are imported (the table's own start-up imports
    NumPy; a Ctrl-C inside NumPy's start-up must land in an ordinary import, see :mod:`tuinet.cli.entry`). A
    ``scipy.linalg`` imported later works but lacks the ``cython_blas`` attribute, which code that reads it as an
    attribute would miss (Numba and Cython modules import it by name). Returns True when the table is loaded; on
    any failure nothing is registered and Numba imports it the usual way.
    """
    if _BLAS_TABLE in sys.modules:
        return True
    try:
        if "scipy.linalg" in sys.modules:  # the package is there already: nothing to spare
            importlib.import_module(_BLAS_TABLE)
            return True
        scipy_spec = importlib.util.find_spec("scipy")
        if scipy_spec is None or not scipy_spec.submodule_search_locations:
            return False
        linalg = os.path.join(list(scipy_spec.submodule_search_locations)[0], "linalg")
        finder = importlib.machinery.FileFinder(
            linalg, (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES))
        spec = finder.find_spec(_BLAS_TABLE)
        if spec is None or spec.loader is None:
            return False
        module = importlib.util.module_from_spec(spec)
        sys.modules[_BLAS_TABLE] = module
        spec.loader.exec_module(module)
        if not getattr(module, "__pyx_capi__", None):
            raise ImportError(f"{_BLAS_TABLE} has no function table")
        return True
    except Exception:  # noqa: BLE001 - an unusual SciPy: Numba's own import still works
        sys.modules.pop(_BLAS_TABLE, None)
        return False


def friendly_errors(fn):
    """Turn TuinetError into click's one-line ``Error: ...`` with exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TuinetError as e:
            raise click.ClickException(str(e)) from None

    return wrapper


@contextlib.contextmanager
def plot_size_as_asked(plt):
    """Build plotext figures at the size asked, whatever terminal plotext finds.

    plotext fits a figure into the terminal's size, and takes 80x24 when stdout is not a terminal: `tuinet plot` and
    `tuinet compare` printed into a pipe or a file (a notebook, a CI log, ``> curves.txt``) lost most of their rows
    (18-row charts came out 6 rows tall). The limit is lifted while the figure is built and put back after.
    """
    terminal = getattr(plt, "terminal", None)
    if terminal is None or not hasattr(terminal, "limit"):  # plotext 5: no such limit
        yield
        return
    terminal.limit(False, False)
    try:
        yield
    finally:
        terminal.limit()
