"""``tuinet datasets``: list the built-in datasets and show a summary of any dataset."""

from __future__ import annotations

import json
import os
import sys

import click
import numpy as np

from tuinet.errors import TuinetError
from tuinet.formatting import table


def _parse_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        parts = [int(p) for p in value.lower().replace("x", " ").split()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected HEIGHTxWIDTH, e.g. 28x28, or one number") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise click.BadParameter(f"{value!r}: expected HEIGHTxWIDTH, e.g. 28x28, or one number")
    return parts[0], parts[1]


def _note(msg: str) -> None:
    click.echo(msg, err=True)


def _use_color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


class _ShowByDefault(click.Group):
    """``tuinet datasets NAME|PATH [OPTIONS]`` is ``tuinet datasets show NAME|PATH [OPTIONS]``: a first argument that
    is neither an option nor a subcommand names the dataset to show."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["show", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_ShowByDefault, invoke_without_command=True)
@click.pass_context
def datasets(ctx: click.Context) -> None:
    """List the built-in datasets, or show one (`tuinet datasets NAME|PATH`, the same as `tuinet datasets show
    NAME|PATH`)."""
    if ctx.invoked_subcommand is not None:
        return
    from tuinet.data import builtin_datasets

    rows = [(d["name"], d["task"], f"{d['samples']:,}", "x".join(map(str, d["input_shape"])),
             str(d["classes"]) if d["classes"] else "-", d["description"]) for d in builtin_datasets()]
    head = ("name", "task", "samples", "shape", "classes", "description")
    rule = ["-" * max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]  # as wide as each column
    click.echo(table([head, rule, *rows], right={2, 4}))
    click.echo("\nTraining defaults of each (any option you set wins; datasets by path use the global defaults):")
    click.echo(defaults_table())
    click.echo("\nAlso accepted by path: .csv[.gz] (header row), .npz (x, y), a folder of class subfolders of "
               "images, IDX files.\nShow one with: tuinet datasets NAME|PATH")


def defaults_table() -> str:
    """The per-dataset training defaults (training/defaults.py) as a table."""
    from tuinet.training.defaults import DATASET_DEFAULTS

    head = ("name", "model", "optimizer", "lr", "batch", "epochs", "schedule", "also")
    main = {"model", "optimizer", "lr", "batch_size", "epochs", "schedule"}
    rows = [(name, str(d["model"]), str(d["optimizer"]), f"{d['lr']:g}", str(d["batch_size"]), str(d["epochs"]),
             str(d["schedule"]), ", ".join(f"{k.replace('_', '-')} {v}" for k, v in d.items() if k not in main) or "-")
            for name, d in DATASET_DEFAULTS.items()]
    rule = ["-" * max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return table([head, rule, *rows], right={3, 4, 5})


@datasets.command("show")
@click.argument("source")
@click.option("--target", help="CSV label column (default: the last); comma-separated for several regression targets.")
@click.option("--task", type=click.Choice(["classification", "regression"]), help="Override the inferred task.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for splits and synthetic data.")
@click.option("--val-split", type=float, default=0.1, show_default=True, help="Validation fraction.")
@click.option("--test-split", type=float, default=0.1, show_default=True,
              help="Test fraction (ignored by sets with their own test set, like MNIST).")
@click.option("--normalize", type=click.Choice(["auto", "minmax", "standard", "none"]), default="auto",
              show_default=True, help="auto: minmax for images, standard for tables.")
@click.option("--image-size", help="Resize images in a folder to HEIGHTxWIDTH (default: their most common size).")
@click.option("--color", type=click.Choice(["gray", "rgb"]), default="gray", show_default=True,
              help="Colour mode for image folders.")
@click.option("--n-samples", type=int, help="Size of a synthetic set.")
@click.option("--noise", type=float, help="Noise level of a synthetic set.")
@click.option("--limit", type=int, help="Cap the training (and val/test) set size.")
@click.option("--samples", "n_show", type=int, default=4, show_default=True, help="How many samples to show.")
@click.option("--augment", help="Show the samples as `tuinet train --augment` would give them to the network (one "
                                "random version each; the same --seed, the same versions), e.g. shift=2,rotate=15.")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON instead.")
def show(source, target, task, seed, val_split, test_split, normalize, image_size, color, n_samples, noise,
         limit, n_show, augment, as_json) -> None:
    """Summarise a dataset: shapes, class counts, split sizes, feature ranges and a few samples."""
    from tuinet.data import load_dataset

    try:
        ds = load_dataset(source, val_split=val_split, test_split=test_split, seed=seed, normalize=normalize,
                          target=target, task=task, image_size=_parse_size(image_size), color=color,
                          n_samples=n_samples, noise=noise, limit=limit, log=_note)
        augmenter = None
        if augment is not None:
            from tuinet.training.augmenting import make_augmenter

            augmenter = make_augmenter(augment, ds.x_train, ds.input_shape, source, seed)
    except TuinetError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(ds.describe(), indent=2))
        return
    click.echo(ds.summary())
    n_show = max(0, min(n_show, len(ds.x_train)))
    if n_show:
        x = ds.x_train[:n_show] if augmenter is None else augmenter(ds.x_train[:n_show])
        how = "" if augmenter is None else f", augmented ({augmenter.aug.spec()}: one random version each)"
        click.echo(f"\nfirst {n_show} training samples{how}:")
        click.echo(_samples(ds, x), color=_use_color())


def _label(ds, y) -> str:
    if ds.task == "classification":
        return ds.class_names[int(y)]
    return ", ".join(f"{v:.4g}" for v in np.ravel(y))


def _samples(ds, x: np.ndarray) -> str:
    """Draw the first training samples ``x`` (normalized, as the network gets them): images side by side, table rows
    in raw units."""
    from tuinet.data.render import render_image, side_by_side

    n = len(x)
    if ds.is_image:
        color = _use_color()
        raw = ds.normalizer.inverse_transform(x)
        per_row = max(1, 100 // (ds.input_shape[1] + 2))
        blocks = []
        for start in range(0, n, per_row):
            imgs = [render_image(raw[i], color=color) for i in range(start, min(n, start + per_row))]
            caps = [f"#{i} {_label(ds, ds.y_train[i])}" for i in range(start, min(n, start + per_row))]
            blocks.append(side_by_side(imgs, caps))
        return "\n\n".join(blocks)
    raw = ds.normalizer.inverse_transform(x).reshape(n, -1)
    names = ds.feature_names or [f"x{i}" for i in range(raw.shape[1])]
    tname = ",".join(ds.target_names) if ds.target_names else "label"
    cols = names[:10] + (["…"] if len(names) > 10 else []) + [tname]
    cells = [[f"{v:.4g}" for v in row[:10]] + (["…"] if len(names) > 10 else []) + [_label(ds, ds.y_train[i])]
             for i, row in enumerate(raw)]
    return table([cols, *cells], right=range(len(cols)))
