"""The compile helper: what it records of a step, that its signatures are the ones a real step compiles, how it
meets the trainer, the cache's save lock, and the trainer starting and stopping it on a cold cache."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np
import pytest
from numba.core import caching
from numba.core.registry import CPUDispatcher

from tuinet.engine import kernels as K
from tuinet.engine import precompile as P
from tuinet.engine import runtime
from tuinet.engine.conv.kernels import _launch_backward, _launch_forward, conv2d_backward_part, conv2d_forward_part
from tuinet.engine.optim import _list_new, make_optimizer
from tuinet.engine.spec import build_model
from tuinet.engine.threads import configure_threads

CONV = "conv3x3x8,relu,maxpool2,conv3x3x8s2,relu,dense10"


class _FakeProc:
    """A running helper whose ``poll`` calls run a script of side effects (the loop's clock, deterministic)."""

    def __init__(self, on_poll):
        self.on_poll, self.polls, self.returncode = on_poll, 0, None

    def poll(self):
        self.polls += 1
        self.on_poll(self.polls)
        return self.returncode

    def terminate(self):
        self.returncode = -15

    def kill(self):
        self.returncode = -9

    def wait(self, timeout=None):
        return self.returncode


def test_stand_ins_follow_what_a_kernel_returns():
    assert P._stand_in(K.softmax_cross_entropy.py_func) == (True, (0, 0))  # return total / n, correct
    assert P._stand_in(K.all_finite.py_func) == (True, 0)  # return acc == F0
    assert P._stand_in(K.mean_squared_error.py_func) == (True, 0)  # return total / n
    assert P._stand_in(K.softmax_rows.py_func) == (False, None)  # writes its output array only
    assert P._stand_in(_list_new.py_func) == (True, P.RUN)  # returns a typed list the caller hands on
    assert P._stand_in(K.sum_squares.py_func) == (True, P.RUN)  # `return acc`: a variable, so run it


def _model_and_step(spec=CONV, shape=(10, 10, 1), n=6):
    model = build_model(spec, shape, 10)
    opt = make_optimizer("adam", model.params)
    configure_threads(model)
    rng = np.random.default_rng(0)
    x = rng.random((n,) + shape, dtype=np.float32)
    y = rng.integers(0, 10, n)

    def step():
        model.compute_gradients(x, y)
        opt.step(model.grads)

    return model, step


def test_recording_runs_no_kernel_and_lists_each_part_after_its_launcher():
    model, step = _model_and_step()
    before = [p.copy() for p in model.params]
    calls = P.record_kernel_calls(step)
    names = [d.py_func.__qualname__ for d, _ in calls]
    assert all(np.array_equal(a, b) for a, b in zip(before, model.params))  # the optimizer's kernel did not run
    logits, out = np.ones((2, 3), np.float32), np.full((2, 3), 7.0, np.float32)
    assert [d for d, _ in P.record_kernel_calls(lambda: K.softmax_rows(logits, out))] == [K.softmax_rows]
    assert np.all(out == 7.0)  # recorded, not run
    assert len({P.entry_key(d, a) for d, a in calls}) == len(calls)  # each compilation once
    # the forward launcher first (after no other conv kernel), each part right after its launcher, Adam last
    assert names.index("_launch_forward") < names.index("_launch_backward")
    for launcher, part in ((_launch_forward, conv2d_forward_part), (_launch_backward, conv2d_backward_part)):
        i = [d for d, _ in calls].index(launcher)
        assert calls[i + 1][0] is part
    assert names[-1] == "_adam_all_parallel"
    assert "__call__" not in CPUDispatcher.__dict__  # the dispatchers call their kernels again
    model, step = _model_and_step()  # (the recorded step left its optimizer's cached typed list unfilled)
    before = [p.copy() for p in model.params]
    step()
    assert not all(np.array_equal(a, b) for a, b in zip(before, model.params))
    K.softmax_rows(logits, out)
    np.testing.assert_allclose(out, 1 / 3, rtol=1e-6)


@pytest.mark.parametrize("spec,shape", [(CONV, (10, 10, 1)), ("resnet", (8, 8, 1)), ("dense32,relu,dropout0.2", (12,))])
def test_the_recorded_signatures_are_those_a_real_step_compiles(spec, shape):
    """Each recorded (kernel, argument types) is exactly an overload that the real step then compiles or loads
    from the cache: the helper's compilations are the trainer's cache entries (a mismatch would compile
    something no one uses while the trainer compiles the real one)."""
    calls = P.record_kernel_calls(_model_and_step(spec, shape)[1])
    assert len(calls) >= 3
    _model_and_step(spec, shape)[1]()
    for dispatcher, args in calls:
        assert tuple(args) in dispatcher.overloads, (dispatcher.py_func.__qualname__, args)


class _FakeKernel:
    """Stands for a dispatcher: records its compilations."""

    def __init__(self, name, log):
        self.log = log
        self.py_func = lambda: None
        self.py_func.__module__ = "tuinet.fake"
        self.py_func.__qualname__ = name

    def compile(self, args):
        self.log.append(self.py_func.__qualname__)


def test_the_helper_compiles_from_the_end_and_stops_where_the_trainer_started(tmp_path):
    log: list[str] = []
    calls = [(_FakeKernel(n, log), (n,)) for n in "abcde"]
    (tmp_path / f"main-{P.entry_key(*calls[1])}").touch()  # the trainer has started b (so a is done)
    assert P.compile_from_end(calls, tmp_path, os.getppid()) == 3
    assert log == ["e", "d", "c"]
    assert sorted(p.name for p in tmp_path.glob("done-*")) == sorted(f"done-{P.entry_key(*c)}" for c in calls[2:])
    assert not (tmp_path / f"start-{P.entry_key(*calls[1])}").exists()  # its claim on b withdrawn
    log.clear()
    assert P.compile_from_end(calls, tmp_path, os.getppid() + 1) == 0  # its trainer is gone: nothing more
    assert log == []


def test_helpers_share_the_list_through_exclusive_claims(tmp_path):
    log: list[str] = []
    calls = [(_FakeKernel(n, log), (n,)) for n in "abcde"]
    (tmp_path / f"start-{P.entry_key(*calls[4])}").touch()  # another helper is compiling e
    (tmp_path / f"start-{P.entry_key(*calls[2])}").touch()  # and has claimed c
    (tmp_path / f"main-{P.entry_key(*calls[0])}").touch()  # the trainer has started a
    assert P.compile_from_end(calls, tmp_path, os.getppid()) == 2
    assert log == ["d", "b"]


def test_helpers_whose_trainer_is_gone_remove_their_folder(tmp_path):
    folder = tmp_path / "tuinet-compile-x"
    folder.mkdir()
    (folder / "done-1").touch()
    assert not P.remove_if_orphaned(folder, os.getppid())  # the trainer is there: it removes the folder itself
    assert folder.exists()
    assert P.remove_if_orphaned(folder, os.getppid() + 1)
    assert not folder.exists()


_SHORT_LIVED_TRAINER = """
import json, os, subprocess, sys
from tuinet.engine import precompile
folder = sys.argv[1]
with open(os.path.join(folder, "job.json"), "w") as f:
    json.dump({"parent": os.getpid(), "model": "no such model"}, f)  # its planning fails at once
subprocess.Popen([sys.executable, "-c", precompile._HELPER_MAIN, folder], start_new_session=True)
"""  # ... and the "trainer" ends without stopping its helper


_TRAINER_THREAD_EXITS = """
import json, os, subprocess, sys, threading, time
from tuinet.engine import precompile
folder = sys.argv[1]
with open(os.path.join(folder, "job.json"), "w") as f:
    json.dump({"parent": os.getpid(), "model": "no such model"}, f)

def trainer():
    p = subprocess.Popen([sys.executable, "-c", precompile._HELPER_MAIN, folder], start_new_session=True)
    while True:  # until the helper catches SIGTERM (its handler set, PR_SET_PDEATHSIG next)
        with open(f"/proc/{p.pid}/status") as s:
            if int(next(x for x in s if x.startswith("SigCgt:")).split()[1], 16) >> 14 & 1:
                break
        time.sleep(0.01)
    time.sleep(0.5)  # (its planning fails at once: it is idle, waiting for its trainer)
    os._exit(0)  # the process ends from the helper's thread, without stopping it

threading.Thread(target=trainer).start()
while True:
    time.sleep(1)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("trainer", [_SHORT_LIVED_TRAINER, _TRAINER_THREAD_EXITS], ids=["exits", "os_exit_in_thread"])
def test_a_helper_whose_trainer_ends_without_stopping_it_removes_the_folder_and_exits(tmp_path, trainer):
    """A "trainer" that ends at once (its helper is idle by then, or still planning), and one that ends with
    ``os._exit`` from the thread that started the helper (as a benchmark ends a run at its first step: the kernel
    may hand the helper to another thread of the dying process before it signals it, so the helper cannot wait to
    see its parent gone; on the signal it removes the folder)."""
    folder = tmp_path / "tuinet-compile-x"
    folder.mkdir()
    subprocess.run([sys.executable, "-c", trainer, str(folder)], check=True, timeout=60)
    end = time.monotonic() + 60
    while (folder.exists() or _helper_processes(str(folder))) and time.monotonic() < end:
        time.sleep(0.05)
    assert not folder.exists()
    assert _helper_processes(str(folder)) == []


def test_one_helper_per_core_beyond_the_trainers_up_to_a_cap(monkeypatch):
    for threads, helpers in (("2", 1), ("3", 2), ("64", P.MAX_HELPERS)):
        monkeypatch.setenv("TUINET_THREADS", threads)
        assert P.CompileHelper.count() == helpers


def test_the_trainer_side_marks_only_tuinet_kernels_and_cleans_up(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    helper = P.CompileHelper({"parent": os.getpid()})
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: _FakeProc(lambda n: None))  # folder and marks only
    helper.start()
    assert helper.folder is not None and helper.folder.parent == tmp_path
    helper.mark(K.all_finite, ("x",))
    helper.mark(type("NotOurs", (), {"py_func": np.add})(), ("x",))
    assert [p.name for p in helper.folder.glob("main-*")] == [f"main-{P.entry_key(K.all_finite, ('x',))}"]
    (helper.folder / "done-1").touch()
    assert helper.done() == 1
    assert helper.stop() == 1
    assert list(tmp_path.iterdir()) == []


def test_the_trainer_waits_for_a_kernel_the_helper_is_compiling_and_only_then(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    helper = P.CompileHelper({"parent": os.getpid()})
    key = P.entry_key(K.all_finite, ("x",))
    proc = _FakeProc(lambda n: n == 3 and (helper.folder / f"done-{key}").touch())
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: proc)
    assert helper.start()
    assert "_compile_for_args" in CPUDispatcher.__dict__ and P._before_compile is not None  # the wait is in place
    assert not helper.wait_for(K.all_finite, ("x",))  # not claimed by the helper: no wait
    assert proc.polls == 0 and (helper.folder / f"main-{key}").exists()  # but marked as the trainer's
    (helper.folder / f"start-{key}").touch()  # the helper claims it
    assert helper.wait_for(K.all_finite, ("x",))
    assert proc.polls == 3  # until its done mark appeared
    other = P.entry_key(K.softmax_rows, ("y",))
    (helper.folder / f"start-{other}").touch()
    proc.on_poll = lambda n: setattr(proc, "returncode", 1)  # the helper died while compiling it
    assert not helper.wait_for(K.softmax_rows, ("y",))  # no wait for a helper that is gone
    assert proc.polls == 4
    helper.stop()
    assert "_compile_for_args" not in CPUDispatcher.__dict__ and P._before_compile is None
    x = np.zeros(3, np.float32)
    assert K.all_finite(x)  # the dispatchers are as they were


def test_the_helper_is_off_on_one_core_or_when_asked(monkeypatch):
    monkeypatch.setenv("TUINET_THREADS", "2")
    monkeypatch.delenv(P.ENV, raising=False)
    assert P.CompileHelper.enabled()
    monkeypatch.setenv(P.ENV, "0")
    assert not P.CompileHelper.enabled()
    monkeypatch.setenv(P.ENV, "1")
    monkeypatch.setenv("TUINET_THREADS", "1")
    assert not P.CompileHelper.enabled()


def test_numba_cache_saves_hold_an_exclusive_lock(tmp_path, monkeypatch):
    """Two processes saving two signatures of one kernel at once could give both the same data file; every save
    runs its read-modify-write of the index under an exclusive flock on one file of the cache folder."""
    assert runtime.configure_cache_lock()
    seen = []
    real = caching.IndexDataCacheFile._save_index

    def save_index(self, overloads):
        fd = os.open(os.path.join(self._cache_path, runtime._SAVE_LOCK), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: fails while the save holds it
            seen.append("free")
        except BlockingIOError:
            seen.append("held")
        finally:
            os.close(fd)
        return real(self, overloads)

    monkeypatch.setattr(caching.IndexDataCacheFile, "_save_index", save_index)
    cache = caching.IndexDataCacheFile(str(tmp_path), "k", (0.0, 1))
    cache.save(("sig", 1), {"code": 1})
    cache.save(("sig", 2), {"code": 2})
    assert seen == ["held", "held"]
    assert cache.load(("sig", 1)) == {"code": 1} and cache.load(("sig", 2)) == {"code": 2}


def _helper_processes(marker: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes()
            except OSError:
                continue
            if b"tuinet.engine.precompile" in cmd and marker.encode() in cmd:
                pids.append(int(p.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_cold_first_run_starts_the_helper_and_leaves_nothing_behind(tmp_path):
    """On an empty cache the trainer starts its helpers (two, for 3 cores given), reports their kernels, stops them
    and removes their folder; a second run then compiles nothing (what the processes put into the cache is
    complete)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), TMPDIR=str(tmp), TUINET_THREADS="3")  # 2 helpers
    env.pop(P.ENV, None)
    cmd = [sys.executable, "-m", "tuinet.cli", "train", "--headless", "--json", "--dataset", "mnist", "--limit", "256",
           "--model", "64", "--epochs", "1", "--runs-dir", str(tmp_path / "runs")]

    def events():
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    first = events()
    compiled = next(e for e in first if e["event"] == "compiled")
    assert compiled["helper_kernels"] >= 0  # it was started (the count depends on how the two raced)
    assert any(e["event"] == "compiling" and e.get("kernel") for e in first)
    assert first[-1]["event"] == "finished"
    assert list(tmp.glob("tuinet-compile-*")) == []
    assert _helper_processes(str(tmp)) == []
    second = events()
    assert not any(e["event"] == "compiling" and e.get("kernel") for e in second)
    assert "helper_kernels" not in next(e for e in second if e["event"] == "compiled")


