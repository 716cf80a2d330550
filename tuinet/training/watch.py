"""Watch rules: ``--pause-if "val_loss rises 3"``, ``--stop-if "val_accuracy above 99%"``, checked after each epoch.

A rule is ``METRIC CONDITION`` in a small fixed vocabulary, so a user can ask to be stopped before a run overfits
instead of finding out in the morning:

======================  ========================================================================================
``METRIC rises N``      the metric went up in each of the last N epochs (``val_loss rises 3``: overfitting)
``METRIC falls N``      it went down in each of the last N epochs
``METRIC stalls N``     N epochs in a row without a new best (lowest loss, highest accuracy)
``METRIC above X``      it is above X now (accuracies take ``99%`` or ``0.99``)
``METRIC below X``      it is below X now
======================  ========================================================================================

METRIC is one of ``val_loss``, ``val_accuracy``, ``train_loss``, ``train_accuracy`` (also ``loss``, ``accuracy``,
``acc``, ``val_acc``). A rule that fires pauses the run (``--pause-if``; a headless run, which nobody can resume,
stops instead, resumable) or stops it (``--stop-if``), with the rule as the reason. The counts start afresh when a
run is resumed, so a resumed run gets a full window before the same rule can fire again.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from tuinet.errors import ConfigError

METRICS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
ALIASES = {"loss": "train_loss", "accuracy": "train_accuracy", "acc": "train_accuracy", "train_acc": "train_accuracy",
           "val_acc": "val_accuracy"}
COUNTED = ("rises", "falls", "stalls")
THRESHOLDS = ("above", "below")
MAX_EPOCHS = 100_000
_RULE = re.compile(r"^\s*([a-z_]+)\s+([a-z]+)\s+(\S+)\s*$")
HELP = ("METRIC rises|falls|stalls N, or METRIC above|below X; METRIC: val_loss, val_accuracy, train_loss, "
        "train_accuracy")


@dataclass
class Rule:
    """One parsed rule: ``metric`` ``condition`` ``value`` (an epoch count or a threshold)."""

    text: str
    metric: str
    condition: str
    value: float
    history: list[float] = field(default_factory=list)

    def describe(self) -> str:
        """The rule as a user writes it."""
        v = int(self.value) if self.condition in COUNTED else f"{self.value:g}"
        return f"{self.metric} {self.condition} {v}"

    def update(self, value: float | None) -> bool:
        """Record this epoch's value of the metric; True when the rule holds now."""
        if value is None or not math.isfinite(value):
            return False
        h = self.history
        h.append(float(value))
        if self.condition == "above":
            return value > self.value
        if self.condition == "below":
            return value < self.value
        n = int(self.value)
        if len(h) <= n:
            return False
        if self.condition == "stalls":
            return _no_new_best(h, n, self.metric.endswith("loss"))
        pairs = zip(h[-n - 1:-1], h[-n:])
        return all(b > a for a, b in pairs) if self.condition == "rises" else all(b < a for a, b in pairs)


def _no_new_best(h: list[float], n: int, lower_is_better: bool) -> bool:
    """None of the last ``n`` values beat the best before them."""
    before = h[:-n]
    if lower_is_better:
        return min(h[-n:]) >= min(before)
    return max(h[-n:]) <= max(before)


def parse_rule(text: Any) -> Rule:
    """A rule from its text; a ConfigError that says what is wrong and what is allowed."""
    if not isinstance(text, str) or len(text) > 200:
        raise ConfigError(f"a watch rule must be text like 'val_loss rises 3', got {text!r:.60}")
    m = _RULE.match(text.lower())
    if not m:
        raise ConfigError(f"'{text}' is not a watch rule ({HELP})")
    metric, condition, value = m.groups()
    metric = ALIASES.get(metric, metric)
    if metric not in METRICS:
        raise ConfigError(f"'{text}': unknown metric '{m.group(1)}' (one of {', '.join(METRICS)})")
    if condition in COUNTED:
        if not value.isdigit() or not 1 <= int(value) <= MAX_EPOCHS:
            raise ConfigError(f"'{text}': '{condition}' takes a number of epochs from 1 to {MAX_EPOCHS:,}, "
                              f"got '{value}'")
        return Rule(text, metric, condition, float(int(value)))
    if condition in THRESHOLDS:
        pct = value.endswith("%")
        try:
            x = float(value[:-1] if pct else value) / (100.0 if pct else 1.0)
        except ValueError:
            x = math.nan
        if not math.isfinite(x):
            raise ConfigError(f"'{text}': '{condition}' takes a number such as 0.5 or 99%, got '{value}'")
        return Rule(text, metric, condition, x)
    raise ConfigError(f"'{text}': unknown condition '{condition}' ({HELP})")


def parse_rules(value: Any) -> list[Rule]:
    """Rules from a string or a list of strings (a configuration file may give either)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"watch rules must be a rule or a list of rules, got {value!r:.60}")
    return [parse_rule(t) for t in items]


class Watch:
    """The run's pause and stop rules, fed each epoch's metrics by the trainer.

    Args:
        pause_if: rules that pause the run.
        stop_if: rules that stop it.
    """

    def __init__(self, pause_if: Any = None, stop_if: Any = None):
        self.rules = [("pause", r) for r in parse_rules(pause_if or [])] + \
                     [("stop", r) for r in parse_rules(stop_if or [])]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def update(self, epoch: dict[str, Any]) -> tuple[str, Rule] | None:
        """Record an ``epoch`` event's metrics; the first rule that holds now, as ``(action, rule)``, stop rules
        first (None when none does). Every rule sees every epoch, so counts stay right after a rule fires."""
        fired = [(action, r) for action, r in self.rules if r.update(epoch.get(r.metric))]
        fired.sort(key=lambda ar: ar[0] != "stop")
        return fired[0] if fired else None
