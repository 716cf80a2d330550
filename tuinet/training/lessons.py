"""Guided experiments (``tuinet learn``): an idea seen against its absence.

A lesson is two to four short runs on shipped data that differ in exactly one setting, a caption that says what to
look for, and a verdict written afterwards from what the runs measured (their ``metrics.jsonl``), never prepared in
advance. The runs are ordinary run folders inside one lesson folder, so ``tuinet compare`` and ``tuinet runs`` read
them like any other.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tuinet.errors import ConfigError, TuinetError

DEEP = 10  # hidden layers of the vanishing-gradient nets
WIDTH = 32


def _deep(layer: str) -> str:
    return ",".join([f"dense{WIDTH}", *([layer] * (DEEP - 1))])


@dataclass(frozen=True)
class Lesson:
    """One guided experiment.

    Attributes:
        name: what ``tuinet learn NAME`` takes.
        title: one line.
        caption: what to look for while the runs train.
        base: the options every run shares (TrainConfig fields).
        runs: (label, the options of that run that differ from the first run's); the first run's are its own.
        verdict: extra sentences from the runs' summaries (the common table is written for every lesson).
    """

    name: str
    title: str
    caption: str
    base: dict[str, Any]
    runs: tuple[tuple[str, dict[str, Any]], ...]
    verdict: Callable[[list["RunSummary"]], list[str]] = field(default=lambda runs: [])

    @property
    def varied(self) -> list[str]:
        """The settings the runs vary (each run changes one of them against the first run)."""
        return sorted({k for _, opts in self.runs[1:] for k in opts} | set(self.runs[0][1]))

    def configs(self, overrides: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Each run's label and options: the base, the overrides given (``--epochs 40``), the run's own settings.

        An override of a setting the lesson varies would erase the difference it is about: a ConfigError."""
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        clash = sorted(set(overrides) & set(self.varied))
        if clash:
            raise ConfigError(f"lesson {self.name} compares runs that differ in {', '.join(self.varied)}; "
                              f"--{clash[0].replace('_', '-')} cannot be set for all of them")
        first = self.runs[0][1]
        out = []
        for label, opts in self.runs:
            cfg = {**self.base, **overrides, **first, **opts}
            out.append((label, cfg))
        return out


@dataclass
class RunSummary:
    """What one finished (or stopped) run measured, read from its folder."""

    label: str
    path: Path
    status: str = "?"
    num_params: int | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)
    diverged: int = 0
    early_stopped_at: int | None = None
    test_accuracy: float | None = None
    steps: int | None = None
    train_seconds: float | None = None
    grad_norms: list[float] = field(default_factory=list)  # the last layer_stats, input side first
    first_grad_norms: list[float] = field(default_factory=list)  # the first layer_stats, input side first
    first_stats_step: int | None = None  # the step of the first layer_stats
    sizes: dict[str, int] = field(default_factory=dict)  # samples in each split: train, val, test

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch event (empty before the first epoch ended)."""
        return self.epochs[-1] if self.epochs else {}

    @property
    def best_val_accuracy(self) -> float | None:
        """The best validation accuracy of any epoch."""
        vals = [e["val_accuracy"] for e in self.epochs if e.get("val_accuracy") is not None]
        return max(vals) if vals else None

    def first_epoch_reaching(self, accuracy: float) -> int | None:
        """The first epoch whose validation accuracy reached ``accuracy`` (None: none did)."""
        return next((e["epoch"] for e in self.epochs if (e.get("val_accuracy") or 0) >= accuracy), None)


def summarize(label: str, run_dir: str | Path) -> RunSummary:
    """Read a run folder's ``metrics.jsonl`` (a half-written last line is skipped) and ``status.json``."""
    path = Path(run_dir)
    s = RunSummary(label, path)
    try:
        lines = (path / "metrics.jsonl").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        kind = e.get("event")
        if kind == "started":
            s.num_params = e.get("num_params")
            sizes = (e.get("dataset") or {}).get("sizes")
            s.sizes = {k: v for k, v in sizes.items() if isinstance(v, int)} if isinstance(sizes, dict) else {}
        elif kind == "epoch":
            s.epochs.append(e)
        elif kind == "diverged":
            s.diverged += 1
        elif kind == "early_stopped":
            s.early_stopped_at = e.get("epoch")
        elif kind == "layer_stats":
            s.grad_norms = [r["grad_norm"] for r in e.get("layers", [])
                            if r.get("kind") in ("Dense", "DenseResidual") and r.get("grad_norm") is not None]
            if s.first_stats_step is None:
                s.first_grad_norms, s.first_stats_step = s.grad_norms, e.get("step")
        elif kind == "finished":
            s.test_accuracy, s.steps, s.train_seconds = e.get("test_accuracy"), e.get("steps"), e.get("train_seconds")
    try:
        s.status = json.loads((path / "status.json").read_text()).get("status", "?")
    except (OSError, ValueError, AttributeError):
        pass
    return s


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.3g}"


