"""The augmenter a run asks for: its ``augment`` setting (:mod:`tuinet.data.augment`) on its training split, made
into the engine's :class:`~tuinet.engine.augment.Augmenter`."""

from __future__ import annotations

import numpy as np

from tuinet.data.augment import background, check_input, parse_augment
from tuinet.engine.augment import Augmenter


def make_augmenter(spec: str | None, x_train: np.ndarray, input_shape: tuple[int, ...], dataset: str,
                   seed: int) -> "Augmenter | None":
    """The :class:`Augmenter` a run's ``augment`` setting asks for on its training split (None for none);
    ConfigError with one line when it does not apply to the data (see :func:`check_input`)."""
    aug = parse_augment(spec)
    if not aug.active:
        return None
    check_input(aug, input_shape, dataset)
    fill = background(x_train) if aug.pictures_only and len(x_train) else None
    return Augmenter(aug, input_shape, fill, seed)


