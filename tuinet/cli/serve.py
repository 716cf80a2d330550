"""``tuinet serve``: the app in a browser tab, on localhost only, with no process left behind.

textual-serve runs one viewer process per browser tab. Two things it does not do are done here:

- a viewer never outlives its page: its output is always read (a viewer writing to a full pipe would hang), and when
  the page goes (closed, crashed, a dropped connection) the viewer is asked to quit, its input is closed, and after
  :data:`GRACE` seconds it gets SIGTERM, then SIGKILL; the viewer itself also exits on its own when its input ends
  (:mod:`tuinet.app.served`), so even a killed server leaves nothing running;
- ``serve`` ends its viewers when it ends (SIGTERM, SIGINT, SIGHUP).

The page (``app_index.html`` next to this file) loads nothing from another host (the font is textual-serve's own
copy), has a favicon, reaches the websocket on whatever host and port the browser used (``ssh -L 9000:localhost:8000``
works), and puts the keyboard focus in the terminal as soon as it loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import click

from tuinet.cli.common import CONTEXT, friendly_errors, runs_dir_option
from tuinet.errors import ConfigError

LOCALHOST = ("localhost", "127.0.0.1", "::1")
#: seconds a viewer has to quit after its page went, then again after SIGTERM
GRACE = 3.0
#: websocket ping interval: a page whose connection vanished without a word (a dropped tunnel) counts as gone after
#: about this long
HEARTBEAT = 10.0
HERE = Path(__file__).parent
FAVICON = HERE / "favicon.svg"


def viewer_argv(run: str | None, runs_dir: str | None) -> list[str]:
    """The command of one tab's viewer: the app on the live run, or the runs page that says why there is none."""
    args = [sys.executable, "-m", "tuinet.cli", "attach", "--page"]
    if run:
        args.append(run)
    if runs_dir:
        args += ["--runs-dir", runs_dir]
    return args


async def end_process(proc: asyncio.subprocess.Process, grace: float = GRACE) -> None:
    """Wait ``grace`` seconds for ``proc`` to exit, then SIGTERM it, wait again, then SIGKILL it."""
    for stop in (None, proc.terminate, proc.kill):
        if stop is not None:
            with contextlib.suppress(ProcessLookupError):
                stop()
        try:
            await asyncio.wait_for(proc.wait(), grace)
            return
        except asyncio.TimeoutError:
            pass
    await proc.wait()


