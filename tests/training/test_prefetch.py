"""The data a training command loads in the background is the data the trainer would load itself: the same arrays,
the same notes, the same one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from tuinet.errors import DataError
from tuinet.training.config import TrainConfig
from tuinet.training.prefetch import DataPrefetch
from tuinet.training.trainer import Trainer


def _prepared(config: TrainConfig, prefetch: bool) -> Trainer:
    t = Trainer(config, run_dir=False, prefetch=DataPrefetch(config) if prefetch else None)
    t.prepare()
    return t


def test_prefetched_data_and_notes_match_a_direct_load(tmp_path):
    csv = tmp_path / "t.csv"
    rows = ["a,b,label"] + [f"{i % 7},{(i * 3) % 5},{i % 2}" for i in range(60)] + ["nan,1,0"]
    csv.write_text("\n".join(rows) + "\n")
    config = TrainConfig.from_dict({"dataset": str(csv), "model": "8", "epochs": 1, "seed": 3})
    direct, fetched = _prepared(config, False), _prepared(config, True)
    assert direct._notes and fetched._notes == direct._notes  # the dropped row is noted, once, in order
    for split in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        a, b = getattr(direct.data, split), getattr(fetched.data, split)
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert fetched.data.normalizer == direct.data.normalizer


def test_a_loading_error_comes_from_prepare_unchanged(tmp_path):
    config = TrainConfig.from_dict({"dataset": str(tmp_path / "missing.csv"), "epochs": 1})
    with pytest.raises(DataError) as direct:
        _prepared(config, False)
    with pytest.raises(DataError) as fetched:
        _prepared(config, True)
    assert str(fetched.value) == str(direct.value)
