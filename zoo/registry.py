"""Model registry: one name -> one builder, in the style of timm's ``register_model``.

Builders live next to their models (``zoo/models/<family>.py``) and are registered
with :func:`register`. What the registry knows about the zoo's own models (name,
family, description, paper, tiny overrides, the builder's keyword arguments and their
defaults) is read from those modules' source with :mod:`ast`, without importing them:
listing models and checking a config never load TensorFlow. A family module is
imported (running its ``@register`` decorators) when one of its models is built.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import importlib
import importlib.util
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.shapes import bottom_shape, default_filters

if TYPE_CHECKING:  # pragma: no cover
    import keras


def model_modules() -> list[str]:
    """The modules that register models when imported: every module of ``zoo/models/``
    (one per family), so a new family's builders need no list to be added to."""
    folder = Path(__file__).parent / "models"
    return [f"zoo.models.{p.stem}" for p in sorted(folder.glob("*.py")) if p.stem != "__init__"]


class UnknownModelError(KeyError):
    """Raised for a name that is not registered; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ConfigError(TypeError, ValueError):
    """A config the model cannot be built with (an unknown key, a value out of range, or
    weights saved from another model); the message names the key, the value and the fix.
    A ``TypeError`` (unknown keyword) and a ``ValueError`` (bad value) for callers."""


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model; ``builder`` imports its module on first use."""

    name: str
    family: str
    description: str
    paper: str = ""
    tiny: dict[str, Any] = field(default_factory=dict)
    module: str = ""
    builder_name: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    registered_builder: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    @property
    def builder(self) -> Callable[..., keras.Model]:
        """The builder function (importing its module, and so Keras, if needed)."""
        if self.registered_builder is not None:
            return self.registered_builder
        return getattr(importlib.import_module(self.module), self.builder_name)

    def defaults(self) -> dict[str, Any]:
        """The builder's keyword arguments and their defaults."""
        return dict(self.parameters)


_REGISTRY: dict[str, ModelSpec] = {}
_SCANNED = False
_LOADED = False


def _specs(
    name: str,
    *,
    family: str,
    description: str,
    paper: str = "",
    tiny: dict[str, Any] | None = None,
    module: str,
    builder_name: str,
    parameters: dict[str, Any],
    builder: Callable[..., Any] | None = None,
) -> list[ModelSpec]:
    """The specs one ``@register(...)`` creates: ``name`` and, with ``tiny``, ``<name>_tiny``."""
    where = {"module": module, "builder_name": builder_name, "parameters": parameters}
    specs = [
        ModelSpec(name, family, description, paper, dict(tiny or {}), **where,
                  registered_builder=builder)
    ]  # fmt: skip
    if tiny is not None:
        specs.append(
            ModelSpec(f"{name}_tiny", family, f"{description} (tiny)", paper, {}, **where,
                      registered_builder=builder)
        )  # fmt: skip
    return specs


def _add(specs: list[ModelSpec]) -> None:
    """Add specs; a name already taken by another builder raises. The same builder seen
    twice (read from source, then registered on import) keeps the imported one."""
    for spec in specs:
        old = _REGISTRY.get(spec.name)
        if old is not None and (old.module, old.builder_name) != (spec.module, spec.builder_name):
            raise ValueError(
                f"model name {spec.name!r} is already registered by {old.module}; "
                "choose another name"
            )
    for spec in specs:
        old = _REGISTRY.get(spec.name)
        if old is None or spec.registered_builder is not None:
            _REGISTRY[spec.name] = spec


def _signature_defaults(builder: Callable[..., Any]) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(builder).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


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
    The zoo's own modules keep the arguments literals, so the registry can read them
    without importing the module.
    """

    def decorator(builder: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        _scan()
        _add(
            _specs(
                name, family=family, description=description, paper=paper, tiny=tiny,
                module=builder.__module__, builder_name=builder.__name__,
                parameters=_signature_defaults(builder), builder=builder,
            )
        )  # fmt: skip
        return builder

    return decorator


def _literal_defaults(arguments: ast.arguments) -> dict[str, Any]:
    """A function's keyword defaults, from its ``ast`` (``ValueError`` if not literals)."""
    positional = [*arguments.posonlyargs, *arguments.args]
    with_default = positional[len(positional) - len(arguments.defaults) :]
    pairs = list(zip(with_default, arguments.defaults, strict=True))
    kw = zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)
    pairs += [(arg, default) for arg, default in kw if default is not None]
    return {arg.arg: ast.literal_eval(default) for arg, default in pairs}


def _read_module(module: str) -> list[ModelSpec] | None:
    """The specs ``module`` registers, read from its source (``None``: not readable as
    literals, so the module must be imported instead)."""
    found = importlib.util.find_spec(module)
    if found is None or not found.origin or not found.origin.endswith(".py"):
        return None
    tree = ast.parse(Path(found.origin).read_text(encoding="utf-8"), found.origin)
    specs: list[ModelSpec] = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            func = call.func if call else None
            called = getattr(func, "id", None) or getattr(func, "attr", None)
            if call is None or called != "register":
                continue
            try:
                name = ast.literal_eval(call.args[0])
                options = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
                parameters = _literal_defaults(node.args)
            except (ValueError, TypeError, IndexError, SyntaxError):
                return None
            specs += _specs(
                name, **options, module=module, builder_name=node.name, parameters=parameters
            )
    return specs