def _make_classes():
    """The server classes (textual-serve is an optional extra: imported only when serving)."""
    from aiohttp import web
    from textual_serve.app_service import AppService
    from textual_serve.server import Server, to_int

    from tuinet.app.served import DRIVER_PATH

    class ViewerService(AppService):
        """One tab's viewer process: started without a shell, its output read until it exits (whether or not the
        page still listens), and ended for sure once the page is gone (see the module's docstring)."""

        def __init__(self, argv: list[str], **kwargs: Any):
            super().__init__(shlex.join(argv), **kwargs)
            self.argv = argv
            self.page_open = True
            self._stopping: asyncio.Task | None = None

        def _build_environment(self, width: int = 80, height: int = 24) -> dict[str, str]:
            env = super()._build_environment(width, height)
            env["TEXTUAL_DRIVER"] = DRIVER_PATH
            return env

        async def _open_app_process(self, width: int = 80, height: int = 24):
            self._process = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self._build_environment(width, height))
            self._stdin = self._process.stdin
            return self._process

        @property
        def pid(self) -> int | None:
            """The viewer's process id (None before it started)."""
            return self._process.pid if self._process is not None else None

        async def _to_page(self, send, payload) -> None:
            if not self.page_open:
                return
            try:
                await send(payload)
            except (ConnectionError, RuntimeError):  # the page went: keep reading, stop sending
                self.page_open = False

        async def on_data(self, payload: bytes) -> None:
            await self._to_page(self.remote_write_bytes, payload)

        async def on_meta(self, data: bytes) -> None:
            # one viewer may show several apps in turn (the runs page, then a run): the page closes when the
            # process ends, not when one of its apps does
            if json.loads(data).get("type") == "exit":
                return
            await self._to_page(super().on_meta, data)

        async def run(self) -> None:
            """Relay the viewer's screen until it exits, then close the page ("Session ended")."""
            await super().run()
            if self._process is not None:
                await end_process(self._process)
            if self.page_open:
                self.page_open = False
                with contextlib.suppress(Exception):
                    await self.remote_close()

        async def stop(self) -> None:
            """The page is gone or the server ends: end the viewer (once, however often this is called)."""
            if self._stopping is None:
                self._stopping = asyncio.ensure_future(self._stop())
            await asyncio.shield(self._stopping)

        async def _stop(self) -> None:
            self.page_open = False
            if self._task is None:
                return
            await self._download_manager.cancel_app_downloads(app_service_id=self.app_service_id)
            await self.send_meta({"type": "quit"})
            with contextlib.suppress(Exception):
                self.stdin.close()  # end of input: the viewer leaves even if it missed the quit
            await end_process(self._process)
            await self._task
            with contextlib.suppress(Exception):
                await self.remote_close()

    class ViewerServer(Server):
        """textual-serve's server with :class:`ViewerService` viewers, a local-only page and a favicon."""

        def __init__(self, argv: list[str], host: str, port: int):
            super().__init__(shlex.join(argv), host=host, port=port, title="tuinet", templates_path=HERE)
            self.argv = argv
            self.services: set[ViewerService] = set()

        async def _make_app(self) -> web.Application:
            app = await super()._make_app()
            app.router.add_get("/favicon.ico", self.handle_favicon)
            app.router.add_get("/favicon.svg", self.handle_favicon)
            return app

        async def handle_favicon(self, request: web.Request) -> web.StreamResponse:
            return web.FileResponse(FAVICON, headers={"Content-Type": "image/svg+xml"})

        async def on_startup(self, app: web.Application) -> None:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self.request_exit)

        async def on_shutdown(self, app: web.Application) -> None:
            """End every viewer (and close its page) before the server goes."""
            await asyncio.gather(*(s.stop() for s in list(self.services)), return_exceptions=True)

        async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
            """One tab: start its viewer, pass the page's keys and size to it, end it when the page goes."""
            websocket = web.WebSocketResponse(heartbeat=HEARTBEAT)
            width = to_int(request.query.get("width", "80"), 80)
            height = to_int(request.query.get("height", "24"), 24)
            await websocket.prepare(request)
            service = ViewerService(self.argv, write_bytes=websocket.send_bytes, write_str=websocket.send_str,
                                    close=websocket.close, download_manager=self.download_manager)
            self.services.add(service)
            try:
                await service.start(width, height)
                await self._process_messages(websocket, service)
            except (ValueError, AssertionError):  # a malformed message: this page is done
                pass
            finally:
                self.services.discard(service)
                await service.stop()
            return websocket

    return ViewerServer


@click.command("serve", context_settings=CONTEXT)
@click.argument("run", required=False)
@click.option("--port", type=int, default=8000, show_default=True, help="Port on localhost.")
@click.option("--host", default="localhost", show_default=True,
              help="Interface: localhost, 127.0.0.1 or ::1 only (reach it from elsewhere with `ssh -L`).")
@runs_dir_option
@friendly_errors
def serve_cmd(run: str | None, port: int, host: str, runs_dir: str | None) -> None:
    """Offer the app in a browser (textual-serve), on localhost only.

    Each browser tab shows the app on RUN (by default the only live run); with no live run to show, the tab says
    why and lists the runs of the folder (Enter attaches to a live one or opens a finished one). Closing the tab
    ends its viewer; training goes on. From a laptop: `ssh -L 8000:localhost:8000 HOST`, then open
    http://localhost:8000."""
    if host not in LOCALHOST:
        raise ConfigError(f"--host {host}: tuinet serve only binds to localhost (it gives full control of your "
                          "training to whoever connects); use `ssh -L 8000:localhost:8000 HOST` to reach it")
    try:
        server_class = _make_classes()
    except ImportError:
        raise ConfigError("tuinet serve needs textual-serve, which is not installed: "
                          "pip install textual-serve (or the serve extra: pip install 'tuinet[serve]')") from None
    from tuinet.training.rundir import find_run

    if run is not None:
        run = str(find_run(run, runs_dir).path)  # a name that matches no run fails now, not in the browser
    click.echo(f"serving tuinet on http://{host}:{port} (localhost only; Ctrl-C ends it and its viewers); from "
               f"another machine: ssh -L {port}:localhost:{port} THIS_HOST, then open http://localhost:{port}",
               err=True)
    server_class(viewer_argv(run, runs_dir), host=host, port=port).serve()
