"""Model specifications: presets, compact strings and TOML layer lists, turned into a :class:`Sequential`.

Compact forms:

* ``784-256-128-10``: every layer size, input and output included (they must match the data);
* ``256,128``: hidden sizes only; input and output come from the data;
* a comma-separated layer list such as ``dense256,relu,dropout0.2,dense10`` (tokens in ``TOKENS``);
* a preset name (``PRESETS``), or a path to a ``.toml`` file with ``[[layers]]`` tables.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tuinet.engine.layers import ACTIVATIONS, load_all_layers, make_activation
from tuinet.engine.model import Sequential
from tuinet.errors import ModelError

LayerCfg = dict[str, Any]

#: preset name -> function(activation, dropout) returning a layer-config list (final Dense added by the builder)
PRESETS: dict[str, Callable[[str, float], list[LayerCfg]]] = {}
PRESET_HELP: dict[str, str] = {}


def preset(name: str, help_text: str):
    """Register a named model preset."""

    def wrap(fn):
        PRESETS[name] = fn
        PRESET_HELP[name] = help_text
        return fn

    return wrap


def _hidden(sizes: list[int], activation: str, dropout: float) -> list[LayerCfg]:
    layers: list[LayerCfg] = []
    for s in sizes:
        layers.append({"type": "Dense", "units": s})
        layers.append({"type": make_activation(activation).kind})
        if dropout:
            layers.append({"type": "Dropout", "rate": dropout})
    return layers


@preset("mlp", "dense 256-128 with ReLU (hidden sizes 256,128)")
def _mlp(activation: str, dropout: float) -> list[LayerCfg]:
    return _hidden([256, 128], activation or "relu", dropout)


#: compact-token grammar: regex -> function(match) returning layer configs; other modules add conv tokens
TOKENS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], list[LayerCfg]]]] = []


def token(pattern: str):
    """Register a compact-spec token such as ``dense256``."""

    def wrap(fn):
        TOKENS.append((re.compile(pattern + r"$", re.IGNORECASE), fn))
        return fn

    return wrap


@token(r"(?:dense|fc|d)[:]?(\d+)")
def _dense_token(m):
    return [{"type": "Dense", "units": int(m.group(1))}]


@token(r"dropout[:]?([0-9.]+)")
def _dropout_token(m):
    return [{"type": "Dropout", "rate": float(m.group(1))}]


@token(r"flatten")
def _flatten_token(m):
    return [{"type": "Flatten"}]


@token(r"(relu|leaky_?relu|sigmoid|tanh|gelu|linear)")
def _activation_token(m):
    return [{"type": make_activation(m.group(1)).kind}]


def _parse_tokens(spec: str) -> list[LayerCfg]:
    load_all_layers()  # the convolutional tokens
    layers: list[LayerCfg] = []
    for raw in spec.split(","):
        tok = raw.strip()
        if not tok:
            continue
        for pattern, fn in TOKENS:
            m = pattern.match(tok)
            if m:
                layers.extend(fn(m))
                break
        else:
            raise ModelError(f"model spec '{spec}': cannot read '{tok}' (presets: {', '.join(PRESETS)})")
    return layers


def _load_toml(path: Path) -> tuple[list[LayerCfg], dict[str, Any]]:
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: cannot read model file ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ModelError(f"{path}: not valid TOML ({e})") from None
    model = doc.get("model", doc)
    layers = model.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ModelError(f"{path}: needs a non-empty [[layers]] list (or [[model.layers]])")
    out = []
    for i, lc in enumerate(layers):
        if not isinstance(lc, dict) or "type" not in lc:
            raise ModelError(f"{path}: layer {i + 1} needs a 'type'")
        cfg = dict(lc)
        cfg["type"] = _canonical_type(str(cfg["type"]), path, i)
        out.append(cfg)
    return out, {k: v for k, v in model.items() if k != "layers"}


def _canonical_type(name: str, path: Path, index: int) -> str:
    from tuinet.engine.layers import LAYER_TYPES

    load_all_layers()
    lookup = {k.lower(): k for k in LAYER_TYPES}
    lookup.update({k: ACTIVATIONS[k].__name__ for k in ACTIVATIONS})
    key = name.lower().replace("-", "_")
    if key not in lookup:
        raise ModelError(f"{path}: layer {index + 1} has unknown type '{name}' (known: {', '.join(LAYER_TYPES)})")
    return lookup[key]


def build_model(spec: str, input_shape: tuple[int, ...], num_outputs: int, *, task: str = "classification",
                activation: str | None = None, dropout: float = 0.0, l1: float = 0.0, l2: float = 0.0,
                seed: int = 0, features: list[str] | None = None, init_gain: float = 1.0) -> Sequential:
    """Turn a preset, compact spec or TOML file into a built model for the given data shape.

    ``features`` (2-D points only) puts a :class:`~tuinet.engine.features.PlaneFeatures` layer first, so the model
    sees Playground's derived inputs (x², xy, sin x, ...) and still takes raw ``(x, y)`` points.

    ``init_gain`` multiplies every layer's initial weights (those the L1/L2 penalties apply to; not biases, nor
    batch norm's scale and shift): 1 keeps each layer's own scheme (He or Xavier), which keeps a signal's size from
    layer to layer; below 1 it shrinks and above 1 it grows, by that factor at every layer.

    A final ``Dense(num_outputs)`` is appended unless the spec already ends in a layer of that many units, and a
    ``Flatten`` is inserted before the first Dense layer when samples are not vectors.
    """
    if not 0.0 <= dropout < 1.0:
        raise ModelError(f"dropout must be in [0, 1), got {dropout}")
    act = activation or "relu"
    if act.lower() not in ACTIVATIONS and act.lower().replace("-", "_") not in ACTIVATIONS:
        make_activation(act)  # raises the clear error
    spec = spec.strip()
    loss = "softmax_cross_entropy" if task == "classification" else "mse"
    input_size = 1
    for s in input_shape:
        input_size *= int(s)
    if features:
        input_size = len(features)  # the first Dense sees the features, not the raw point
    explicit_output = False
    if spec.lower() not in PRESETS and re.fullmatch(r"[a-z_][\w-]*", spec.lower()):
        load_all_layers()  # may name a convolutional preset (token specs and TOML files load them when read)
    if spec.lower() in PRESETS:
        layers = PRESETS[spec.lower()](act, dropout)
    elif spec.endswith(".toml") or Path(spec).is_file():
        path = Path(spec)
        if not path.is_file():
            raise ModelError(f"{spec}: model file not found")
        layers, extra = _load_toml(path)
        loss = extra.get("loss", loss)
    elif re.fullmatch(r"\d+(-\d+)+", spec):
        sizes = [int(s) for s in spec.split("-")]
        if sizes[0] != input_size:
            raise ModelError(f"model spec '{spec}' starts with {sizes[0]} inputs but the data has {input_size} "
                             f"features per sample")
        if sizes[-1] != num_outputs:
            raise ModelError(f"model spec '{spec}' ends with {sizes[-1]} outputs but the data has {num_outputs} "
                             f"{'classes' if task == 'classification' else 'targets'}")
        layers = _hidden(sizes[1:-1], act, dropout) + [{"type": "Dense", "units": sizes[-1]}]
        explicit_output = True
    elif re.fullmatch(r"\d+(\s*,\s*\d+)*", spec):
        layers = _hidden([int(s) for s in spec.split(",")], act, dropout)
    else:
        layers = _parse_tokens(spec)
    if not layers:
        raise ModelError(f"model spec '{spec}' has no layers")
    if not explicit_output:
        last_dense = next((lc for lc in reversed(layers) if lc["type"] == "Dense"), None)
        if not (layers[-1]["type"] == "Dense" and last_dense and last_dense["units"] == num_outputs):
            layers = layers + [{"type": "Dense", "units": num_outputs}]
    if len(input_shape) > 1:
        first_dense = next((i for i, lc in enumerate(layers) if lc["type"] == "Dense"), None)
        if first_dense is not None and not any(lc["type"] in ("Flatten", "GlobalAvgPool") for lc in layers[:first_dense]):
            layers.insert(first_dense, {"type": "Flatten"})
    if features:
        layers = [{"type": "PlaneFeatures", "features": list(features)}] + layers
    from tuinet.engine.layers import Layer

    if not (math.isfinite(init_gain) and init_gain > 0):
        raise ModelError(f"init_gain must be a number > 0, got {init_gain}")
    model = Sequential([Layer.from_config(lc) for lc in layers], input_shape, loss=loss, l1=l1, l2=l2, seed=seed)
    if init_gain != 1.0:
        for layer in model.layers:
            for name, p, _ in layer.named_params():
                if name in layer.penalized:
                    p *= np.float32(init_gain)
    return model
