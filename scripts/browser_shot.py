"""The README's picture of `tuinet serve` in a real browser: headless Chromium, driven over its DevTools protocol.

    python scripts/screenshots.py --only serve

Starts a detached digits run and `tuinet serve` on a free localhost port, opens the page in headless Chromium, waits
until the dashboard has drawn, and saves ``serve.png``. On the way it checks what the page promises: every
request it makes stays on the server (no web font from elsewhere), the keyboard focus is in the terminal without a
click, and the page has a favicon; it prints what it found. Needs ``chromium`` (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tuinet(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tuinet.cli", *args], **kwargs)


async def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await cond()
        if value:
            return value
        await asyncio.sleep(0.25)
    raise SystemExit(f"browser_shot: timed out waiting for {what}")


class DevTools:
    """Just enough of the Chrome DevTools protocol: send a command, collect events."""

    def __init__(self, ws):
        self.ws, self.next_id, self.events = ws, 0, []

    async def call(self, method: str, **params):
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == self.next_id:
                return msg.get("result", {})
            self.events.append(msg)

    async def js(self, expression: str):
        return (await self.call("Runtime.evaluate", expression=expression, returnByValue=True))["result"].get("value")


async def serve_shot(out: Path, size: tuple[int, int], runs: str) -> None:
    """Save ``serve.png``: the dashboard of a live detached run, as the browser shows it."""
    import aiohttp

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("browser_shot: no chromium found (apt-get install chromium)")
    env = {**os.environ, "TUINET_RUNS_DIR": runs}
    subprocess.run([sys.executable, "-m", "tuinet.cli", "train", "-d", "digits", "-e", "400", "--lr", "0.003",
                    "--name", "digits-mlp", "--detach"], env=env, check=True, capture_output=True)
    port, debug_port = _free_port(), _free_port()
    server = _tuinet("serve", "--host", "127.0.0.1", "--port", str(port), env=env, stderr=subprocess.DEVNULL)
    profile = tempfile.mkdtemp()
    chrome = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               f"--remote-debugging-port={debug_port}", f"--user-data-dir={profile}",
                               f"--window-size={size[0] * 10},{size[1] * 19}", "about:blank"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as http:
            async def pages():
                try:
                    async with http.get(f"http://127.0.0.1:{debug_port}/json/list") as r:
                        return [p for p in await r.json() if p.get("type") == "page"]
                except aiohttp.ClientError:
                    return None

            page = (await _wait(pages, 30, "chromium"))[0]
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                dt = DevTools(ws)
                await dt.call("Network.enable")
                await dt.call("Page.enable")

                async def served():
                    with socket.socket() as s:
                        return s.connect_ex(("127.0.0.1", port)) == 0

                await _wait(served, 60, "tuinet serve")
                await dt.call("Page.navigate", url=f"http://127.0.0.1:{port}/")

                async def drawn():
                    return await dt.js("document.body.classList.contains('-first-byte')")

                await _wait(drawn, 60, "the first screen")
                await asyncio.sleep(12)  # a few epochs on the charts
                focus = await dt.js("document.activeElement && document.activeElement.className")
                icon = await dt.js("document.querySelector('link[rel=icon]') && "
                                   "document.querySelector('link[rel=icon]').href")
                shot = await dt.call("Page.captureScreenshot", format="png")
                urls = {e["params"]["request"]["url"] for e in dt.events
                        if e.get("method") == "Network.requestWillBeSent"}
        (out / "serve.png").write_bytes(base64.b64decode(shot["data"]))
        outside = sorted(u for u in urls if not u.startswith((f"http://127.0.0.1:{port}/", f"ws://127.0.0.1:{port}/")))
        print(f"page requests: {len(urls)}, to other hosts: {outside or 'none'}; focus: {focus!r}; icon: {icon}")
    finally:
        chrome.terminate()
        chrome.wait(10)
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        subprocess.run([sys.executable, "-m", "tuinet.cli", "stop", "digits-mlp"], env=env, capture_output=True)
        shutil.rmtree(profile, ignore_errors=True)
