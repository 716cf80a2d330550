"""The Ray backend on a real two-node Ray cluster started on this machine, bound to loopback only.

``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (set before Ray is imported) makes every Ray process bind to 127.0.0.1: the
test checks every listening socket of the cluster's processes. One test, in order: the cluster, a sweep on it
(trials on both nodes, results equal to the same sweep on local workers), a sweep that loses a worker node midway
(its trial is run again on the other node; the sweep finishes; the other trial, attached to through the
driver's socket, is stopped from there), and the cluster shut down with no process left.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported: loopback only

import pytest  # noqa: E402

from tests.sweep.conftest import run_cli, wait_until, write_spec  # noqa: E402
from tuinet.protocol import make_command  # noqa: E402
from tuinet.remote.client import RemoteSession  # noqa: E402
from tuinet.sweep.state import read_sweep  # noqa: E402
from tuinet.training.rundir import RunDir  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _loopback(ip: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback (``::ffff:127.0.0.1``)."""
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def _cluster_pids(cluster) -> set[int]:
    """Every process of the cluster's nodes (raylets, GCS, workers ...), children included."""
    import psutil

    pids = set()
    for node in [cluster.head_node, *cluster.worker_nodes]:
        for infos in node.all_processes.values():
            for info in infos:
                pids.add(info.process.pid)
    for pid in list(pids):
        try:
            pids.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
    return pids


def _listening(pids: set[int]) -> set[str]:
    """The addresses those processes listen on."""
    import psutil

    out = set()
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out.update(c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN)
    return out


def _trials(folder):
    return {t.number: t for t in read_sweep(folder).trials}


