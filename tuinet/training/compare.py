"""Many runs side by side: run records read from run folders, filters, sorting and the settings that differ.

Nothing here imports Textual or click: the Compare screen of the app and ``tuinet compare --headless`` both use it.
A run folder is the unit (config.json, metrics.jsonl, status.json, checkpoints); nothing is stored anywhere else.
The curves of each run come from :mod:`tuinet.training.curves`.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tuinet.errors import ConfigError
from tuinet.formatting import fmt_num
from tuinet.protocol import ENDED_STATUSES, LIVE_STATUSES, PROTOCOL_VERSION
from tuinet.training.config import TrainConfig, default_runs_dir
from tuinet.training.curves import METRICS_FILE, event_kind, num, read_json_object
from tuinet.training.procs import pid_alive

#: statuses a run record can show (``live``: a trainer holds the folder now; ``crashed``: status.json says it runs
#: but no trainer does)
STATUSES = ("live", "paused", "finished", "stopped", "pruned", "early_stopped", "failed", "crashed", "unknown")
#: the table's columns: key -> (heading, what it is); every one is a valid sort key
COLUMNS = {
    "name": ("run", "the run's name"),
    "status": ("status", "live / finished / stopped / pruned / crashed ..."),
    "dataset": ("dataset", "the dataset"),
    "model": ("model", "the model spec"),
    "params": ("params", "trainable parameters"),
    "epochs": ("epochs", "epochs done / planned"),
    "best_val_loss": ("best val loss", "lowest validation loss"),
    "best_val_accuracy": ("best val acc", "highest validation accuracy"),
    "test_accuracy": ("test acc", "test accuracy at the end (of the best validation epoch's weights by default)"),
    "train_seconds": ("train time", "seconds inside training steps"),
    "samples_per_second": ("samples/s", "training throughput"),
}
#: the settings compared between runs (config.json keys), in the order the diff lists them
SETTINGS = ("dataset", "model", "activation", "optimizer", "lr", "batch_size", "epochs", "schedule", "dropout", "l1",
            "l2", "weight_decay", "momentum", "betas", "clip_grad", "init_gain", "augment", "normalize", "val_split",
            "limit", "seed")
#: config.json keys the settings diff leaves out: they differ between any two runs and the table shows them already
NOT_SETTINGS = ("name", "runs_dir")
#: record fields that are keys for filters and sorting besides the columns and the settings
EXTRA_KEYS = ("epochs_done", "epochs_planned", "started", "parent")

#: the file a trainer holds a lock on while it trains (tuinet.training.rundir.LOCK_NAME; not imported from there,
#: since that module loads the Numba engine and reading runs should not)
_LOCK_NAME = "trainer.lock"
_HEAD_BYTES = 256 << 10  # read at most this much from the start of metrics.jsonl to find the started event
_TAIL_BYTES = 4 << 20  # read at most this much from the end to find the last epoch and final events


# --- run records ----------------------------------------------------------------------------------------------------


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
    pid: int | None = None  # the trainer's process while the run is live or paused
    #: settings changed while it trained (the app's regularization dialog): {key: [as it started, now]}
    changed: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """True while a trainer process holds the run (``live`` or ``paused``)."""
        return self.status in ("live", "paused")

    @property
    def metrics_path(self) -> Path:
        """The run's ``metrics.jsonl``."""
        return self.path / METRICS_FILE

    def value(self, key: str) -> Any:
        """The value of a column (:data:`COLUMNS`) or a setting (a config.json key), for sorting and filtering."""
        if key == "epochs":
            return self.epochs_done
        if key == "parent":
            return self.parent.get("run") if isinstance(self.parent, dict) else self.parent
        if key in COLUMNS or key in EXTRA_KEYS:
            return getattr(self, key)
        return self.config.get(key)

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-ready values (path as text)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["path"] = str(self.path)
        return out


def _lock_holder(path: Path) -> tuple[int | None, float | None]:
    """The live pid recorded in the run's lock file (None when none or dead), and the file's modification time."""
    try:
        p = path / _LOCK_NAME
        st = p.stat()
        pid = int(p.read_text().strip())
    except (OSError, ValueError):
        return None, None
    return (pid if pid_alive(pid) else None), st.st_mtime


