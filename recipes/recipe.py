"""Recipes: readable TOML files naming a model, its config, data, optimizers, schedule,
epochs and seed. Parsing is strict: an unknown key is an error naming close matches."""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from zoo import registry

# Every key a recipe may hold, with its default (``REQUIRED`` must be given).
REQUIRED = object()
SCHEMA: dict[str, Any] = {
    "name": REQUIRED,
    "description": "",
    "model": REQUIRED,
    "seed": 0,
    "epochs": REQUIRED,
    "model_config": {},
    "data": {
        # sample | tfds | folder | numpy | synthetic_series; image-to-image also: bundled
        # (offline tasks) | download (pix2pix's datasets: facades, maps, ...)
        "source": "sample",
        # TFDS name; a bundled task (edges2digits, digits2animals, photos_x4); a pix2pix dataset
        "name": None,
        "path": None,  # image folder, or .npz file with an `images` array for numpy
        "split": "train",
        "validation_split": "test",  # sample/tfds split used for validation ("" for none)
        "validation_fraction": 0.1,  # folder/numpy: the share held out
        "batch_size": 64,  # GLOBAL: split evenly over a strategy's replicas
        "with_labels": False,
        "classes": [],  # keep only these labels (one-class training), e.g. [3]
        "n_series": 512,  # synthetic_series: how many normal series
        "cache": True,
        "shuffle_buffer": 10_000,
        # image-to-image models (zoo.data.pairs): how elements become (source, target)
        "pairing": "",  # paired | unpaired | downsample ("" = the source's own)
        "layout": "side_by_side",  # paired folders: side_by_side (AB files) | folders (A/, B/)
        "direction": "a_to_b",  # paired folders: which half/folder is the source
        "jitter": 0,  # resize pairs to jitter x jitter, then crop back (pix2pix: 286)
        "flip": False,  # random left-right flip, the same for source and target
    },
    "optimizer": {},  # {name, learning_rate, ...} or one such table per role
    "training": {
        "steps_per_epoch": None,  # cap on batches per epoch (None = the whole data set)
        "log_every_steps": 10,  # TensorBoard per-step scalars
        "deterministic": False,  # tf.config.experimental.enable_op_determinism()
        "verbose": 1,  # Keras progress bar: 1 bar, 2 one line per epoch, 0 silent
        "pretrain_epochs": 0,  # stacked autoencoders: greedy layer-wise epochs per layer
        "precision": "float32",  # float32 | mixed_float16 | mixed_bfloat16 (zoo.precision)
        # compile(): train steps per call of the compiled function (the runner takes the
        # largest divisor of the epoch's steps not above it) and XLA (true | false | "auto":
        # Keras' choice, XLA on GPUs only); measured in bench/reports/dcgan_throughput.md
        "steps_per_execution": 1,
        "jit_compile": "auto",
    },
    "distribute": {  # zoo.distribute; the data.batch_size is the GLOBAL batch
        "strategy": "default",  # default | mirrored | multi_worker (cluster from TF_CONFIG)
        "devices": [],  # mirrored: e.g. ["/gpu:0", "/gpu:1"] ([] = every GPU, else the CPU)
        "timeout_seconds": 300,  # multi_worker: a collective waiting longer fails the run
    },
    "logging": {
        "num_samples": 64,  # sample / reconstruction grid size (0 = no grids)
        "sample_every_epochs": 1,
        # VAEs: interpolation, traversal and 2-D latent scatter (0 = off)
        "latent_every_epochs": 1,
        "latent_examples": 500,  # held-out examples in the scatter
        # generators: sample-quality metrics (FID, KID, ...) to TensorBoard (0 = off)
        "quality_every_epochs": 0,
        "quality_samples": 1000,
        "feature_extractor": "mnist_classifier",  # or inception_v3 (needs its weights)
    },
}
OPEN_TABLES = ("model_config", "optimizer")  # checked against the model / optimizer instead


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the key and the fix."""


@dataclass
class Recipe:
    """A validated recipe; ``source`` is where it was read from."""

    values: dict[str, Any]
    source: str = "<dict>"
    overrides: list[str] = field(default_factory=list)

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["values"][key]
        except KeyError:
            raise AttributeError(key) from None

    def build_config(self) -> dict[str, Any]:
        """The model's config as a run builds it (:func:`zoo.registry.build_config`)."""
        return registry.build_config(self.model_config, self.seed)

    def to_toml(self) -> str:
        """The resolved recipe as TOML (written into each run for reproducibility)."""
        return dump_toml(self.values)


def bundled_dir() -> Path:
    return Path(str(resources.files("zoo.recipes")))


def list_recipes() -> list[str]:
    """Names of the recipes shipped with the zoo."""
    return sorted(p.stem for p in bundled_dir().glob("*.toml"))


def _unknown(keys: list[str], allowed: Any, where: str) -> RecipeError:
    parts = []
    for key in keys:
        close = difflib.get_close_matches(key, list(allowed), n=1)
        parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return RecipeError(
        f"unknown recipe key(s) in {where}: {', '.join(parts)}; allowed: "
        f"{', '.join(sorted(allowed))}"
    )


