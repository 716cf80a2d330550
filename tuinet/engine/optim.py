"""Optimizers with the update rules and defaults of ``torch.optim``, separate from the layers.

As in tinygrad, an optimizer holds a list of parameter arrays and, aligned with it, a list of state arrays; it
updates the parameters in place from a list of gradients. The learning rate is a plain attribute that may be
changed between any two steps, and swapping optimizers keeps the weights: the new optimizer starts with fresh
state (``swap_optimizer`` says so in its return value).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba
import numpy as np
from numba import prange
from numba.typed import List

from tuinet.engine.kernels import CHUNK, F0, F1, chunked, jit, nonfinite_sum
from tuinet.errors import ConfigError

# --- kernels (flat float32 arrays, scalars passed as float32) ------------------------------------------------
# Serial range kernels with no branches in the inner loop (so LLVM vectorizes them), run over chunks by a
# parallel wrapper (kernels.chunked). Optional features (momentum, amsgrad, centered) get their own loops.
#
# Running averages that decay geometrically (momentum buffers, Adam's moments, RMSprop's square average) are
# flushed to zero once they fall below the smallest normal float32: a parameter whose gradient stays zero (a dead
# ReLU unit, an MNIST border pixel) would otherwise carry a denormal moment after a few hundred steps, and x86
# CPUs compute with denormals through a microcode assist about 100x slower than normal arithmetic (measured: a
# 235k-parameter Adam step with half its moments denormal took 4.5 ms instead of 0.2 ms). The flush changes a
# parameter by at most lr * 1e-38 / eps per step, far below its float32 spacing.
#
# Each range kernel returns kernels.nonfinite_sum of the piece it just updated (0, or NaN when a value is not
# finite: the divergence guard's answer, see Optimizer.step), summed in the loop that writes the new values as each
# is made (``check += p_new * 0``; RMSprop's momentum variants still in a pass of their own while the piece is in
# L1). Adam's, RMSprop's and Adagrad's loops wait on the divider for a square root and a division, so the sum costs
# nothing there, where the pass of its own cost about a fifth of Adam's time; SGD's loops go through the piece once
# instead of twice (the same weights bit for bit, checked for every configuration of every optimizer).

TINY = np.float32(np.finfo(np.float32).tiny)  # the smallest normal float32, 1.18e-38


@jit()
def _flush(x):
    """x, or 0 where |x| is below the smallest normal float32 (NaN passes through for the divergence guard)."""
    return F0 if abs(x) < TINY else x


@jit()
def _sgd_range(p, g, buf, lr, momentum, dampening, wd, nesterov, first):
    check = F0  # (summed as the new values are made, as in _adam_range)
    if momentum == F0:
        for i in range(p.size):
            pi = p[i] - lr * (g[i] + wd * p[i])
            p[i] = pi
            check += pi * F0
        return check
    one_minus_damp = F1 - dampening
    if first:
        for i in range(p.size):
            buf[i] = g[i] + wd * p[i]
    else:
        for i in range(p.size):
            buf[i] = _flush(momentum * buf[i] + one_minus_damp * (g[i] + wd * p[i]))
    if nesterov:
        for i in range(p.size):
            pi = p[i] - lr * (g[i] + wd * p[i] + momentum * buf[i])
            p[i] = pi
            check += pi * F0
    else:
        for i in range(p.size):
            pi = p[i] - lr * buf[i]
            p[i] = pi
            check += pi * F0
    return check


_sgd_kernel = chunked(_sgd_range, "_sgd_kernel", "SGD update of p in place (see SGD); returns the check.", sums=True)

@jit()
def _adam_range(p, g, m, v, vmax, lr, beta1, beta2, eps, wd, decoupled, amsgrad, bc1, bc2_sqrt):
    step_size = lr / bc1
    inv_bc2_sqrt = F1 / bc2_sqrt
    one_b1 = F1 - beta1
    one_b2 = F1 - beta2
    if decoupled:
        decay = F1 - lr * wd
        for i in range(p.size):
            p[i] *= decay
        l2 = F0
    else:
        l2 = wd
    check = F0  # nonfinite_sum of the new values, summed as they are made (the loop waits on the divider anyway)
    if amsgrad:
        for i in range(p.size):
            d = g[i] + l2 * p[i]
            mi = _flush(beta1 * m[i] + one_b1 * d)
            vi = _flush(beta2 * v[i] + one_b2 * d * d)
            m[i] = mi
            v[i] = vi
            vm = max(vmax[i], vi)
            vmax[i] = vm
            pi = p[i] - step_size * mi / (np.sqrt(vm) * inv_bc2_sqrt + eps)
            p[i] = pi
            check += pi * F0
    else:
        for i in range(p.size):
            d = g[i] + l2 * p[i]
            mi = _flush(beta1 * m[i] + one_b1 * d)
            vi = _flush(beta2 * v[i] + one_b2 * d * d)
            m[i] = mi
            v[i] = vi
            pi = p[i] - step_size * mi / (np.sqrt(vi) * inv_bc2_sqrt + eps)
            p[i] = pi
            check += pi * F0
    return check


@jit()
def _adam_pieces(arrays, n, work, lr, beta1, beta2, eps, wd, decoupled, amsgrad, bc1, bc2_sqrt):
    """Adam/AdamW update of the pieces ``work`` of ``n`` parameters (see :func:`_adam_all`); returns the check."""
    check = F0
    for c in range(work.shape[0]):
        k, s, e = work[c, 0], work[c, 1], work[c, 2]
        check += _adam_range(arrays[k][s:e], arrays[n + k][s:e], arrays[2 * n + k][s:e], arrays[3 * n + k][s:e],
                    arrays[4 * n + k][s:e], lr, beta1, beta2, eps, wd, decoupled, amsgrad, bc1, bc2_sqrt)
    return check


@jit()
def _adam_all(arrays, n, work, lr, beta1, beta2, eps, wd, decoupled, amsgrad, bc1, bc2_sqrt):
    """Adam/AdamW update of every parameter in one call, on one thread (see Adam).

    ``arrays``: one typed list of flat arrays, the ``n`` parameters, then their gradients, first moments, second
    moments and amsgrad maxima (1-element placeholders without amsgrad), so one list is unboxed per call
    (about 2 us each); ``work``: rows (parameter, start, stop) of CHUNK-element pieces. Returns True when every
    updated parameter is finite (see :meth:`Optimizer.step`).
    """
    return _adam_pieces(arrays, n, work, lr, beta1, beta2, eps, wd, decoupled, amsgrad, bc1, bc2_sqrt) == F0


@jit(parallel={"fusion": False})
def _adam_all_parallel(arrays, n, work, bounds, lr, beta1, beta2, eps, wd, decoupled, amsgrad, bc1, bc2_sqrt):
    """:func:`_adam_all` with the pieces spread over Numba's threads (same numbers: the update is element-wise):
    thread c updates the pieces ``work[bounds[c]:bounds[c + 1]]`` (:func:`_work_table`: equal numbers of elements).

    Used when Numba has more than one thread; on one thread the parallel region's start costs about 5 us for
    nothing.
    """
    check = F0
    for c in prange(bounds.size - 1):
        check += _adam_pieces(arrays, n, work[bounds[c]:bounds[c + 1]], lr, beta1, beta2, eps, wd, decoupled,
                              amsgrad, bc1, bc2_sqrt)
    return check == F0


#: a thread's share of the all-parameter Adam ends at a multiple of this many elements from its array's start: the
#: update's vector loop leaves the last elements of a piece to a scalar loop, which does not give the vector loop's
#: bits (under the fast-math flags LLVM compiles the two differently; both divide and take square roots exactly),
#: so pieces must start at the same places whatever the thread count for the numbers not to depend on it
ALIGN = 1024


def _work_table(sizes: list[int], parts: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Rows (array index, start, stop) cutting arrays of ``sizes`` elements into pieces of at most CHUNK elements,
    and ``parts + 1`` row indices sharing them out over ``parts`` threads with about equal numbers of elements (a
    piece ends where a thread's share does, at a multiple of :data:`ALIGN` from its array's start, as every piece
    starts). Shared out one piece at a time, as Numba's scheduler cuts a loop of pieces, an mlp's thread with the
    first layer's weights had 139k of its 235k elements and the other waited (its Adam step 80-81 -> 68-70 us on
    two AVX-512 cores)."""
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64).tolist()
    total = starts[-1]
    cuts = []  # where each thread's share but the last ends, as offsets into all the elements
    for p in range(1, parts):
        g = total * p // parts
        k = max(i for i in range(len(sizes)) if starts[i] <= g) if sizes else 0
        local = min(sizes[k], int(round((g - starts[k]) / ALIGN)) * ALIGN) if sizes else 0
        cuts.append(starts[k] + local)
    rows: list[tuple[int, int, int]] = []
    bounds, ci = [0], 0
    for k, n in enumerate(sizes):
        s = 0
        while s < n:
            while ci < len(cuts) and starts[k] + s >= cuts[ci]:
                bounds.append(len(rows))
                ci += 1
            e = min(n, s + CHUNK, cuts[ci] - starts[k] if ci < len(cuts) else n)
            rows.append((k, s, e))
            s = e
    bounds += [len(rows)] * (parts + 1 - len(bounds))
    return np.array(rows, dtype=np.int64).reshape(-1, 3), np.array(bounds, dtype=np.int64)


