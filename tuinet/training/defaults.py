"""Per-dataset training defaults: for each built-in dataset, settings that train it well in a reasonable time.

One recipe cannot fit 60,000 MNIST digits and 120 iris flowers: the global defaults (10 epochs of batch 64 at Adam's
1e-3) give iris 20 steps in all and spirals a line. So a run on a built-in dataset starts from its row of
:data:`DATASET_DEFAULTS`; every option the user sets (command line or configuration file) wins over it, field by
field. The run records which fields came from the table (``TrainConfig.dataset_defaults``) and says so when it
starts. Datasets given by path keep the global defaults.

The figures behind each row (measured with ``python -m benchmarks.default_run`` for MNIST and by hand for the
others) are in the README.
"""

from __future__ import annotations

from typing import Any

#: dataset -> the TrainConfig fields its runs start from (a field the user sets wins)
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    # 98% test accuracy within 5 epochs: AdamW with cosine decay, light dropout and weight decay
    "mnist": dict(model="mlp", optimizer="adamw", lr=2e-3, weight_decay=0.05, batch_size=128, epochs=5,
                  schedule="cosine", dropout=0.1),
    "digits": dict(model="mlp", optimizer="adamw", lr=3e-3, weight_decay=0.05, batch_size=32, epochs=30,
                   schedule="cosine", dropout=0.1),
    "iris": dict(model="16", optimizer="adam", lr=0.02, batch_size=16, epochs=60, schedule="cosine"),
    "wine": dict(model="16", optimizer="adam", lr=0.01, batch_size=16, epochs=40, schedule="cosine"),
    # the spiral's data noise (0.1) caps any classifier near 84% (a 51-nearest-neighbour vote on 40,000 points:
    # 83.4%), with arms that blur into each other; at 0.05 the default run forms the spiral (98% test accuracy)
    "spiral": dict(model="64,64", activation="relu", optimizer="adam", lr=0.01, batch_size=32, epochs=100,
                   schedule="cosine", noise=0.05),
    "circles": dict(model="16,16", activation="tanh", optimizer="adam", lr=0.02, batch_size=32, epochs=60,
                    schedule="cosine"),
    "xor": dict(model="16,16", activation="tanh", optimizer="adam", lr=0.02, batch_size=32, epochs=60,
                schedule="cosine"),
    "gaussian": dict(model="8", activation="tanh", optimizer="adam", lr=0.01, batch_size=32, epochs=20,
                     schedule="cosine"),
    "moons": dict(model="16,16", activation="tanh", optimizer="adam", lr=0.02, batch_size=32, epochs=60,
                  schedule="cosine"),
    "sine": dict(model="32,32", activation="tanh", optimizer="adam", lr=0.01, batch_size=32, epochs=150,
                 schedule="cosine"),
    "regression": dict(model="32,32", activation="tanh", optimizer="adam", lr=0.01, batch_size=32, epochs=100,
                       schedule="cosine"),
}

#: optimizer hyperparameters a row may set: dropped when the user picks another optimizer (AdamW's weight decay
#: means something else to SGD)
OPTIMIZER_FIELDS = ("weight_decay", "betas", "momentum", "nesterov", "alpha", "eps")
#: fields that belong to the row's model: dropped when the user picks another model
MODEL_FIELDS = ("activation", "dropout")


def defaults_for(dataset: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``dataset``'s row that ``given`` (what the user set) leaves open; {} for a dataset by path.

    A row's optimizer hyperparameters only apply with its optimizer, and its activation and dropout only with its
    model: a user who picks ``--optimizer sgd`` or ``--model cnn`` gets the rest of the row (epochs, batch size,
    schedule; the lr too when only the model changes) and the global defaults for the rest.
    """
    if not isinstance(dataset, str):
        return {}
    row = DATASET_DEFAULTS.get(dataset.lower())
    if row is None:
        return {}
    out = {k: v for k, v in row.items() if given.get(k) is None}
    if given.get("optimizer") is not None and given["optimizer"] != row.get("optimizer"):
        for k in (*OPTIMIZER_FIELDS, "lr"):  # a learning rate tuned for Adam is no start for SGD
            out.pop(k, None)
    if given.get("model") is not None and given["model"] != row.get("model"):
        for k in MODEL_FIELDS:
            out.pop(k, None)
    return out


def with_dataset_defaults(given: dict[str, Any]) -> dict[str, Any]:
    """The options ``given`` (file and command line; keys may use dashes) completed from their dataset's row, with
    ``dataset_defaults`` naming the fields the row filled in."""
    norm = {k.replace("-", "_") if isinstance(k, str) else k: v for k, v in given.items()}
    filled = defaults_for(norm.get("dataset", "mnist"), norm)
    if not filled:
        return dict(given)
    return {**filled, **given, "dataset_defaults": list(filled)}


#: shorter names in the line a run starts with (it must fit an 80-column event log)
SHORT = {"optimizer": "optim", "batch_size": "batch", "weight_decay": "wd", "activation": "act", "schedule": "sched"}


def describe_defaults(config: Any) -> str | None:
    """The line a run starts with when it took settings from its dataset's row (None when it took none)."""
    names = getattr(config, "dataset_defaults", None)
    if not names:
        return None
    shown = ", ".join(f"{SHORT.get(n, n.replace('_', '-'))} {_value(getattr(config, n))}" for n in names)
    return f"defaults for {config.dataset}: {shown}"


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)
