"""The Optuna study of a sweep: its storage (a journal file in the sweep folder, or an RDB URL), sampler and pruner.

The study is the single source of truth: which trials exist, their parameters, each epoch's reported objective,
and how each ended. The driver asks it for new trials and tells it results (Optuna's ask-and-tell API), so the
trainer keeps its own loop and the driver decides when to stop it.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from tuinet.errors import ConfigError
from tuinet.sweep.files import JOURNAL_NAME
from tuinet.sweep.spec import SweepSpec


def quiet_optuna() -> None:
    """Optuna logs every trial at INFO and warns about experimental features: the sweep reports for itself."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="optuna")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def repair_journal(path: Path) -> bool:
    """Cut a half-written last line (a driver killed mid-write) off the journal; True when one was cut.

    Optuna skips such a line when it reads, but a record appended after it would make the next read fail.
    """
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return False
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return False
            f.seek(0)
            data = f.read()
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
            return True
    except FileNotFoundError:
        return False


def make_sampler(spec: SweepSpec, offset: int = 0):
    """The sampler the SPEC names, seeded (``[sweep] seed``) so a sweep's parameters can be repeated.

    ``offset`` is the number of trials the study already has: a resumed sweep's sampler is seeded past them, so it
    does not draw the first trials' parameters again (an uninterrupted sweep has offset 0 throughout)."""
    import optuna

    seed = spec.seed + offset
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler(spec.grid(), seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(spec.startup_trials, 1))


def make_pruner(spec: SweepSpec):
    """The pruner the SPEC names. Steps are epochs: a trial reports its objective after each one."""
    import optuna

    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(spec.warmup_epochs, 1),
                                              max_resource=max(spec.budget({}), 1))
    return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_epochs)


def open_study(spec: SweepSpec, folder: Path, storage: str | None = None):
    """The sweep's study, created or loaded (a resumed sweep continues it).

    Args:
        storage: an RDB URL (``sqlite:////shared/sweep.db``, ``postgresql://...``) shared by several hosts;
            None: ``study.journal`` in the sweep folder (no server).
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    quiet_optuna()
    if storage is None:
        journal = folder / JOURNAL_NAME
        repair_journal(journal)
        store: Any = JournalStorage(JournalFileBackend(str(journal)))
    else:
        store = storage
    try:
        study = optuna.create_study(study_name=spec.name, storage=store, sampler=make_sampler(spec),
                                    pruner=make_pruner(spec), direction=spec.direction, load_if_exists=True)
    except ImportError as e:
        raise ConfigError(f"storage {storage}: a driver is missing ({e})") from None
    except Exception as e:  # an unreachable database, a bad URL: one line
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"storage {storage or folder / JOURNAL_NAME}: cannot open the study "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
    existing = len(study.get_trials(deepcopy=False))
    if existing:
        study.sampler = make_sampler(spec, existing)
    if study.direction.name.lower() != spec.direction:
        raise ConfigError(f"study {spec.name} in {storage or folder} {study.direction.name.lower()}s; this SPEC's "
                          f"objective {spec.objective} needs {spec.direction}: use another [sweep] name")
    return study


def trial_by_number(study, number: int):
    """A live ``optuna.trial.Trial`` for trial ``number`` (to report to and ask about pruning), e.g. one a killed
    driver had asked for and a new driver resumes."""
    import optuna

    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    return optuna.trial.Trial(study, frozen._trial_id)


def importances(study) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA) over the complete trials; {} while fewer than two are complete or
    every parameter is constant."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < 2:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}