@jit()
def _list_new(a):
    out = List()
    out.append(a)
    return out


@jit()
def _list_push(lst, a):
    lst.append(a)


def _typed(arrays: list[np.ndarray]) -> List:
    """A Numba typed list of flat views of ``arrays`` (what the all-parameter kernels take).

    Built by two cached kernels: ``List()`` and ``append`` called from Python compile Numba's typed-list code in
    every new process (0.7 s of a warm start), while inside a cached kernel that code is cached with it.
    """
    out = _list_new(arrays[0].reshape(-1))
    for a in arrays[1:]:
        _list_push(out, a.reshape(-1))
    return out


@jit()
def _rmsprop_range(p, g, sq, gavg, buf, lr, alpha, eps, wd, momentum, centered):
    one_a = F1 - alpha
    for i in range(p.size):
        d = g[i] + wd * p[i]
        sq[i] = _flush(alpha * sq[i] + one_a * d * d)
    # avg is kept in gavg's place only when centered; otherwise computed on the fly
    if centered:
        for i in range(p.size):
            d = g[i] + wd * p[i]
            gavg[i] = _flush(alpha * gavg[i] + one_a * d)
    if momentum > F0:
        if centered:
            for i in range(p.size):
                d = g[i] + wd * p[i]
                buf[i] = _flush(momentum * buf[i] + d / (np.sqrt(sq[i] - gavg[i] * gavg[i]) + eps))
        else:
            for i in range(p.size):
                d = g[i] + wd * p[i]
                buf[i] = _flush(momentum * buf[i] + d / (np.sqrt(sq[i]) + eps))
        for i in range(p.size):
            p[i] -= lr * buf[i]
    elif centered:
        check = F0  # (summed as the new values are made, as in _adam_range)
        for i in range(p.size):
            d = g[i] + wd * p[i]
            pi = p[i] - lr * d / (np.sqrt(sq[i] - gavg[i] * gavg[i]) + eps)
            p[i] = pi
            check += pi * F0
        return check
    else:
        check = F0
        for i in range(p.size):
            d = g[i] + wd * p[i]
            pi = p[i] - lr * d / (np.sqrt(sq[i]) + eps)
            p[i] = pi
            check += pi * F0
        return check
    return nonfinite_sum(p)


