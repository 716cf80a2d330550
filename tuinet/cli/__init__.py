"""The ``tuinet`` command line (click): one module per command group, all registered on :func:`main`.

``main`` is imported lazily, so that :mod:`tuinet.cli.entry` can guard the start-up imports before they run.
"""

from typing import Any

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    if name == "main":
        from tuinet.cli.group import main

        return main
    raise AttributeError(f"module 'tuinet.cli' has no attribute {name!r}")
