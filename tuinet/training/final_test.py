"""The test figures a run ends with: of its last weights and of its best validation epoch's weights (``best.npz``).

A network that overfits ends worse than it was at its best validation epoch; the trainer keeps that epoch's
weights (in memory and in ``best.npz``) and, when training ends, evaluates the test set on both. The run reports
the figure of the weights ``config.final`` names (``best`` by default, ``last`` with ``--final last``) as its
``test_accuracy``/``test_loss``, and both under ``test_best`` and ``test_last``, so a user sees which is which.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tuinet.engine.checkpoint import describe_arch, load_checkpoint
from tuinet.errors import CheckpointError, TuinetError
from tuinet.training.branch import same_but_dropout, weights_for

if TYPE_CHECKING:
    from tuinet.training.trainer import Trainer

FINAL_CHOICES = ("best", "last")


def _figures(result: dict[str, Any], epoch: int) -> dict[str, Any]:
    loss = result.get("loss")
    return {"epoch": epoch, "loss": loss if loss is not None and math.isfinite(loss) else None,
            "accuracy": result.get("accuracy")}


def best_weights(trainer: Trainer) -> dict[str, Any] | None:
    """The best validation epoch's weights: the copy kept in memory, or ``best.npz`` of a resumed run (None when the
    run has no best epoch yet)."""
    if trainer.best_epoch <= 0:
        return None
    kept = getattr(trainer, "_best_weights", None)
    if kept is not None:
        return kept
    rd = trainer.run_dir
    if rd and rd.best.is_file():
        try:  # saved before the run's dropout changed (set_regularization), its dropout layers may differ
            saved = load_checkpoint(rd.best).build_model()
            if not same_but_dropout(saved, trainer.model):
                raise CheckpointError(f"it holds another architecture ({describe_arch(saved.config())})")
            return weights_for(saved, trainer.model)
        except (TuinetError, OSError) as e:
            trainer._log(f"cannot read {rd.best} for the final test: {e}", "warning")
    return None


def final_tests(trainer: Trainer) -> dict[str, Any]:
    """Evaluate the test set on the last weights and on the best epoch's; returns the fields of a ``finished`` (or
    ``stopped``) event: ``final`` (which weights the run reports), ``test_accuracy``/``test_loss`` of those,
    ``test_best`` and ``test_last`` (each ``{"epoch", "loss", "accuracy"}``; ``test_best`` is None without a
    validation split). The model keeps its last weights."""
    d, m = trainer.data, trainer.model
    if not len(d.x_test):
        return {"final": "last", "test_accuracy": None, "test_loss": None, "test_best": None, "test_last": None}
    last_epoch = trainer.best_epoch if getattr(trainer, "_restored_best", False) else trainer.epoch
    last = _figures(m.evaluate(d.x_test, d.y_test), last_epoch)
    best = None
    if trainer.best_epoch == last_epoch and trainer.best_epoch > 0:
        best = dict(last)  # the last weights are the best epoch's (the last epoch was the best, or early stopping)
    else:
        weights = best_weights(trainer)
        if weights is not None:
            own = m.get_weights()
            m.set_weights(weights)
            try:
                best = _figures(m.evaluate(d.x_test, d.y_test), trainer.best_epoch)
            finally:
                m.set_weights(own)
    final = trainer.config.final if best is not None else "last"
    chosen = best if final == "best" else last
    trainer.test_result = {"loss": chosen["loss"], "accuracy": chosen["accuracy"]}
    trainer._final_figures = {"final": final, "test_best": best, "test_last": last}
    return {"final": final, "test_accuracy": chosen["accuracy"], "test_loss": chosen["loss"], "test_best": best,
            "test_last": last}