def test_the_helpers_plan_covers_a_step_evaluation_and_both_optimizer_kernels():
    job = {"model": CONV, "input_shape": [10, 10, 1], "num_outputs": 10, "task": "classification",
           "activation": None, "dropout": 0.0, "l1": 0.0, "l2": 0.0, "seed": 0, "features": None,
           "optimizer": "adam", "lr": None, "hyper": {}, "batch_size": 8, "thread_mode": "numba",
           "x_dtype": "float32", "y_dtype": "int64", "y_shape": []}
    names = [d.py_func.__qualname__ for d, _ in P.first_step_kernels(job)]
    assert names[:2] == ["_launch_forward", "conv2d_forward_part"]
    assert {"_launch_backward", "conv2d_backward_part", "softmax_rows", "_adam_all"} <= set(names)
    parallel = "_adam_all_parallel" in names
    assert parallel == (numba.get_num_threads() > 1)  # the parallel Adam when the numba mode has threads
    assert names.index("_adam_all") > names.index("_launch_backward")


def test_a_run_that_augments_has_the_helper_compile_the_augmentation_kernels_as_the_trainer_calls_them():
    """The augmentation runs before the step: its kernels are first in the plan, with the argument types the
    trainer's own call gives them (a real call then finds each recorded overload compiled)."""
    import dataclasses

    from tuinet.data.augment import parse_augment
    from tuinet.engine.augment import Augmenter, erase_boxes, warp_batch

    setting = parse_augment("shift=1,rotate=10,erase=0.5")
    job = {"model": "dense16,relu,dense10", "input_shape": [10, 10, 1], "num_outputs": 10, "task": "classification",
           "activation": None, "dropout": 0.0, "l1": 0.0, "l2": 0.0, "seed": 0, "features": None,
           "augment": dataclasses.asdict(setting), "optimizer": "adam", "lr": None, "hyper": {}, "batch_size": 8,
           "thread_mode": "numba", "x_dtype": "float32", "y_dtype": "int64", "y_shape": []}
    calls = P.first_step_kernels(job)
    names = [d.py_func.__qualname__ for d, _ in calls]
    assert names[:2] == ["warp_batch", "erase_boxes"]
    x = np.random.default_rng(0).random((8, 10, 10, 1), dtype=np.float32)  # as the trainer gathers a batch
    Augmenter(setting, (10, 10, 1), np.zeros(1, np.float32), 0)(x)
    for dispatcher, args in calls[:2]:
        assert dispatcher in (warp_batch, erase_boxes) and tuple(args) in dispatcher.overloads
    job["augment"] = None
    assert "warp_batch" not in [d.py_func.__qualname__ for d, _ in P.first_step_kernels(job)]