def _find_event(data: bytes, kind: str, end: int | None = None) -> tuple[dict[str, Any] | None, int]:
    """The last well-formed ``kind`` event in ``data`` before ``end`` (as a trainer writes it, or with spaces), and
    where its line starts (-1 when there is none)."""
    end = len(data) if end is None else end
    while end > 0:
        pos = max(data.rfind(b'"event":"' + kind.encode() + b'"', 0, end),
                  data.rfind(b'"event": "' + kind.encode() + b'"', 0, end))
        if pos < 0:
            return None, -1
        start = data.rfind(b"\n", 0, pos) + 1
        stop = data.find(b"\n", pos)
        try:
            ev = json.loads(data[start:stop if stop >= 0 else len(data)])
        except (ValueError, RecursionError):
            ev = None
        if isinstance(ev, dict) and ev.get("event") == kind:
            return ev, start
        end = start  # a damaged line: look further back
    return None, -1


def _scan_metrics(path: Path, everything: bool) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[str],
                                                         bool]:
    """The first ``started`` event, the newest events of the kinds a record needs, and the epoch events read.

    Reads the head of the file and its tail back to the last ``epoch`` event only, unless ``everything`` (a run
    without status.json: its best epoch has to be found among all of them). Returns (events by kind, epoch events
    read, notes, whether it ends with a half-written line).
    """
    notes: list[str] = []
    found: dict[str, dict[str, Any]] = {}
    epochs: list[dict[str, Any]] = []
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(16 << 10)
            started, _ = _find_event(head, "started")
            if started is None and size > len(head):  # a long model summary, or log notes before it
                head += f.read(_HEAD_BYTES - len(head))
                started, _ = _find_event(head, "started")
            torn = size > 0 and not head.endswith(b"\n") if size <= len(head) else None
            if everything:
                f.seek(0)
                lines = list(f)
            else:
                window, tail = 16 << 10, b""
                while True:  # the tail, back to the last epoch event (the final events come after it)
                    start = max(0, size - window)
                    f.seek(start)
                    tail = f.read(size - start)
                    if start == 0 or _find_event(tail, "epoch")[0] is not None or window >= _TAIL_BYTES:
                        break
                    window *= 4
                lines = []
            if torn is None:
                f.seek(size - 1)
                torn = f.read(1) != b"\n"
    except FileNotFoundError:
        return found, epochs, [f"{METRICS_FILE} is missing"], False
    except OSError as e:
        return found, epochs, [f"{METRICS_FILE} cannot be read ({e.strerror or e})"], False
    if started is not None:
        found["started"] = started
        v = started.get("v", PROTOCOL_VERSION)
        if v != PROTOCOL_VERSION:
            notes.append(f"{METRICS_FILE} is of protocol version {v} (this tuinet reads version {PROTOCOL_VERSION}): "
                         f"read for the fields it shares")
    wanted = ("epoch", "finished", "stopped", "failed", "early_stopped")
    if not everything:
        for kind in wanted:
            ev, _ = _find_event(tail, kind)
            if ev is not None:
                found[kind] = ev
        return found, epochs, notes, torn
    for line in lines:
        kind = event_kind(line)
        if kind not in wanted:
            continue
        try:
            ev = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(ev, dict):
            found[kind] = ev
            if kind == "epoch":
                epochs.append(ev)
    return found, epochs, notes, torn


def _opt_float(v: Any) -> float | None:
    v = num(v)
    return None if v != v else v


