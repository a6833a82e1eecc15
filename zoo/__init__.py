"""The generative model zoo: every model loads, trains, exports and serves the same way.

>>> import zoo
>>> model = zoo.load("dcgan", image_shape=(64, 64, 3))
>>> model.compile()
>>> model.fit(dataset, epochs=5)

The public names (``zoo.load``, ``zoo.load_run``, ...) and the submodules
(``zoo.registry``, ``zoo.data``, ``zoo.recipes``, ``zoo.export``, ...) are imported on
first use, so ``import zoo`` stays cheap and free of side effects (TensorFlow loads with
the first model). This facade is an entry point: it may name any layer.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that is its one home.
_HOMES = {
    "ConfigError": "zoo.registry",
    "UnknownModelError": "zoo.registry",
    "list_models": "zoo.registry",
    "load": "zoo.registry",
    "register": "zoo.registry",
    "load_run": "zoo.recipes.runs",
}

__all__ = [
    "ConfigError",
    "UnknownModelError",
    "__version__",
    "list_models",
    "load",
    "load_run",
    "register",
]

if TYPE_CHECKING:  # pragma: no cover
    from zoo.recipes.runs import load_run
    from zoo.registry import ConfigError, UnknownModelError, list_models, load, register


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    if not name.startswith("_") and importlib.util.find_spec(f"zoo.{name}") is not None:
        return importlib.import_module(f"zoo.{name}")  # zoo.registry, zoo.data, ...
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
