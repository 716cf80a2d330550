"""Arrays a layer keeps from one training step to the next instead of allocating them again.

A large ``np.empty`` is often fresh memory from the operating system (when the allocator gave the last one back),
and every 4 KiB page of it costs a page fault, with the page zeroed, on first touch: 2 us a page here, 7 ms for a
12.8 MB activation. Only arrays that nothing outside the layer's owner can hold may be reused; a residual block
reuses those its sub-layers pass among themselves (see :class:`tuinet.engine.residual.ResidualBlock`).
"""

from __future__ import annotations

import numpy as np


class StepBuffers:
    """Named arrays reused across calls: a new one only when the shape or dtype asked for changes."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, key: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        """The array ``key`` of that shape and dtype (contents left from its last use: overwrite every element)."""
        a = self._arrays.get(key)
        if a is None or a.shape != tuple(shape) or a.dtype != dtype:
            a = self._arrays[key] = np.empty(shape, dtype)
        return a
