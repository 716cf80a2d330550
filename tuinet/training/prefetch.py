"""A run's dataset, loaded in a background thread while the rest of the command line starts.

Importing NumPy, Numba and the engine is Python work that holds the GIL; loading MNIST is mostly NumPy copies that
release it. The training commands start the load first and import the trainer while it runs, so on two cores the
data costs a warm start next to nothing (see benchmarks/startup.py). This module imports only the data package.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from tuinet.data import Dataset, load_dataset


def load_run_data(config: Any, log: Callable[[str], None]) -> Dataset:
    """Load the dataset a :class:`~tuinet.training.config.TrainConfig` names (notes from loading go to ``log``)."""
    c = config
    return load_dataset(c.dataset, val_split=c.val_split, test_split=c.test_split, seed=c.seed,
                        normalize=c.normalize, target=c.target, task=c.task, limit=c.limit,
                        n_samples=c.n_samples, noise=c.noise, log=log)


class DataPrefetch:
    """Loads a run's dataset in a daemon thread, started at once; :meth:`result` waits for it.

    Args:
        config: the run's TrainConfig.
    """

    def __init__(self, config: Any):
        self.notes: list[str] = []  # notes from loading (rows dropped, ...), for the trainer to log in order
        self._data: Dataset | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._load, args=(config,), name="tuinet-data-prefetch", daemon=True)
        self._thread.start()

    def _load(self, config: Any) -> None:
        try:
            self._data = load_run_data(config, self.notes.append)
        except BaseException as e:  # noqa: BLE001 - raised again, unchanged, in the thread that asks for the data
            self._error = e

    def result(self) -> Dataset:
        """The dataset, once loaded; what loading raised (a DataError, a MemoryError, ...) is raised here."""
        self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._data