def validate(values: dict[str, Any], source: str = "<dict>") -> dict[str, Any]:
    """Fill defaults and reject unknown keys; returns a new dict."""
    unknown = [k for k in values if k not in SCHEMA]
    if unknown:
        raise _unknown(unknown, SCHEMA, f"recipe {source}")
    out: dict[str, Any] = {}
    for key, default in SCHEMA.items():
        if key not in values:
            if default is REQUIRED:
                raise RecipeError(f"recipe {source} is missing the required key {key!r}")
            out[key] = copy.deepcopy(default)
            continue
        value = values[key]
        if isinstance(default, dict) and key not in OPEN_TABLES:
            if not isinstance(value, dict):
                raise RecipeError(f"recipe key {key!r} must be a table; got {value!r}")
            bad = [k for k in value if k not in default]
            if bad:
                raise _unknown(bad, default, f"[{key}] of {source}")
            out[key] = {**copy.deepcopy(default), **value}
        else:
            out[key] = copy.deepcopy(value)
    if not isinstance(out["epochs"], int) or out["epochs"] < 1:
        raise RecipeError(f"epochs must be a positive integer; got {out['epochs']!r}")
    if not isinstance(out["data"]["batch_size"], int) or out["data"]["batch_size"] < 1:
        raise RecipeError(
            f"data.batch_size must be a positive integer; got {out['data']['batch_size']!r}"
        )
    for key in ("sample_every_epochs", "latent_every_epochs", "quality_every_epochs"):
        value = out["logging"][key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise RecipeError(f"logging.{key} must be a whole number of epochs >= 0; got {value!r}")
    if not isinstance(out["logging"]["quality_samples"], int) or (
        out["logging"]["quality_samples"] < 6
    ):
        raise RecipeError(
            "logging.quality_samples must be an integer >= 6 (metrics need a few samples); "
            f"got {out['logging']['quality_samples']!r}"
        )
    check_distribute(out)
    spe, jit = out["training"]["steps_per_execution"], out["training"]["jit_compile"]
    if not isinstance(spe, int) or isinstance(spe, bool) or spe < 1:
        raise RecipeError(f"training.steps_per_execution must be an integer >= 1; got {spe!r}")
    if jit not in (True, False, "auto"):
        raise RecipeError(f'training.jit_compile must be true, false or "auto"; got {jit!r}')
    check_model_config(out["model"], out["model_config"], source)
    return out


def check_distribute(values: dict[str, Any]) -> None:
    """``[distribute]`` and ``training.precision`` hold known choices (no TensorFlow)."""
    from zoo.distribute import STRATEGIES, DistributeError, check_choice
    from zoo.precision import check_precision

    table = values["distribute"]
    try:
        check_choice(table["strategy"])
        check_precision(values["training"]["precision"])
    except ValueError as error:
        key = "distribute.strategy" if isinstance(error, DistributeError) else "training.precision"
        raise RecipeError(f"{key}: {error}") from None
    devices = table["devices"]
    if not isinstance(devices, list) or not all(isinstance(d, str) and d for d in devices):
        raise RecipeError(
            f"distribute.devices must be a list of device names such as ['/gpu:0', '/gpu:1']; "
            f"got {devices!r}"
        )
    if devices and table["strategy"] != "mirrored":
        raise RecipeError(
            f"distribute.devices = {devices} needs distribute.strategy = 'mirrored' (one of "
            f"{', '.join(STRATEGIES)}; now {table['strategy']!r})"
        )
    timeout = table["timeout_seconds"]
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise RecipeError(f"distribute.timeout_seconds must be a positive number; got {timeout!r}")


def check_model_config(model: str, config: Any, source: str = "<dict>") -> None:
    """The model exists and takes ``[model_config]`` (keys and values), checked by the
    registry without TensorFlow, so ``zoo train`` refuses a bad recipe in a moment."""
    if not isinstance(config, dict):
        raise RecipeError(f"recipe key 'model_config' must be a table; got {config!r}")
    try:
        registry.resolve_config(model, config)
    except registry.UnknownModelError as error:
        raise RecipeError(f"recipe {source}: {error}") from None
    except registry.ConfigError as error:
        raise RecipeError(f"[model_config]: {error}") from None


def parse_value(text: str) -> Any:
    """A --set value as TOML (numbers, booleans, lists, quoted strings), else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (as from ``zoo train --set``)."""
    values = copy.deepcopy(values)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"--set expects key=value (e.g. epochs=3); got {item!r}")
        *parents, leaf = key.strip().split(".")
        table = values
        for part in parents:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise RecipeError(f"--set {key}: {part!r} is not a table")
        table[leaf] = parse_value(text.strip())
    return values


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe by bundled name (``dcgan_mnist``) or path, apply overrides, validate."""
    path = Path(name_or_path)
    if not path.exists():
        bundled = bundled_dir() / f"{name_or_path}.toml"
        if not bundled.exists():
            close = difflib.get_close_matches(str(name_or_path), list_recipes(), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise RecipeError(
                f"no recipe file or bundled recipe named {str(name_or_path)!r}.{hint} "
                f"Bundled recipes: {', '.join(list_recipes())}"
            )
        path = bundled
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"recipe {path} is not valid TOML: {error}") from None
    overrides = list(overrides or [])
    values = apply_overrides(values, overrides)
    return Recipe(validate(values, str(path)), str(path), overrides)


def dump_toml(values: dict[str, Any]) -> str:
    """A small TOML writer for recipe values (scalars, lists, nested tables)."""

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines: list[str] = []

    def table(prefix: str, d: dict[str, Any]) -> None:
        plain = {k: v for k, v in d.items() if not isinstance(v, dict) and v is not None}
        nested = {k: v for k, v in d.items() if isinstance(v, dict)}
        if prefix and (plain or not nested):
            lines.append(f"\n[{prefix}]")
        lines.extend(f"{k} = {scalar(v)}" for k, v in plain.items())
        for k, v in nested.items():
            table(f"{prefix}.{k}" if prefix else k, v)

    table("", values)
    return "\n".join(lines).strip() + "\n"