def _opt_int(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def load_run(path: str | Path) -> RunRecord:
    """One run folder as a record; a folder with missing or damaged files gives what can be read, with notes."""
    path = Path(path)
    status, status_note = read_json_object(path / "status.json")
    config, config_note = read_json_object(path / "config.json")
    notes = [n for n in (status_note, config_note) if n]
    events, epochs, metric_notes, torn = _scan_metrics(path / METRICS_FILE, everything=not status)
    notes += metric_notes
    started_ev = events.get("started", {})
    if not config and isinstance(started_ev.get("config"), dict):
        config = started_ev["config"]
        notes.append("settings read from the started event in metrics.jsonl")
    final = max((events[k] for k in ("finished", "stopped", "failed") if k in events),
                key=lambda e: num(e.get("time")) if num(e.get("time")) == num(e.get("time")) else 0.0,
                default=None)

    # status: what status.json says, checked against the trainer process
    raw = status.get("status") if isinstance(status.get("status"), str) else None
    holder, lock_mtime = _lock_holder(path)
    pid = status.get("pid") if pid_alive(status.get("pid")) else None
    if raw in LIVE_STATUSES:
        alive = holder or pid
        kind = ("paused" if raw == "paused" else "live") if alive else "crashed"
        if not alive:
            notes.append(f"status.json says {raw} but no trainer process holds the run: it crashed or was killed")
    elif holder and (lock_mtime or 0) > (num(status.get("updated")) if status.get("updated") else 0):
        kind, alive = "live", holder  # a resume that is starting: the lock is newer than the last status
    elif raw in ENDED_STATUSES:
        kind, alive = raw, None
    elif final is not None:
        kind, alive = final["event"], None
        if kind == "stopped" and final.get("reason") == "pruned":
            kind = "pruned"
    elif holder:
        kind, alive = "live", holder
    elif started_ev:
        kind, alive = "crashed", None
        notes.append("no trainer holds the run and metrics.jsonl has no final event: it crashed or was killed")
    else:
        kind, alive = "unknown", None
    if kind == "finished" and "early_stopped" in events:
        kind = "early_stopped"
    if torn and not alive:
        notes.append(f"{METRICS_FILE} ends with a half-written line (the trainer was killed mid-write)")

    last_epoch = events.get("epoch", {})
    fin = events.get("finished", {})
    best = None
    if not status and epochs:
        finite = [e for e in epochs if num(e.get("val_loss")) == num(e.get("val_loss"))]
        best = min(finite, key=lambda e: e["val_loss"], default=None)
    parent = config.get("parent")
    started = _opt_float(status.get("started"))
    if started is None:
        started = _opt_float(started_ev.get("time"))
    if started is None:
        try:
            started = path.stat().st_mtime
        except OSError:
            started = None
    sps = _opt_float(fin.get("samples_per_second"))
    if sps is None:
        sps = _opt_float(last_epoch.get("samples_per_second"))
    return RunRecord(
        name=path.name, path=path, status=kind,
        dataset=_text(status.get("dataset")) or _text(config.get("dataset")),
        model=_text(status.get("model")) or _text(config.get("model")),
        params=_opt_int(started_ev.get("num_params")),
        epochs_done=_first_int(status.get("epoch"), fin.get("epochs"), last_epoch.get("epoch"),
                               final.get("epoch") if final else None),
        epochs_planned=_first_int(status.get("epochs"), config.get("epochs"), started_ev.get("epochs")),
        best_val_loss=_opt_float(status.get("best_val_loss")) if status else _opt_float((best or {}).get("val_loss")),
        best_val_accuracy=(_opt_float(status.get("best_val_accuracy")) if status
                           else max((v for v in (_opt_float(e.get("val_accuracy")) for e in epochs) if v is not None),
                                    default=None)),
        test_accuracy=_first_float(status.get("test_accuracy"), fin.get("test_accuracy")),
        train_seconds=_first_float(status.get("train_seconds"), fin.get("train_seconds")),
        samples_per_second=sps, started=started, config=config,
        parent=parent if isinstance(parent, dict) else None, notes=notes, pid=alive or None,
        changed=_changed_settings(status.get("changed_settings")))


def _changed_settings(raw: Any) -> dict[str, list[Any]]:
    """status.json's ``changed_settings`` as far as it is well formed: ``{key: [start, now]}`` of numbers (of
    names, for the optimizer)."""
    if not isinstance(raw, dict):
        return {}
    return {k: list(v) for k, v in raw.items() if isinstance(k, str) and isinstance(v, list) and len(v) == 2
            and all(isinstance(x, str if k == "optimizer" else (int, float)) and not isinstance(x, bool) for x in v)}


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _first_int(*values: Any) -> int | None:
    return next((i for i in map(_opt_int, values) if i is not None), None)


def _first_float(*values: Any) -> float | None:
    return next((f for f in map(_opt_float, values) if f is not None), None)


def _is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("config.json", "status.json", METRICS_FILE, _LOCK_NAME))


