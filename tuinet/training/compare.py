"""Many runs side by side: run records read from run folders, curves read downsampled and incrementally from
``metrics.jsonl``, filters, sorting and the settings that differ.

Nothing here imports Textual or click: the Compare screen of the app and ``tuinet compare --headless`` both use it.
A run folder is the unit (config.json, metrics.jsonl, status.json, checkpoints); nothing is stored anywhere else.

Reading is bounded for hundreds of runs: a :class:`CurveReader` remembers its byte offset in ``metrics.jsonl`` and
keeps at most ``max_points`` points per series (when a series fills up, every other point is dropped and the
stride doubles, so the whole run keeps an even resolution); a half-written last line (a live run, or one killed
mid-write) is left for the next poll, a damaged line is skipped and counted, and an event of another protocol
version is read for the fields it shares, with one note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

#: the x axes a curve can be drawn against, in the order a key cycles them
X_AXES = ("epoch", "step", "samples", "time")
#: the series a run has: (event kind, field) for each
SERIES = {
    "train_loss": ("step", "loss"),
    "train_accuracy": ("step", "accuracy"),
    "val_loss": ("epoch", "val_loss"),
    "val_accuracy": ("epoch", "val_accuracy"),
}
#: statuses a run record can show (``live``: a trainer holds the folder now; ``crashed``: status.json says it runs
#: but no trainer does)
STATUSES = ("live", "paused", "finished", "stopped", "early_stopped", "failed", "crashed", "unknown")
#: the table's columns: key -> (heading, what it is); every one is a valid sort key
COLUMNS = {
    "name": ("run", "the run's name"),
    "status": ("status", "live / finished / stopped / crashed ..."),
    "dataset": ("dataset", "the dataset"),
    "model": ("model", "the model spec"),
    "params": ("params", "trainable parameters"),
    "epochs": ("epochs", "epochs done / planned"),
    "best_val_loss": ("best val loss", "lowest validation loss"),
    "best_val_accuracy": ("best val acc", "validation accuracy at the epoch of the lowest validation loss"),
    "test_accuracy": ("test acc", "test accuracy at the end"),
    "train_seconds": ("train time", "seconds inside training steps"),
    "samples_per_second": ("samples/s", "training throughput"),
}
#: the settings compared between runs (config.json keys), in the order the diff lists them
SETTINGS = ("dataset", "model", "activation", "optimizer", "lr", "batch_size", "epochs", "schedule", "dropout", "l1",
            "l2", "weight_decay", "momentum", "betas", "clip_grad", "normalize", "val_split", "limit", "seed")


@dataclass
class Curve:
    """One series of one run, downsampled: x values for every axis of :data:`X_AXES`, and y."""

    epoch: list[float] = field(default_factory=list)
    step: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    def points(self, x_axis: str) -> tuple[list[float], list[float]]:
        """(x, y) against ``x_axis`` (one of :data:`X_AXES`)."""
        raise NotImplementedError


class CurveReader:
    """Follows one run's ``metrics.jsonl``: each :meth:`poll` reads what was appended since the last one.

    Args:
        path: the metrics file.
        max_points: the most points kept per series.
    """

    def __init__(self, path: str | Path, max_points: int = 400):
        raise NotImplementedError

    def poll(self) -> bool:
        """Read newly appended complete lines; True when any series changed."""
        raise NotImplementedError

    def curve(self, series: str) -> Curve:
        """The curve of one of :data:`SERIES`."""
        raise NotImplementedError

    @property
    def notes(self) -> list[str]:
        """What could not be read, one short line each (damaged lines skipped, another protocol version ...)."""
        raise NotImplementedError

    @property
    def events(self) -> dict[str, dict[str, Any]]:
        """The newest event of each kind read so far (``started``, ``epoch``, ``finished`` ...)."""
        raise NotImplementedError


@dataclass
class RunRecord:
    """What the runs table shows of one run, read from its folder (status.json, config.json, metrics.jsonl)."""

    name: str
    path: Path
    status: str
    dataset: str | None = None
    model: str | None = None
    params: int | None = None
    epochs_done: int | None = None
    epochs_planned: int | None = None
    best_val_loss: float | None = None
    best_val_accuracy: float | None = None
    test_accuracy: float | None = None
    train_seconds: float | None = None
    samples_per_second: float | None = None
    started: float | None = None  # Unix time
    config: dict[str, Any] = field(default_factory=dict)
    parent: dict[str, Any] | None = None  # a branched run's origin: {"run": name, "epoch": n, "step": n}
    notes: list[str] = field(default_factory=list)  # what could not be read

    def value(self, key: str) -> Any:
        """The value of a column (:data:`COLUMNS`) or a setting (a config.json key), for sorting and filtering."""
        raise NotImplementedError


def load_runs(runs_dir: str | Path | None = None, names: Sequence[str] = (), *, filter: str | None = None,
              sort: str | None = None, limit: int | None = None) -> list[RunRecord]:
    """The runs of ``runs_dir`` (default: $TUINET_RUNS_DIR or ./runs) as records.

    ``names`` picks runs by name or path (an unknown one is a ConfigError naming it); with none, every run, newest
    first. ``filter`` and ``sort`` as :func:`parse_filter` and :func:`sort_runs` take them; ``limit`` keeps the
    first that many after sorting. A folder with missing or damaged files gives a record with what can be read and a
    note, never an exception.
    """
    raise NotImplementedError


def parse_filter(expr: str) -> Callable[[RunRecord], bool]:
    """A predicate from a filter expression: comma- or ``and``-separated terms ``KEY OP VALUE`` where KEY is a column
    or a setting, OP one of ``= != < <= > >= ~`` (``~``: contains), e.g. ``dataset=mnist, lr<0.01, model~cnn,
    status=finished``. A malformed expression is a ConfigError with one line that says what is wrong."""
    raise NotImplementedError


def sort_runs(records: Iterable[RunRecord], key: str) -> list[RunRecord]:
    """Records sorted by a column or setting; ``-KEY`` sorts descending; missing values go last either way."""
    raise NotImplementedError


def settings_diff(records: Sequence[RunRecord]) -> list[tuple[str, list[Any]]]:
    """The settings (:data:`SETTINGS` first, then any other config key) whose values differ between ``records``:
    ``[(key, [value of each record, None where missing]), ...]``. Empty for fewer than two records."""
    raise NotImplementedError