def _scan() -> None:
    """Fill the registry with the zoo's models, from source (once)."""
    global _SCANNED
    if _SCANNED:
        return
    _SCANNED = True
    for module in model_modules():
        specs = _read_module(module)
        if specs is None:
            importlib.import_module(module)  # its decorators register it
        else:
            _add(specs)


def load_model_modules() -> None:
    """Import every model family module (once): this registers the zoo's models, and
    through their imports its trainers and layers with Keras, so that
    ``keras.saving.load_model`` can rebuild a saved zoo model."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for module in model_modules():
            importlib.import_module(module)


def get_spec(name: str) -> ModelSpec:
    """Look up a registered model; unknown names raise with close matches."""
    _scan()
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
    _scan()
    names = sorted(_REGISTRY)
    if not include_tiny:
        names = [n for n in names if not n.endswith("_tiny")]
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


# -- config checks -----------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """What one builder argument may be: ``allowed`` says it in words, ``test`` checks it;
    ``None`` passes when ``optional``."""

    allowed: str
    test: Callable[[Any], bool]
    optional: bool = False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(minimum: int, words: str = "", **kw: Any) -> Rule:
    words = words or ("a positive integer" if minimum == 1 else f"an integer >= {minimum}")
    return Rule(words, lambda v: _is_int(v) and v >= minimum, **kw)


def _number(allowed: str, test: Callable[[float], bool], **kw: Any) -> Rule:
    return Rule(allowed, lambda v: _is_number(v) and test(v), **kw)


def _sizes(allowed: str, rank: int | None = None, *, empty: bool = True, **kw: Any) -> Rule:
    def test(value: Any) -> bool:
        ok = isinstance(value, (list, tuple)) and all(_is_int(s) and s >= 1 for s in value)
        return ok and (rank is None or len(value) == rank) and (empty or len(value) > 0)

    return Rule(allowed, test, **kw)


#: Builder arguments with a meaning shared by every model that takes them.
RULES: dict[str, Rule] = {
    "image_shape": _sizes("(height, width, channels), three positive integers", rank=3),
    "sequence_shape": _sizes("(timesteps, features), two positive integers", rank=2),
    "latent_dim": _integer(1),
    "units": _integer(1),
    "memory_items": _integer(1),
    "num_classes": _integer(1),
    "k": _integer(1, "an integer, at least 1 (samples per example)"),
    "discriminator_steps": _integer(1),
    "convs_per_stage": _integer(1, "an integer >= 1 (1 = one strided convolution per stage)"),
    "warmup_steps": _integer(0),
    "instance_noise_steps": _integer(1),
    "seed": _integer(0, optional=True),
    # a list of widths per stage, or (image-to-image networks) the first layer's width
    "filters": Rule(
        "a non-empty list of positive integers or a positive integer",
        lambda v: (_is_int(v) and v >= 1) or _sizes("", empty=False).test(v),
        optional=True,
    ),
    "hidden": _sizes("a list of positive integers"),
    "beta": _number("a number >= 0", lambda v: v >= 0),
    "gaussian_scale": _number("a number > 0", lambda v: v > 0),
    "min_scale": _number("a number > 0", lambda v: v > 0),
    "clip_value": _number("a number > 0", lambda v: v > 0, optional=True),
    "sharpness": _number("a number > 0", lambda v: v > 0),
    "gradient_penalty": _number("a number >= 0", lambda v: v >= 0),
    "entropy_weight": _number("a number >= 0", lambda v: v >= 0),
    "shrink_threshold": _number("a number in [0, 1)", lambda v: 0 <= v < 1),
    "instance_noise": _number("a number >= 0", lambda v: v >= 0),
    "penalty_weight": _number("a number >= 0", lambda v: v >= 0, optional=True),
    "noise_level": _number("a number >= 0", lambda v: v >= 0, optional=True),
    "label_smoothing": _number("a probability in [0, 1)", lambda v: 0 <= v < 1),
    "label_dropout": _number("a probability in [0, 1)", lambda v: 0 <= v < 1),
    "sparsity_target": _number("a probability in (0, 1)", lambda v: 0 < v < 1),
    "ema_decay": _number("in (0, 1)", lambda v: 0 < v < 1, optional=True),
    "score_blur": _number("a sigma in pixels >= 0", lambda v: v >= 0),
    "score_top_fraction": _number("in (0, 1]", lambda v: 0 < v <= 1),
}


def check_config(name: str, config: dict[str, Any]) -> None:
    """Check a full builder config (see :data:`RULES`) and that a convolutional model's
    image can be halved once per entry of ``filters``; raises :class:`ConfigError`
    naming the key, the value and what is allowed. Needs no TensorFlow."""
    for key, value in config.items():
        rule = RULES.get(key)
        if rule is None or (value is None and rule.optional):
            continue
        if not rule.test(value):
            allowed = rule.allowed + (" or None" if rule.optional else "")
            raise ConfigError(f"model {name!r}: {key} must be {allowed}; got {value!r}")
    conv = config.get("architecture", "conv") == "conv"
    spec = _REGISTRY.get(name)
    # image-to-image builders take one width (the first layer's) for any image size
    one_width = spec is not None and _is_int(spec.parameters.get("filters"))
    if conv and "filters" in config and "image_shape" in config and not one_width:
        if _is_int(config["filters"]):  # an integer width is for image-to-image networks
            raise ConfigError(
                f"model {name!r}: filters must be a non-empty list of positive integers (one "
                f"width per stage); got {config['filters']!r}"
            )
        image_shape = config["image_shape"]
        filters = config["filters"] or default_filters(image_shape, base=1)
        try:
            bottom_shape(image_shape, len(filters))
        except ValueError as error:
            raise ConfigError(
                f"model {name!r}: image_shape={tuple(image_shape)}: {error}"
            ) from None


def resolve_config(name: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The full builder config for ``name``: defaults, the tiny overrides, then ``config``,
    checked (:func:`check_config`). Unknown keys raise with the accepted keys listed."""
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
    resolved = {**defaults, **tiny, **config}
    check_config(name, resolved)
    return resolved