_rmsprop_kernel = chunked(_rmsprop_range, "_rmsprop_kernel",
                          "RMSprop update of p in place (see RMSprop); returns the check.", sums=True)

@jit()
def _adagrad_range(p, g, acc, clr, eps, wd):
    check = F0  # (summed as the new values are made, as in _adam_range)
    for i in range(p.size):
        d = g[i] + wd * p[i]
        a = acc[i] + d * d
        acc[i] = a
        pi = p[i] - clr * d / (np.sqrt(a) + eps)
        p[i] = pi
        check += pi * F0
    return check


_adagrad_kernel = chunked(_adagrad_range, "_adagrad_kernel",
                          "Adagrad update of p in place (see Adagrad); returns the check.", sums=True)

_EMPTY = np.zeros(1, dtype=np.float32)


# --- classes -----------------------------------------------------------------------------------------------------


class Optimizer:
    """Base class: parameters, aligned state arrays, a step counter and a changeable learning rate.

    Args:
        params: the parameter arrays (float32, C-contiguous), updated in place.
        lr: learning rate.
        **hyper: the optimizer's hyperparameters (see ``defaults`` of each subclass).
    """

    name: ClassVar[str] = "optimizer"
    defaults: ClassVar[dict[str, Any]] = {}
    state_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: list[np.ndarray], lr: float | None = None, **hyper: Any):
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise ConfigError(
                f"{self.name}: unknown hyperparameter(s) {', '.join(sorted(unknown))}; "
                f"it takes lr, {', '.join(self.defaults)}"
            )
        self.params = list(params)
        self.hyper: dict[str, Any] = {**self.defaults, **hyper}
        self.lr = float(self.default_lr if lr is None else lr)
        self._validate()
        self.t = 0
        self.state: list[dict[str, np.ndarray]] = [
            {k: np.zeros(p.size, dtype=np.float32) for k in self.state_names_for()} for p in self.params
        ]

    default_lr: ClassVar[float] = 1e-3

    def state_names_for(self) -> tuple[str, ...]:
        """Names of the per-parameter state arrays this configuration needs."""
        return self.state_names

    def _validate(self) -> None:
        if not (self.lr >= 0.0) or not math.isfinite(self.lr):
            raise ConfigError(f"{self.name}: learning rate must be a finite number >= 0, got {self.lr}")
        for key, value in self.hyper.items():
            if isinstance(value, bool):
                continue
            if isinstance(value, tuple):
                continue
            if not (float(value) >= 0.0):
                raise ConfigError(f"{self.name}: {key} must be >= 0, got {value}")

    def step(self, grads: list[np.ndarray]) -> bool:
        """Apply one update to every parameter from the aligned gradients; True when every parameter is finite
        after it.

        The answer comes with the update: each kernel sums ``p * 0`` over every piece of at most CHUNK values right
        after writing it, while it is in L1 (0 for finite numbers, NaN once an infinity or a NaN is among them), so
        the trainer's divergence guard does not read all the weights again, one Python call per parameter, after the
        step: optimizer step and check together 0.77-0.94x the time of the two apart for the ``mlp`` preset's
        235,146 parameters (14-30 us saved a step, of 0.8-2.1 ms), with the same weights bit for bit.
        """
        self.t += 1
        finite = True
        for i, (p, g) in enumerate(zip(self.params, grads)):
            finite &= bool(self._update(p.reshape(-1), g.reshape(-1), self.state[i]) == 0.0)
        return finite

    def _update(self, p: np.ndarray, g: np.ndarray, st: dict[str, np.ndarray]) -> float:
        """Update ``p`` in place; returns the kernel's check (0.0 when every updated value is finite, else NaN)."""
        raise NotImplementedError

    def hyperparams(self) -> dict[str, Any]:
        """The learning rate and every hyperparameter, JSON-serialisable."""
        out: dict[str, Any] = {"lr": self.lr}
        for k, v in self.hyper.items():
            out[k] = list(v) if isinstance(v, tuple) else v
        return out

    def describe(self) -> str:
        """A short human description, e.g. ``adam(lr=0.001, betas=(0.9, 0.999))``."""
        parts = [f"lr={self.lr:.3g}"]
        for k, v in self.hyper.items():
            if v == self.defaults[k] and k not in ("momentum", "betas"):
                continue
            parts.append(f"{k}={v}")
        return f"{self.name}({', '.join(parts)})"

    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-able description, arrays) for checkpoints."""
        meta = {"name": self.name, "hyperparams": self.hyperparams(), "t": self.t}
        arrays = {f"{i}.{k}": a for i, st in enumerate(self.state) for k, a in st.items()}
        return meta, arrays

    def load_state_dict(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore the step counter and state arrays saved by :meth:`state_dict`."""
        self.t = int(meta["t"])
        for i, st in enumerate(self.state):
            for k in st:
                key = f"{i}.{k}"
                if key not in arrays:
                    raise KeyError(key)
                src = arrays[key]
                if src.shape != st[k].shape:
                    raise ValueError(f"optimizer state {key} has shape {src.shape}, expected {st[k].shape}")
                st[k][...] = src


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov momentum and L2 weight decay.

    Args:
        lr: learning rate (torch default 1e-3).
        momentum: momentum factor (0).
        dampening: dampening for momentum (0).
        weight_decay: L2 penalty added to the gradient (0).
        nesterov: use Nesterov momentum (False); needs momentum > 0 and dampening 0.
    """

    name = "sgd"
    default_lr = 1e-3
    defaults = {"momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False}
    state_names = ("momentum_buffer",)

    def _validate(self) -> None:
        super()._validate()
        if self.hyper["nesterov"] and (self.hyper["momentum"] <= 0 or self.hyper["dampening"] != 0):
            raise ConfigError("sgd: nesterov momentum requires a momentum > 0 and zero dampening")

    def state_names_for(self) -> tuple[str, ...]:
        return self.state_names if self.hyper["momentum"] > 0 else ()

    def step(self, grads: list[np.ndarray]) -> bool:
        self._first = self.t == 0
        return super().step(grads)

    def _update(self, p, g, st):
        h = self.hyper
        return _sgd_kernel(
            p, g, st.get("momentum_buffer", _EMPTY), np.float32(self.lr), np.float32(h["momentum"]),
            np.float32(h["dampening"]), np.float32(h["weight_decay"]), bool(h["nesterov"]), self._first,
        )


class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` is added to the gradient (L2), as in torch.optim.Adam.

    Args:
        lr: learning rate (1e-3).
        betas: coefficients for the running averages of the gradient and its square ((0.9, 0.999)).
        eps: added to the denominator (1e-8).
        weight_decay: L2 penalty (0).
        amsgrad: use the maximum of past squared-gradient averages (False).
    """

    name = "adam"
    default_lr = 1e-3
    defaults = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}
    decoupled = False

    def __init__(self, params, lr=None, **hyper):
        if "betas" in hyper:
            hyper["betas"] = tuple(float(b) for b in hyper["betas"])
            b = hyper["betas"]
            if len(b) != 2 or not all(0.0 <= x < 1.0 for x in b):
                raise ConfigError(f"{self.name}: betas must be two numbers in [0, 1), got {b}")
        super().__init__(params, lr, **hyper)
        self._arrays: List | None = None  # parameters, gradients and state as one typed list (see _adam_all)
        self._arrays_key: tuple[int, ...] = ()
        self._work: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # thread count -> _work_table

    def __getstate__(self):
        """Copies and pickles leave the typed list out (it holds the original's arrays); the next step rebuilds it."""
        state = dict(self.__dict__)
        state["_arrays"], state["_arrays_key"] = None, ()
        return state

    def state_names_for(self):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if self.hyper["amsgrad"] else ("exp_avg", "exp_avg_sq")

    def step(self, grads):
        """One update of every parameter, in one kernel call (its Python cost is paid once, not per parameter);
        True when every parameter is finite after it (see :meth:`Optimizer.step`)."""
        h = self.hyper
        b1, b2 = h["betas"]
        self.t += 1
        if not self.params:
            return True
        bc1 = np.float32(1.0 - b1**self.t)
        bc2_sqrt = np.float32(math.sqrt(1.0 - b2**self.t))
        key = (*map(id, self.params), *map(id, grads), *(id(a) for st in self.state for a in st.values()))
        if key != self._arrays_key:  # the same arrays every step: built once
            st = self.state
            self._arrays = _typed(self.params + list(grads) + [s["exp_avg"] for s in st]
                                  + [s["exp_avg_sq"] for s in st] + [s.get("max_exp_avg_sq", _EMPTY) for s in st])
            self._arrays_key = key  # the list holds every array, so their ids stay unique while it lives
            self._work = {}
        parts = numba.get_num_threads()
        work = self._work.get(parts)
        if work is None:
            work = self._work[parts] = _work_table([p.size for p in self.params], parts)
        args = (np.float32(self.lr), np.float32(b1), np.float32(b2), np.float32(h["eps"]),
                np.float32(h["weight_decay"]), self.decoupled, bool(h["amsgrad"]), bc1, bc2_sqrt)
        if parts > 1:
            return _adam_all_parallel(self._arrays, len(self.params), work[0], work[1], *args)
        return _adam_all(self._arrays, len(self.params), work[0], *args)


