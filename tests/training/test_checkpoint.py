"""A process killed while writing a checkpoint never destroys the previous one (temp file, fsync, rename)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tuinet.engine.checkpoint import load_checkpoint

# a writer that saves an MLP with Adam state (~1 MB of arrays; ~4 MB with state) over and over, numbering each
WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from tuinet.engine.checkpoint import save_checkpoint
    from tuinet.engine.optim import make_optimizer
    from tuinet.engine.spec import build_model

    path = sys.argv[1]
    model = build_model("mlp", (28, 28, 1), 10, seed=0)
    opt = make_optimizer("adam", model.params)
    i = 0
    while True:
        i += 1
        for p in model.params:
            p.fill(np.float32(i))          # every array carries the save's number, so a mix-up shows
        save_checkpoint(path, model, opt, extra={"i": i})
        print(i, flush=True)
""")

# dies (SIGKILL, no cleanup) in the middle of writing the second checkpoint, after some bytes went out
HALF_WRITER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from tuinet.engine import checkpoint as C
    from tuinet.engine.spec import build_model

    path = sys.argv[1]
    model = build_model("mlp", (28, 28, 1), 10, seed=0)
    for p in model.params:
        p.fill(np.float32(1))
    C.save_checkpoint(path, model, extra={"i": 1})
    real_savez = np.savez

    def dying_savez(f, **arrays):
        real_savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
        f.truncate(f.tell() // 2)        # half of an archive is on disk ...
        os.kill(os.getpid(), signal.SIGKILL)  # ... when the process dies

    C.np.savez = dying_savez
    for p in model.params:
        p.fill(np.float32(2))
    C.save_checkpoint(path, model, extra={"i": 2})
""")


def check(path, expect_at_least=1):
    ck = load_checkpoint(path)
    i = ck.extra["i"]
    assert i >= expect_at_least
    for k, a in ck.prefixed("model").items():
        if k.endswith((".W", ".b")):
            assert np.all(a == np.float32(i)), f"{k} is not from save {i}"
    return i


@pytest.mark.slow  # five writer processes, each killed at a random moment
def test_sigkill_during_checkpoint_writes_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "latest.npz"
    rng = random.Random(1234)
    last = 0
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        try:
            written = int(proc.stdout.readline())  # at least one complete save in this round
            assert written >= 1
            time.sleep(rng.uniform(0.0, 0.25))
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        last = check(path)
    assert last >= 1
    # leftovers are only hidden temporary files, never a damaged latest.npz
    assert {p.name for p in tmp_path.iterdir()} - {"latest.npz"} <= {
        p.name for p in tmp_path.glob(".latest.npz.*.tmp")}


def test_death_in_the_middle_of_a_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "latest.npz"
    p = subprocess.run([sys.executable, "-c", HALF_WRITER, str(path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert check(path) == 1  # the first save, intact
    torn = list(tmp_path.glob(".latest.npz.*.tmp"))
    assert len(torn) == 1 and 0 < torn[0].stat().st_size  # the half-written file is there, and was never renamed


def test_a_write_that_fails_leaves_no_temporary_file(tmp_path):
    from tuinet.engine.checkpoint import atomic_write_bytes

    def failing(f):
        f.write(b"half of it")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(tmp_path / "latest.npz", failing)
    assert list(tmp_path.iterdir()) == []


def test_the_next_trainer_on_the_folder_removes_a_torn_temporary_file(tmp_path):
    from tuinet.training.rundir import RunDir

    path = tmp_path / "latest.npz"
    p = subprocess.run([sys.executable, "-c", HALF_WRITER, str(path)], capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert list(tmp_path.glob(".latest.npz.*.tmp"))
    rd = RunDir(tmp_path)
    assert rd.lock()  # what a trainer does first on a run folder
    try:
        assert not list(tmp_path.glob(".*.tmp"))
        assert check(path) == 1  # the checkpoint itself is untouched
    finally:
        rd.unlock()