def result_text(lesson: Lesson, runs: list[RunSummary]) -> str:
    """What happened in these runs, from their measurements: a line per run, the best run, the lesson's own points."""
    lines = [f"What happened in these runs ({lesson.name}): best validation accuracy, test accuracy, final "
             "training / validation loss"]
    width = max(len(r.label) for r in runs)
    same_length = len({len(r.epochs) for r in runs}) == 1
    for r in runs:
        f = r.final
        lines.append(f"  {r.label:<{width}}  val {_pct(r.best_val_accuracy)}  test {_pct(r.test_accuracy)}  "
                     f"loss {_num(f.get('train_loss'))} / {_num(f.get('val_loss'))}"
                     + ("" if same_length else f"  {len(r.epochs)} epochs")
                     + ("" if r.status == "finished" else f"  ({r.status})"))
    scored = [r for r in runs if r.best_val_accuracy is not None]
    if len(scored) > 1:
        best = max(scored, key=lambda r: r.best_val_accuracy)
        worst = min(scored, key=lambda r: r.best_val_accuracy)
        lines.append(f"  Best: {best.label} at {_pct(best.best_val_accuracy)}, "
                     f"{100 * (best.best_val_accuracy - worst.best_val_accuracy):.1f} points above {worst.label}.")
    lines += [f"  {s}" for s in lesson.verdict(runs)]
    return "\n".join(lines)


# --- what each lesson adds to the table ------------------------------------------------------------------------------

def _lr_verdict(runs: list[RunSummary]) -> list[str]:
    out = []
    for r in runs:
        losses = [e["train_loss"] for e in r.epochs if e.get("train_loss") is not None]
        if len(losses) > 1:
            out.append(f"{r.label}: training loss {losses[0]:.3g} after the first epoch, {losses[-1]:.3g} at the end"
                       + (f"; diverged {r.diverged} time(s), rolled back with a lower lr" if r.diverged else ""))
        elif r.diverged:
            out.append(f"{r.label}: diverged {r.diverged} time(s), rolled back with a lower lr")
    return out


def _reach_verdict(runs: list[RunSummary]) -> list[str]:
    top = max((r.best_val_accuracy or 0) for r in runs)
    goal = math.floor(0.95 * top * 100) / 100
    parts = [f"{r.label} " + (f"epoch {r.first_epoch_reaching(goal)}" if r.first_epoch_reaching(goal) else "never")
             for r in runs]
    return [f"First epoch at {100 * goal:.0f}% validation accuracy: " + ", ".join(parts) + "."] if goal > 0 else []


def _gap_verdict(runs: list[RunSummary]) -> list[str]:
    out = []
    for r in runs:
        f = r.final
        if f.get("train_accuracy") is not None and f.get("val_accuracy") is not None:
            gap = 100 * (f["train_accuracy"] - f["val_accuracy"])
            losses = [e["val_loss"] for e in r.epochs if e.get("val_loss") is not None]
            rise = losses[-1] - min(losses) if losses else 0.0
            out.append(f"{r.label}: train {_pct(f['train_accuracy'])}, validation {_pct(f['val_accuracy'])} "
                       f"(gap {gap:.1f} points), validation loss {rise:.3g} above its lowest")
            if r.early_stopped_at:
                out.append(f"{r.label}: stopped at epoch {r.early_stopped_at}, the best epoch's weights restored")
    return out


def _gradient_verdict(runs: list[RunSummary]) -> list[str]:
    out = []
    for r in runs:
        g = r.grad_norms
        if len(g) > 1 and g[-1] > 0:
            out.append(f"{r.label}: gradient norm {g[0]:.2g} at layer 1, {g[-1]:.2g} at the output "
                       f"(ratio {g[0] / g[-1]:.2g})")
    return out


