"""Parallel kernels as serial "part" kernels run by small parallel launchers, so each compiles once.

A ``parallel=True`` kernel builds its ``prange`` body into a gufunc, and Numba links the optimized code of every
function the body calls into the gufunc's LLVM module and again into the kernel's own, then optimizes and emits
each module in full: a kernel whose parallel loop calls a large helper costs two to three times the compile of the
same code serial (the convolutions' passes 8.1 vs 2.6 and 10.9 vs 3.9 s, BatchNorm's backward pass 7.0 vs 3.4 s).
Instead, the loop's body is a serial part kernel ``part(p, args)`` (part ``p`` of the work, its arguments as one
tuple) compiled on its own, and a launcher made by :func:`make_launcher` runs it once per part, calling it through
its address (:class:`PartKernel`, a Numba first-class function): the launcher's modules hold no code of the part.
:func:`run_parts` is the call from Python.
"""

from __future__ import annotations

import numba
import numba.experimental.function_type  # noqa: F401  (registers the Numba type of a PartKernel)
import numpy as np
from numba import prange, types
from numba.core.errors import TypingError

from tuinet.engine import precompile
from tuinet.engine.kernels import jit


def make_launcher(name: str):
    """A parallel launcher ``launch(fn, parts, *args)`` named ``name`` (the compile screen's and the cache's name):
    runs the part kernel ``fn`` for p in 0..parts-1, in parallel, handing it ``args`` as one tuple (Numba types the
    arguments one by one, in C, at each call). One launcher per kind of part keeps each dispatcher at one signature.
    """

    def launch(fn, parts, *args):
        for p in prange(parts):
            fn(np.int64(p), args)

    launch.__name__ = launch.__qualname__ = name
    return jit(parallel=True)(launch)


class PartKernel(types.WrapperAddressProtocol):
    """A serial part kernel that a parallel launcher calls through its address (a Numba first-class function).

    The signature is taken from the arguments of the first call (:func:`run_parts`): every call of a kernel passes
    the same argument types (its dummies have the real arrays' types), and a call that does not is typed again.
    The launchers take the arguments one by one (``*args``: Numba types arrays and numbers in C, where a tuple
    argument would be typed in Python at every call) and hand them to the part as one tuple (a short
    function-pointer signature).
    """

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self._sig = None
        self._addr = None

    def bind(self, args: tuple) -> None:
        """Take the signature from ``args``: the launcher's arguments, which it hands to the part as one tuple."""
        sig = types.void(types.int64, types.BaseTuple.from_types([numba.typeof(a) for a in args]))
        if sig != self._sig:
            self._sig, self._addr = sig, None
            self._numba_type_ = types.FunctionType(sig)  # read by Numba's dispatcher at each call, in C

    def __wrapper_address__(self) -> int:
        if self._addr is None:
            d = self.dispatcher
            if tuple(self._sig.args) not in d.overloads:
                precompile.before_compile(d, tuple(self._sig.args))  # (the compile helper may be compiling it)
            d.compile(self._sig.args)  # from Numba's cache when it is there
            cres = d.overloads[self._sig.args]
            self._addr = cres.library.get_pointer_to_function(cres.fndesc.llvm_cfunc_wrapper_name)
        return self._addr

    def signature(self):
        return self._sig


def run_parts(launch, part: PartKernel, parts: int, *args) -> None:
    """``launch(part, parts, *args)``: the part's signature bound to ``args`` on the first call (and on a
    mismatch)."""
    if part.signature() is None:
        part.bind(args)
    try:
        launch(part, parts, *args)
    except (TypingError, ValueError):  # Numba's "mismatch of argument types" is a ValueError
        part.bind(args)
        launch(part, parts, *args)