# -- loading -----------------------------------------------------------------------------
def run_folder(weights: str | Path) -> Path | None:
    """The run folder (the one holding ``recipe.toml``) that ``weights`` is or lies in:
    the folder itself, its ``checkpoints/`` or a checkpoint prefix in there."""
    path = Path(weights)
    for folder in (path, *list(path.parents)[:2]):
        if (folder / "recipe.toml").is_file():
            return folder
    return None


def build_config(model_config: dict[str, Any], seed: int) -> dict[str, Any]:
    """A recipe's model config as a run builds it: its ``[model_config]``, with the
    recipe's ``seed`` unless the table sets its own."""
    return {**model_config, "seed": model_config.get("seed", seed)}


def run_model(run: Path) -> tuple[str, dict[str, Any]]:
    """The model a run folder was trained with and its build config (:func:`build_config`),
    as the ``recipe.toml`` the run wrote records them (``model``, ``seed``,
    ``[model_config]``). Read here as plain TOML: the recipe layer sits above the registry."""
    import tomllib

    path = run / "recipe.toml"
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    model, config = values.get("model"), values.get("model_config", {})
    if not isinstance(model, str) or not isinstance(config, dict):
        raise ConfigError(
            f'{path} does not describe a model: it needs model = "<name>" and a '
            "[model_config] table (zoo train writes both)"
        )
    return model, build_config(config, values.get("seed", 0))


def _check_same_model(name: str, saved: str, where: str | Path) -> None:
    """``saved`` (the model that made ``where``) must share ``name``'s builder, so
    ``vae`` and ``vae_tiny`` are interchangeable, but ``vae`` and ``dcgan`` are not."""
    want = get_spec(name)
    try:
        have = get_spec(saved)
    except UnknownModelError:
        have = None
    if have is None or (have.module, have.builder_name) != (want.module, want.builder_name):
        family = f" (family {have.family})" if have else " (not a registered zoo model)"
        raise ConfigError(
            f"{where} holds a {saved!r} model{family}, not {name!r} (family {want.family}); "
            f"load it with zoo.load({saved!r}, weights=...) or zoo.load_run(path)"
        )


def load(name: str, weights: str | Path | None = None, **config: Any) -> keras.Model:
    """Build the registered model ``name`` with ``config``, ready to compile and fit.

    ``weights`` may be a ``.keras`` file saved from a run (the whole trainer is
    restored and ``config`` must be empty), a ``.weights.h5`` file, or a run's
    checkpoint (a run folder, its ``checkpoints/`` or a checkpoint prefix). A run's
    model is built from its ``recipe.toml`` ([model_config] and seed; ``config`` wins).
    Saved weights must come from the same builder as ``name`` (``vae`` and ``vae_tiny``
    are one builder), else :class:`ConfigError` names both models.
    """
    spec = get_spec(name)
    if weights is not None and str(weights).endswith(".keras"):
        if config:
            raise ConfigError(
                "a .keras file carries its own config; drop the config arguments "
                f"{sorted(config)} or build with zoo.load(name, **config) and load weights "
                "from a .weights.h5 file or checkpoint instead"
            )
        load_model_modules()  # Keras must know the zoo's classes to rebuild them
        import keras

        model = keras.saving.load_model(weights, safe_mode=True)
        _check_same_model(name, model.name, weights)
        model.zoo_name = name
        return model
    run = run_folder(weights) if weights is not None else None
    if run is not None:
        saved, saved_config = run_model(run)
        _check_same_model(name, saved, run)
        name, config = saved, {**saved_config, **config}
        spec = get_spec(name)
    try:
        model = spec.builder(**resolve_config(name, config))
    except ConfigError:
        raise
    except ValueError as error:  # the builder's own checks (e.g. latent_dim vs input size)
        raise ConfigError(f"model {name!r}: {error}") from error
    model.zoo_name = name
    if weights is not None:
        from zoo.checkpoints import load_weights

        load_weights(model, weights)
    return model