def _init_verdict(runs: list[RunSummary]) -> list[str]:
    out = []
    for r in runs:
        parts = []
        g = r.first_grad_norms
        if len(g) > 1 and g[-1] > 0:
            parts.append(f"at step {r.first_stats_step} gradient norm {g[0]:.2g} at layer 1, {g[-1]:.2g} at the output "
                         f"(ratio {g[0] / g[-1]:.2g})")
        first = r.epochs[0].get("train_loss") if r.epochs else None
        if first is not None:
            parts.append(f"first epoch's training loss {_num(first)}")
        if r.diverged:
            parts.append(f"the loss blew up {r.diverged} time(s) (rolled back, lr lowered)")
        if parts:
            out.append(f"{r.label}: " + "; ".join(parts))
    return out


def _batch_verdict(runs: list[RunSummary]) -> list[str]:
    return [f"{r.label}: {r.steps or 0:,} optimizer steps in {_num(r.train_seconds)} s of training" for r in runs]


#: a weight this close to zero counts as zero in the L1/L2 lesson (SGD's L1 steps leave the weights it pulls to
#: zero within lr x l1 = 0.0003 of it, jumping from side to side)
ZERO = 1e-3


def first_layer_weights(run_dir: str | Path) -> np.ndarray | None:
    """The weights of the first layer with parameters in a run's ``latest.npz`` (None: unreadable)."""
    from tuinet.engine.checkpoint import load_checkpoint
    from tuinet.training.stats import trainable_layers

    try:
        layers = trainable_layers(load_checkpoint(Path(run_dir) / "latest.npz").build_model())
    except (TuinetError, OSError):
        return None
    return layers[0].params[0] if layers else None


def _sparsity_verdict(runs: list[RunSummary]) -> list[str]:
    out = []
    for r in runs:
        w = first_layer_weights(r.path)
        if w is None:
            continue
        a = np.abs(w)
        unused = int(np.sum(np.all(a < ZERO, axis=1)))
        out.append(f"{r.label}: first layer {100 * np.mean(a < ZERO):.0f}% of its {a.size:,} weights at zero, "
                   f"{unused} of its {a.shape[0]} inputs unused, weight norm "
                   f"{np.sqrt(np.sum(w.astype(np.float64) ** 2)):.3g}, largest {a.max():.3g}")
    if out:
        out.append(f"(a weight is at zero when |w| < {ZERO:g}; an input is unused when every weight from it is)")
    return out


def _split_verdict(runs: list[RunSummary]) -> list[str]:
    out = []
    for r in runs:
        n, best = r.sizes.get("val"), r.best_val_accuracy
        if not n or best is None:
            continue
        err = 100 * math.sqrt(max(best * (1 - best), 1 / n) / n)  # one standard error of an accuracy on n samples
        line = (f"{r.label}: {n:,} validation samples, best validation accuracy {_pct(best)} (one standard error "
                f"about ±{err:.1f} points)")
        if r.test_accuracy is not None:
            side = "above" if best >= r.test_accuracy else "below"
            line += (f", test accuracy {_pct(r.test_accuracy)} on {r.sizes.get('test', 0):,}: validation was "
                     f"{abs(100 * (best - r.test_accuracy)):.1f} points {side}")
        out.append(line)
    return out


#: the shifts (pixels to the right) the CNN and the MLP read the test digits at, and how many digits
SHIFTS, SHIFTED_DIGITS = (0, 2, 4), 1000


def shifted_accuracy(run_dir: str | Path, shifts: tuple[int, ...] = SHIFTS, n: int = SHIFTED_DIGITS
                     ) -> list[float] | None:
    """A run's accuracy on the first ``n`` digits of its test split moved ``shift`` pixels to the right (MNIST's
    black border comes in on the left), from its ``latest.npz``; None when unreadable."""
    from tuinet.engine.checkpoint import load_checkpoint
    from tuinet.training.evaluation import checkpoint_model, rebuild_test_split

    try:
        ckpt = load_checkpoint(Path(run_dir) / "latest.npz")
        model = checkpoint_model(ckpt)
        x, y, _ = rebuild_test_split(ckpt)
    except (TuinetError, OSError):
        return None
    x, y = x[:n], y[:n]
    background = float(x.min())
    out = []
    for s in shifts:
        xs = np.full_like(x, background)
        xs[:, :, s:] = x[:, :, :x.shape[2] - s]
        out.append(float(np.mean(model.predict_proba(xs).argmax(axis=1) == y)))
    return out


def _shifted_text(run_dir: Path) -> str:
    """"last weights on the first 1,000 test digits as they are 95.1%, moved 2 pixels right 88.3%, ..." for a run
    (empty when unreadable)."""
    acc = shifted_accuracy(run_dir)
    if acc is None:
        return ""
    return f"last weights on the first {SHIFTED_DIGITS:,} test digits " + ", ".join(
        f"{'as they are' if s == 0 else f'moved {s} pixels right'} {100 * a:.1f}%" for s, a in zip(SHIFTS, acc))


