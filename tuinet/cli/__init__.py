"""The ``tuinet`` command line (click): one module per command group, all registered on :func:`main`."""

from tuinet.cli.main import main

__all__ = ["main"]