class AdamW(Adam):
    """Adam with decoupled weight decay (the parameter shrinks by lr * weight_decay each step), as torch.optim.AdamW.

    Args:
        lr: learning rate (1e-3).
        betas: ((0.9, 0.999)).
        eps: (1e-8).
        weight_decay: decoupled weight decay (1e-2).
        amsgrad: (False).
    """

    name = "adamw"
    defaults = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2, "amsgrad": False}
    decoupled = True


class RMSprop(Optimizer):
    """RMSprop as torch.optim.RMSprop.

    Args:
        lr: learning rate (1e-2).
        alpha: smoothing constant of the squared-gradient average (0.99).
        eps: added to the denominator (1e-8).
        weight_decay: L2 penalty (0).
        momentum: momentum factor (0).
        centered: normalize by the variance estimate of the gradient (False).
    """

    name = "rmsprop"
    default_lr = 1e-2
    defaults = {"alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0, "centered": False}

    def state_names_for(self):
        names = ["square_avg"]
        if self.hyper["centered"]:
            names.append("grad_avg")
        if self.hyper["momentum"] > 0:
            names.append("momentum_buffer")
        return tuple(names)

    def _update(self, p, g, st):
        h = self.hyper
        return _rmsprop_kernel(
            p, g, st["square_avg"], st.get("grad_avg", _EMPTY), st.get("momentum_buffer", _EMPTY),
            np.float32(self.lr), np.float32(h["alpha"]), np.float32(h["eps"]), np.float32(h["weight_decay"]),
            np.float32(h["momentum"]), bool(h["centered"]),
        )


class Adagrad(Optimizer):
    """Adagrad as torch.optim.Adagrad.

    Args:
        lr: learning rate (1e-2).
        lr_decay: learning-rate decay per step (0).
        weight_decay: L2 penalty (0).
        initial_accumulator_value: starting value of the squared-gradient sum (0).
        eps: added to the denominator (1e-10).
    """

    name = "adagrad"
    default_lr = 1e-2
    defaults = {"lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10}
    state_names = ("sum",)

    def __init__(self, params, lr=None, **hyper):
        super().__init__(params, lr, **hyper)
        for st in self.state:
            st["sum"][:] = np.float32(self.hyper["initial_accumulator_value"])

    def step(self, grads):
        t = self.t + 1
        self._clr = np.float32(self.lr / (1.0 + (t - 1) * self.hyper["lr_decay"]))
        return super().step(grads)

    def _update(self, p, g, st):
        h = self.hyper
        return _adagrad_kernel(p, g, st["sum"], self._clr, np.float32(h["eps"]), np.float32(h["weight_decay"]))


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
    "rmsprop": RMSprop,
    "adagrad": Adagrad,
}
# Friendly aliases: "momentum" is SGD with momentum 0.9 unless told otherwise.
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {"momentum": ("sgd", {"momentum": 0.9})}
OPTIMIZER_NAMES = ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad")


def make_optimizer(name: str, params: list[np.ndarray], lr: float | None = None, **hyper: Any) -> Optimizer:
    """Create an optimizer by name (``sgd``, ``momentum``, ``adam``, ``adamw``, ``rmsprop``, ``adagrad``).

    Hyperparameters that the chosen optimizer does not take are ignored only when they are ``None``.
    """
    key = name.lower().strip()
    hyper = {k: v for k, v in hyper.items() if v is not None}
    if key in ALIASES:
        key, extra = ALIASES[key]
        hyper = {**extra, **hyper}
    if key not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{name}'; choose one of {', '.join(OPTIMIZER_NAMES)}")
    return OPTIMIZERS[key](params, lr=lr, **hyper)
