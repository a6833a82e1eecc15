"""Model registry: one name -> one builder, in the style of timm's ``register_model``.

Builders live next to their models (``zoo/models/<family>.py``) and are registered
with :func:`register`. The registry is filled lazily the first time it is read, so
``import zoo`` has no side effects.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras

#: Modules that register models when imported (one per family).
MODEL_MODULES: tuple[str, ...] = (
    "zoo.models.autoencoders",
    "zoo.models.vae",
    "zoo.models.gans",
)


class UnknownModelError(KeyError):
    """Raised for a name that is not registered; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ConfigError(TypeError):
    """Raised for a config key the model's builder does not accept."""


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model."""

    name: str
    builder: Callable[..., keras.Model]
    family: str
    description: str
    paper: str = ""
    tiny: dict[str, Any] = field(default_factory=dict)

    def defaults(self) -> dict[str, Any]:
        """The builder's keyword arguments and their defaults."""
        signature = inspect.signature(self.builder)
        return {
            name: p.default
            for name, p in signature.parameters.items()
            if p.default is not inspect.Parameter.empty
        }


_REGISTRY: dict[str, ModelSpec] = {}
_LOADED = False


def register(
    name: str,
    *,
    family: str,
    description: str,
    paper: str = "",
    tiny: dict[str, Any] | None = None,
) -> Callable[[Callable[..., keras.Model]], Callable[..., keras.Model]]:
    """Register ``builder`` under ``name``.

    ``tiny`` is a config override that makes the model small enough for tests;
    it is registered as ``<name>_tiny`` too. Registering a name twice raises.
    """

    def decorator(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        specs = [ModelSpec(name, builder, family, description, paper, dict(tiny or {}))]
        if tiny is not None:
            specs.append(
                ModelSpec(f"{name}_tiny", builder, family, f"{description} (tiny)", paper, {})
            )
        for spec in specs:
            if spec.name in _REGISTRY:
                raise ValueError(
                    f"model name {spec.name!r} is already registered by "
                    f"{_REGISTRY[spec.name].builder.__module__}; choose another name"
                )
        for spec in specs:
            _REGISTRY[spec.name] = spec
        return builder

    return decorator


def load_model_modules() -> None:
    """Import every model family module (once): this registers the zoo's models, and
    through their imports its trainers and layers with Keras, so that
    ``keras.saving.load_model`` can rebuild a saved zoo model."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for module in MODEL_MODULES:
            importlib.import_module(module)


def get_spec(name: str) -> ModelSpec:
    """Look up a registered model; unknown names raise with close matches."""
    load_model_modules()
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(name, _REGISTRY, n=4, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Run `zoo list` or zoo.list_models() to see all "
        f"{len(_REGISTRY)} models."
    )


def list_models(pattern: str | None = None, *, include_tiny: bool = True) -> list[str]:
    """Registered names, sorted; ``pattern`` is a shell-style wildcard such as ``"*gan*"``."""
    load_model_modules()
    names = sorted(_REGISTRY)
    if not include_tiny:
        names = [n for n in names if not n.endswith("_tiny")]
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def resolve_config(name: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full builder config for ``name``: defaults, the tiny overrides, then ``config``.

    Unknown keys raise with the accepted keys listed.
    """
    spec = get_spec(name)
    base = name[: -len("_tiny")] if name.endswith("_tiny") else None
    tiny = get_spec(base).tiny if base and base in _REGISTRY else {}
    defaults = spec.defaults()
    config = dict(config or {})
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        close = {k: difflib.get_close_matches(k, defaults, n=1) for k in unknown}
        hints = ", ".join(
            f"{k!r} (did you mean {v[0]!r}?)" if v else repr(k) for k, v in close.items()
        )
        raise ConfigError(
            f"model {name!r} got unknown config key(s) {hints}; accepted keys: "
            f"{', '.join(sorted(defaults))}"
        )
    return {**defaults, **tiny, **config}


def load(name: str, weights: str | None = None, **config: Any) -> keras.Model:
    """Build the registered model ``name`` with ``config``, ready to compile and fit.

    ``weights`` may be a ``.keras`` file saved from a run (the whole trainer is
    restored and ``config`` must be empty), a ``.weights.h5`` file, or a run's
    checkpoint (a TensorFlow checkpoint prefix, or the folder holding them).
    """
    if weights is not None and str(weights).endswith(".keras"):
        if config:
            raise ConfigError(
                "a .keras file carries its own config; drop the config arguments "
                f"{sorted(config)} or build with zoo.load(name, **config) and load weights "
                "from a .weights.h5 file or checkpoint instead"
            )
        model = keras.saving.load_model(weights, safe_mode=True)
        get_spec(name)  # still validate the name
        return model
    spec = get_spec(name)
    model = spec.builder(**resolve_config(name, config))
    model.zoo_name = name
    if weights is not None:
        from zoo.checkpoints import load_weights

        load_weights(model, weights)
    return model