def load_runs(runs_dir: str | Path | None = None, names: Sequence[str] = (), *, filter: str | None = None,
              sort: str | None = None, limit: int | None = None) -> list[RunRecord]:
    """The runs of ``runs_dir`` (default: $TUINET_RUNS_DIR or ./runs) as records.

    ``names`` picks runs by name or path (an unknown one is a ConfigError naming it); with none, every run, newest
    first. ``filter`` and ``sort`` as :func:`parse_filter` and :func:`sort_runs` take them; ``limit`` keeps the
    first that many after sorting. A folder with missing or damaged files gives a record with what can be read and a
    note, never an exception.
    """
    runs = Path(runs_dir or default_runs_dir())
    keep = parse_filter(filter) if filter else None
    if sort:
        _check_key(sort.lstrip("+-"), "sort key")
    if names:
        folders, seen = [], set()
        for ref in names:
            as_path = Path(ref).expanduser()
            candidates = (as_path, runs / ref) if os.sep in ref or as_path.is_absolute() else (runs / ref, as_path)
            folder = next((c for c in candidates if _is_run_folder(c)), None)
            if folder is None:
                raise ConfigError(f"no run '{ref}' in {runs} (see `tuinet runs`)")
            key = os.path.realpath(folder)
            if key not in seen:
                seen.add(key)
                folders.append(folder)
        records = [load_run(f) for f in folders]
    else:
        try:
            entries = sorted(runs.iterdir()) if runs.is_dir() else []
        except OSError as e:
            raise ConfigError(f"{runs}: cannot list the runs folder ({e.strerror or e})") from None
        records = [load_run(d) for d in entries if not d.name.startswith(".") and _is_run_folder(d)]
        records.sort(key=lambda r: r.started or 0.0, reverse=True)
    if keep is not None:
        records = [r for r in records if keep(r)]
    if sort:
        records = sort_runs(records, sort)
    return records[:limit] if limit is not None else records


# --- filters, sorting, the settings diff -------------------------------------------------------------------------

_CONFIG_KEYS = tuple(f.name for f in fields(TrainConfig))
_OPS = ("<=", ">=", "!=", "==", "=", "<", ">", "~")
_TERM = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|!=|==|=|<|>|~)\s*(.*?)\s*$", re.S)
_NONE_WORDS = ("none", "null", "-", "")


def filter_keys() -> tuple[str, ...]:
    """Every key a filter or a sort may name: the columns, the settings, the other config.json keys, and
    ``epochs_done``, ``epochs_planned``, ``started``, ``parent``."""
    out = dict.fromkeys((*COLUMNS, *SETTINGS, *EXTRA_KEYS, *_CONFIG_KEYS))
    return tuple(out)