def _params_verdict(runs: list[RunSummary]) -> list[str]:
    out = []
    for r in runs:
        line = f"{r.label}: {r.num_params:,} parameters" if r.num_params else r.label
        shifted = _shifted_text(r.path)
        if shifted:
            line += "; " + shifted
        out.append(line)
    out.append("Shared filters and pooling forgive a digit off its place; the MLP learnt each position apart. Try "
               "one of your own on the lesson's Compare screen: w (draw), m (centring off), and draw it off centre.")
    return out


def _augment_verdict(runs: list[RunSummary]) -> list[str]:
    out = []
    for r in runs:
        f = r.final
        parts = []
        if f.get("train_accuracy") is not None and f.get("val_accuracy") is not None:
            parts.append(f"train {_pct(f['train_accuracy'])}, validation {_pct(f['val_accuracy'])} (gap "
                         f"{100 * (f['train_accuracy'] - f['val_accuracy']):.1f} points)")
        shifted = _shifted_text(r.path)
        if shifted:
            parts.append(shifted)
        if parts:
            out.append(f"{r.label}: " + "; ".join(parts))
    out.append("An augmented run's training accuracy is measured on its augmented batches, the versions it trained "
               "on. The network never saw the same digit twice, so it could not learn the 1,000 by heart; and it was "
               "shown digits moved, so it reads moved ones. Try one of your own on the lesson's Compare screen: w (draw), "
               "m (centring off), and draw it off centre.")
    return out


