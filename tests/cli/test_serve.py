"""``tuinet serve`` with a real websocket client on 127.0.0.1: a page with no live run says why and lists the runs, a
page dropped without a close handshake leaves no viewer process behind, and serve ends its viewers when it ends.

The page is a separate process (a small aiohttp client), so dropping it is what a crashing browser does: the kernel
closes its socket, no close frame is sent.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.app.runs_fixture import make_runs

pytest.importorskip("textual_serve")

pytestmark = pytest.mark.slow  # each test starts a server and a viewer (a few seconds of start-up)

#: the page: connects to port argv[1]; argv[2:] is WANT [KEYS WANT ...]: waits until the screen's words hold WANT,
#: prints PAGE and them, types KEYS and waits for the next WANT; after the last one it waits (until killed)
PAGE = r"""
import asyncio, re, sys, aiohttp
ANSI = re.compile(r"\x1b\[[0-9;?<>=$]*[a-zA-Z~]|\x1b[\]P][^\x07\x1b]*(\x07|\x1b\\)|\x1b.")
async def main(port, steps):
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"http://127.0.0.1:{port}/ws?width=120&height=30") as ws:
            text = ""
            async for m in ws:
                if m.type == aiohttp.WSMsgType.BINARY:
                    text = (text + ANSI.sub("", m.data.decode("utf-8", "replace")))[-30000:]
                    words = " ".join(text.split())  # a wrapped line is padded with spaces before the next
                    if steps[0] in words:
                        print("PAGE", words, flush=True)
                        if len(steps) == 1:
                            await asyncio.sleep(3600)
                        await ws.send_json(["stdin", steps[1]])
                        steps, text = steps[2:], ""
            print("CLOSED", flush=True)
asyncio.run(main(int(sys.argv[1]), sys.argv[2:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the page printed nothing"
    return proc.stdout.readline().decode()


@pytest.fixture
def serve(tmp_path):
    """A running `tuinet serve` on a free port over a runs folder with no live detached run: (process, port)."""
    yield from serving(make_runs(tmp_path / "runs"), tmp_path / "serve.log")


def serving(runs: Path, log_path: Path, *args: str):
    """Run `tuinet serve ARGS` over ``runs`` until the generator is closed; yields (process, port)."""
    port = free_port()
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tuinet.cli", "serve", *args, "--host", "127.0.0.1", "--port",
                             str(port), "--runs-dir", str(runs)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, 60, "the server to listen")
        yield proc, port
    finally:
        for pid in [proc.pid, *children(proc.pid)]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)
        log.close()


def open_page(port: int, *steps: str) -> tuple[subprocess.Popen, list[str]]:
    """A page that waits for each WANT of ``steps`` (WANT [KEYS WANT ...]) in turn; the screens' words of each."""
    page = subprocess.Popen([sys.executable, "-c", PAGE, str(port), *steps], stdout=subprocess.PIPE)
    screens = []
    for _ in steps[::2]:
        line = read_line(page, 60)
        assert line.startswith("PAGE"), line
        screens.append(line)
    return page, screens


def test_a_page_with_no_live_run_says_why_and_dropping_it_leaves_no_viewer(serve):
    proc, port = serve
    page, (text,) = open_page(port, "Pick a run below")
    assert "no live runs to attach to" in text
    assert "adam-lr0.001" in text and "sgd-lr0.1" in text  # the runs of the folder, to pick from
    viewers = children(proc.pid)
    assert len(viewers) == 1
    page.kill()  # the browser crashes: no close handshake
    page.wait()
    wait_for(lambda: not alive(viewers[0]) and not children(proc.pid), 15, "the viewer to exit")
    assert proc.poll() is None, "the server goes on serving"


def test_serve_ends_its_viewers_when_it_ends(serve):
    proc, port = serve
    page, _ = open_page(port, "Pick a run below")
    try:
        viewers = children(proc.pid)
        assert len(viewers) == 1
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        wait_for(lambda: not alive(viewers[0]), 10, "the viewer to exit")
    finally:
        page.kill()
        page.wait()


def test_a_viewer_exits_when_its_input_ends_or_on_sigterm(tmp_path):
    """The viewer on its own (as textual-serve starts it): the end of its input, or SIGTERM, ends it, even with
    nobody reading its screen (so a killed server leaves nothing behind)."""
    from tuinet.app.served import DRIVER_PATH, PRELUDE

    runs = make_runs(tmp_path / "runs")
    env = {**os.environ, "TEXTUAL_DRIVER": DRIVER_PATH, "COLUMNS": "100", "ROWS": "30"}
    argv = [sys.executable, "-m", "tuinet.cli", "attach", "--page", "--runs-dir", str(runs)]
    for end in ("eof", "sigterm"):
        viewer = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  env=env)
        try:
            ready, _, _ = select.select([viewer.stdout], [], [], 60)
            assert ready and viewer.stdout.readline() == PRELUDE
            if end == "eof":
                viewer.stdin.close()
            else:
                viewer.send_signal(signal.SIGTERM)
            viewer.wait(15)  # its screen is never read again: writes must not hold it up
        finally:
            if viewer.poll() is None:
                viewer.kill()
                viewer.wait()


def test_a_live_run_picked_on_the_runs_page_opens_in_the_same_tab(tmp_path):
    """serve DONE (a finished run): the page says it is not running; Enter on the live detached run above it opens
    the app on that run in the same tab, and d (detach) comes back to the runs page."""
    from tests.cli.conftest import invoke

    runs = tmp_path / "runs"
    iris = ("-d", "iris", "-m", "4-8-3", "--runs-dir", runs)
    assert invoke("train", *iris, "-e", "1", "--headless", "--name", "done").exit_code == 0
    assert invoke("train", *iris, "-e", "100000", "--detach", "--name", "live").exit_code == 0  # the newest: row 1
    server = serving(runs, tmp_path / "serve.log", "done")
    try:
        proc, port = next(server)
        page, screens = open_page(port, "Pick a run below", "\r", "samples/s", "d", "Pick a run below")
        page.kill()
        page.wait()
        assert "run done is not running (status: finished)" in screens[0] and "live" in screens[0]
        assert "● running" in screens[1] and "4-8-3 on iris" in screens[1]
        assert "run done is not running" in screens[2]
        assert proc.poll() is None and len(children(proc.pid)) == 1, "one viewer did all three"
    finally:
        server.close()
        invoke("stop", "live", "--runs-dir", runs)