def _check_key(key: str, what: str) -> None:
    if key in filter_keys():
        return
    close = difflib.get_close_matches(key, filter_keys(), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(f"unknown {what} {key!r}{hint}; use a column ({', '.join(COLUMNS)}) or a setting such as lr, "
                      f"dropout, optimizer")


def _split_terms(expr: str) -> list[str]:
    """Terms separated by commas or the word ``and``, outside quotes."""
    terms, cur, quote, i = [], [], None, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c == ",":
            terms.append("".join(cur))
            cur = []
            i += 1
            continue
        elif expr[i:i + 5].lower() == " and " and not quote:
            terms.append("".join(cur))
            cur = []
            i += 5
            continue
        cur.append(c)
        i += 1
    if quote:
        raise ConfigError(f"filter {expr!r}: a quote ({quote}) is not closed")
    terms.append("".join(cur))
    return terms


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _as_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(_as_text(x) for x in v)
    return str(v).lower()


def _term(key: str, op: str, want: str) -> Callable[[RunRecord], bool]:
    want_num = _as_number(want)
    want_text = want.lower()

    def test(r: RunRecord) -> bool:
        v = r.value(key)
        if v is None:
            missing = want_text in _NONE_WORDS
            return missing if op in ("=", "==") else (not missing if op == "!=" else False)
        if op == "~":
            return want_text in _as_text(v)
        have = _as_number(v)
        if have is not None and want_num is not None:
            a, b = have, want_num
        else:
            a, b = _as_text(v), want_text
            if (have is None) != (want_num is None) and op not in ("=", "==", "!="):
                return False  # a number against text has no order
        return {"=": a == b, "==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]

    return test


def parse_filter(expr: str) -> Callable[[RunRecord], bool]:
    """A predicate from a filter expression: comma- or ``and``-separated terms ``KEY OP VALUE`` where KEY is a column
    or a setting, OP one of ``= != < <= > >= ~`` (``~``: contains), e.g. ``dataset=mnist, lr<0.01, model~cnn,
    status=finished``. A malformed expression is a ConfigError with one line that says what is wrong."""
    if not isinstance(expr, str):
        raise ConfigError(f"a filter must be text, got {type(expr).__name__}")
    if not expr.strip():
        return lambda r: True
    tests = []
    for term in _split_terms(expr):
        if not term.strip():
            raise ConfigError(f"filter {expr!r}: an empty term (two separators in a row, or one at an end)")
        m = _TERM.match(term)
        if not m:
            raise ConfigError(f"filter term {term.strip()!r}: expected KEY OP VALUE with OP one of "
                              f"{' '.join(o for o in _OPS if o != '==')} (e.g. lr<0.01, model~cnn)")
        key, op, value = m.groups()
        _check_key(key, "filter key")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif not value:
            raise ConfigError(f"filter term {term.strip()!r}: no value after {op!r} (write {key}{op}none to match "
                              f"a missing value)")
        elif value[0] in "<>=!~":
            raise ConfigError(f"filter term {term.strip()!r}: {op + value[0]!r} is not an operator; use one of "
                              f"{' '.join(o for o in _OPS if o != '==')}")
        tests.append(_term(key, op, value))
    return lambda r: all(t(r) for t in tests)


def sort_runs(records: Iterable[RunRecord], key: str) -> list[RunRecord]:
    """Records sorted by a column or setting; ``-KEY`` sorts descending; missing values go last either way."""
    descending = key.startswith("-")
    key = key.lstrip("+-")
    _check_key(key, "sort key")
    present, missing = [], []
    for r in records:
        (missing if r.value(key) is None else present).append(r)

    def order(r: RunRecord) -> tuple[int, Any]:
        v = r.value(key)
        n = _as_number(v) if not isinstance(v, str) else None
        return (0, n) if n is not None else (1, _as_text(v))

    present.sort(key=order, reverse=descending)
    return present + missing


def _norm(v: Any) -> Any:
    """A value in a form where equal settings compare equal (1 and 1.0, a list and a tuple)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return tuple(_norm(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((str(k), _norm(x)) for k, x in v.items()))
    return repr(v)


def settings_diff(records: Sequence[RunRecord]) -> list[tuple[str, list[Any]]]:
    """The settings (:data:`SETTINGS` first, then any other config key) whose values differ between ``records``:
    ``[(key, [value of each record, None where missing]), ...]``. Empty for fewer than two records."""
    if len(records) < 2:
        return []
    keys = dict.fromkeys(SETTINGS)
    for r in records:
        keys.update(dict.fromkeys(k for k in r.config if k not in NOT_SETTINGS))
    out = []
    for k in keys:
        # a setting changed while a run trained shows as "0 → 0.3" (it started with the first, ended with the second)
        values = [f"{fmt_num(r.changed[k][0])} → {fmt_num(r.changed[k][1])}" if k in r.changed else r.config.get(k)
                  for r in records]
        if len({_norm(v) for v in values}) > 1:
            out.append((k, values))
    return out
