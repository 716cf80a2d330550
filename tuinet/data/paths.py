"""Where tuinet finds its shipped datasets and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path


def datasets_dir() -> Path:
    """Return the folder holding the shipped datasets (``mnist/``, ``tabular/``).

    Order: ``$TUINET_DATASETS``, the source checkout's ``datasets/``, then the copy installed as
    ``tuinet._datasets``.
    """
    env = os.environ.get("TUINET_DATASETS")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parents[1]  # tuinet/
    checkout = package.parent / "datasets"
    if (checkout / "mnist").is_dir():
        return checkout
    return package / "_datasets"