LESSONS: dict[str, Lesson] = {lesson.name: lesson for lesson in (
    Lesson("lr", "learning rate: too low, good, too high",
           "Watch the training loss: too low crawls, good falls fast, too high jumps around or diverges (the guard "
           "then rolls back and lowers the lr).",
           dict(dataset="digits", model="64", optimizer="sgd", batch_size=32, epochs=15),
           (("lr-too-low", {"lr": 0.0005}), ("lr-good", {"lr": 0.1}), ("lr-too-high", {"lr": 20.0})),
           _lr_verdict),
    Lesson("optimizers", "SGD vs momentum vs Adam",
           "Same net, same lr: watch how many epochs each optimizer needs to reach a good validation accuracy.",
           dict(dataset="digits", model="64,64", lr=0.01, batch_size=32, epochs=10),
           (("sgd", {"optimizer": "sgd"}), ("momentum", {"optimizer": "momentum"}), ("adam", {"optimizer": "adam"})),
           _reach_verdict),
    Lesson("overfitting", "overfitting: no regularization vs dropout vs L2 vs early stopping",
           "200 training digits and a big net: without regularization the training accuracy reaches 100% while the "
           "validation loss turns up; watch how far apart train and validation end in each run.",
           dict(dataset="digits", model="256,256", optimizer="adam", lr=0.001, limit=200, batch_size=32,
                epochs=60),
           (("none", {}), ("dropout", {"dropout": 0.5}), ("l2", {"l2": 0.003}), ("early-stopping", {"patience": 5})),
           _gap_verdict),
    Lesson("vanishing", "vanishing gradients: deep sigmoid vs deep ReLU vs skip connections vs batch norm",
           f"{DEEP} hidden layers of {WIDTH}: with sigmoids the gradient shrinks layer by layer and the first layers "
           "barely learn; ReLU, skip connections or batch norm keep it flowing. Watch the curves; the result "
           "gives each run's gradient norm at layer 1 against the output's.",
           dict(dataset="digits", model=",".join([str(WIDTH)] * DEEP), activation="sigmoid", optimizer="sgd",
                lr=0.1, batch_size=32, epochs=15, stats_every=10),
           (("sigmoid", {}), ("relu", {"activation": "relu"}),
            ("sigmoid-skip", {"model": _deep("skip32sigmoid")}),
            ("sigmoid-batchnorm", {"model": ",".join(f"dense{WIDTH},bn,sigmoid" for _ in range(DEEP))})),
           _gradient_verdict),
    Lesson("l1-vs-l2", "L1 vs L2 regularization: weights at zero or weights small",
           "Both penalties pull the weights toward zero. L1 (l1 x the sum of |w|) pulls each by the same amount every "
           "step, so the weights that do not earn their keep end at zero and whole inputs drop out; L2 (l2 x the "
           "sum of w^2) pulls each in proportion to its size: all shrink, few vanish. The result counts them in "
           "each run's first layer.",
           dict(dataset="digits", model="64", optimizer="sgd", lr=0.1, batch_size=32, epochs=30),
           (("none", {}), ("l1", {"l1": 0.003}), ("l2", {"l2": 0.003})),
           _sparsity_verdict),
    Lesson("splits", "a validation set of 2%, 10% or 30% of the data",
           "The validation set picks the best epoch and is all you see while training; the test set, kept aside, "
           "says what it was worth. Watch how the validation accuracy jumps on the smallest set and how far its "
           "best lands from the test accuracy.",
           dict(dataset="digits", model="64", optimizer="adam", lr=0.001, batch_size=32, epochs=20),
           (("2-percent", {"val_split": 0.02}), ("10-percent", {"val_split": 0.1}), ("30-percent", {"val_split": 0.3})),
           _split_verdict),
    Lesson("init", "weight initialization: too small, He, too large",
           f"{DEEP} ReLU layers of {WIDTH}, their initial weights x0.5, x1 (He's scheme, which keeps a signal's size "
           "from layer to layer) and x2: the signal and the gradient shrink or grow by that factor at every layer. "
           "Too small and the gradient vanishes before the first layers; too large and the first steps explode "
           "(the guard rolls back and lowers the lr). Watch the loss; the result gives the gradient norms at the "
           "first look (step 10).",
           dict(dataset="digits", model=",".join([str(WIDTH)] * DEEP), activation="relu", optimizer="sgd", lr=0.1,
                batch_size=32, epochs=15, stats_every=10),
           (("x0.5", {"init_gain": 0.5}), ("he", {"init_gain": 1.0}), ("x2", {"init_gain": 2.0})),
           _init_verdict),
    Lesson("normalization", "input normalization on vs off",
           "Wine's 13 features range from 0.1 to 1,680: unnormalized, the largest ones dominate the first layer; "
           "standardized, each counts. Watch the loss.",
           dict(dataset="wine", model="32", optimizer="sgd", lr=0.01, batch_size=16, epochs=30),
           (("off", {"normalize": "none"}), ("standardized", {"normalize": "standard"})),
           _reach_verdict),
    Lesson("batch-size", "batch size 1 vs 32 vs the full batch",
           "Same lr and epochs: batch 1 takes many noisy steps, the full batch one smooth step per epoch. Watch the "
           "loss against epochs, then against wall time (x on the Compare screen).",
           dict(dataset="digits", model="64", optimizer="sgd", lr=0.02, epochs=10, log_every=50),
           (("batch-1", {"batch_size": 1}), ("batch-32", {"batch_size": 32}), ("full-batch", {"batch_size": 100_000})),
           _batch_verdict),
    Lesson("cnn-vs-mlp", "a CNN against an MLP with the same parameter count on MNIST",
           "About 5,300 parameters each: the MLP must learn every position separately, the CNN shares its filters "
           "across the image. Watch the validation accuracy; the result also reads test digits moved off their "
           "place.",
           dict(dataset="mnist", optimizer="adam", lr=0.003, limit=6000, batch_size=64, epochs=3),
           (("cnn", {"model": "conv3x3x8,maxpool2,relu,conv3x3x16,maxpool2,relu"}), ("mlp", {"model": "7"})),
           _params_verdict),
    Lesson("augmentation", "data augmentation: none vs moved digits vs moved, turned and zoomed digits",
           "1,000 training digits and a net of 256: without augmentation it learns them by heart (training accuracy "
           "near 100%, validation well below). Moved by up to 2 pixels, or also turned by up to 15 degrees and "
           "zoomed by up to 10%, each digit comes back as a new version at every step. Watch the gap between train "
           "and validation; the result also reads test digits moved off their place.",
           dict(dataset="mnist", model="256", optimizer="adam", lr=0.001, limit=1000, batch_size=32, epochs=30),
           (("none", {"augment": None}), ("shift", {"augment": "shift=2"}),
            ("shift-rotate-scale", {"augment": "shift=2,rotate=15,scale=0.1"})),
           _augment_verdict),
)}


def get_lesson(name: str) -> Lesson:
    """The lesson called ``name``; ConfigError naming the lessons otherwise."""
    if name not in LESSONS:
        raise ConfigError(f"no lesson called {name!r}; lessons: {', '.join(LESSONS)}")
    return LESSONS[name]


def lesson_folder(runs_dir: str | Path, name: str) -> Path:
    """A new folder for one sitting of a lesson: ``RUNS_DIR/lesson-NAME-YYYYmmdd-HHMMSS`` (a suffix if taken)."""
    base = Path(runs_dir) / f"lesson-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    path.mkdir(parents=True)
    return path