def test_sweeps_on_a_two_node_ray_cluster(tmp_path):
    ray = pytest.importorskip("ray")
    import psutil
    from ray.cluster_utils import Cluster

    from tuinet.sweep.backends import make_backend
    from tuinet.sweep.driver import SweepDriver
    from tuinet.sweep.spec import load_spec

    scratch_before = _trial_scratch()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        pids = _cluster_pids(cluster)
        addresses = _listening(pids)
        beyond = {a for a in addresses if not _loopback(a)}
        assert addresses and not beyond, f"Ray listens beyond loopback: {beyond}"
        assert cluster.address.startswith("127.0.0.1:")

        # a sweep on the cluster, then the same one on local workers: the same trials, the same results
        spec = write_spec(tmp_path, name="rs.toml", epochs=3, batch=32, trials=4)
        on_ray = run_cli("sweep", spec, "--json", "--ray", cluster.address, "--runs-dir", tmp_path / "ray")
        assert on_ray.exit_code == 0, on_ray.output
        assert not ray.is_initialized()  # the driver let go of the cluster
        local = run_cli("sweep", spec, "--json", "--workers", 2, "--runs-dir", tmp_path / "local")
        assert local.exit_code == 0, local.output
        ray_trials, local_trials = _trials(tmp_path / "ray" / "rs"), _trials(tmp_path / "local" / "rs")
        nodes = {t.where for t in ray_trials.values()}
        assert len(nodes) == 2 and all(w.startswith("ray:127.0.0.1/") for w in nodes), nodes
        assert len(ray_trials) == len(local_trials) == 4
        for n, t in ray_trials.items():
            assert t.state == local_trials[n].state == "complete"
            assert t.params == local_trials[n].params and t.value == local_trials[n].value
            assert t.curve == local_trials[n].curve
            # the run folder came back to the driver's runs dir, checkpoints and all
            assert (t.run_dir / "latest.npz").exists() and t.run_dir.parent == tmp_path / "ray"
        events = [json.loads(line) for line in on_ray.output.splitlines()]
        assert events[-1]["event"] == "sweep_finished" and events[-1]["counts"] == {"complete": 4}

        # a worker node dies while one of its trials trains: the trial runs again on the head, from where it was.
        # Its epochs take milliseconds, so the trials are made too long to end by themselves (however fast the
        # machine) and the sweep is stopped once the lost trial trains again
        head_id = cluster.head_node.node_id[:8]
        long = load_spec(write_spec(tmp_path, name="lost.toml", epochs=100_000, batch=8, trials=2),
                         {"runs_dir": str(tmp_path / "ray")})
        backend = make_backend("ray", None, long, ray_address=cluster.address)
        got: list[dict] = []
        driver = SweepDriver(long, backend, got.append)
        result: list[int] = []
        thread = threading.Thread(target=lambda: result.append(driver.run()), daemon=True)
        thread.start()
        folder = tmp_path / "ray" / "lost"

        victim = wait_until(lambda: next((t for t in read_sweep(folder).trials if t.state == "running"
                                          and t.where.startswith("ray:") and not t.where.endswith(head_id)
                                          and t.epochs >= 1), None) if (folder / "state.json").exists() else None,
                            timeout=180, what="a trial training on the worker node")
        # attached to through the driver (as `tuinet attach RUN` does) although it trains on another node: its
        # events come back and a command reaches it (pause, resume, pause: each confirmed by the trainer). It is
        # left paused, so it is still training when its node dies however fast this machine runs its epochs
        status = RunDir(_trials(folder)[victim.number].run_dir).read_json("status.json")
        viewer = RemoteSession(status["socket"])
        try:
            node = victim.where.rsplit("/", 1)[-1]
            assert any(e["event"] == "started" and e["where"].endswith(node) for e in viewer.history)
            for command, answer in (("pause", "paused"), ("resume", "resumed"), ("pause", "paused")):
                seen = sum(e["event"] == answer for e in viewer.history)
                viewer.send(make_command(command))
                wait_until(lambda: sum(e["event"] == answer for e in viewer.history) > seen, timeout=60,
                           what=f"the trial on the worker node to answer {command}")
        finally:
            viewer.close()
        paused_at = wait_until(lambda: _trials(folder)[victim.number].epochs, what="the paused trial's epochs")
        cluster.remove_node(worker, allow_graceful=False)
        wait_until(lambda: ("trial_lost", victim.number) in [(e["event"], e.get("trial")) for e in got],
                   timeout=180, what="the driver to see the trial lost")
        # resumed on the head from its last checkpoint (not from its first epoch), and training there
        lost = next(i for i, e in enumerate(got) if e["event"] == "trial_lost" and e.get("trial") == victim.number)
        epochs_after = lambda: [e["epoch"] for e in got[lost:]  # noqa: E731
                                if e["event"] == "trial_epoch" and e.get("trial") == victim.number]
        wait_until(lambda: len(epochs_after()) >= 2, timeout=180, what="the lost trial to train again")
        assert epochs_after()[0] > 1 and epochs_after()[0] >= paused_at
        assert _trials(folder)[victim.number].where.endswith(head_id)
        driver.stop()
        thread.join(120)
        assert not thread.is_alive() and result == [128 + signal.SIGTERM]
        assert got[-1]["event"] == "sweep_stopped" and len(_trials(folder)) == 2
    finally:
        pids = _cluster_pids(cluster)
        if "thread" in locals() and thread.is_alive():  # a failed check above: end the sweep before the cluster
            driver.stop()
            thread.join(120)
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    wait_until(lambda: not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"],
               timeout=60, what="the cluster's processes to end")
    # a trial folder is removed by its task when the task ends; the killed node's task never ended, so its folder
    # (the lost trial's, and only that one) is left in the temporary directory, as on a real node that died
    left = _trial_scratch() - scratch_before
    for folder in left:
        shutil.rmtree(folder, ignore_errors=True)
    assert len(left) <= 1, left


def _trial_scratch() -> set[Path]:
    """The trial tasks' temporary folders (``tuinet-ray-*``) in this machine's temporary directory."""
    return set(Path(tempfile.gettempdir()).glob("tuinet-ray-*"))
