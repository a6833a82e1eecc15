"""The generative model zoo: every model loads, trains, exports and serves the same way.

>>> import zoo
>>> model = zoo.load("dcgan", image_shape=(64, 64, 3))
>>> model.compile()
>>> model.fit(dataset, epochs=5)

The public names and the submodules (``zoo.registry``, ``zoo.data``, ``zoo.runs``,
``zoo.export``, ...) are imported on first use, so ``import zoo`` stays cheap and free
of side effects (TensorFlow loads with the first model).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["ConfigError", "UnknownModelError", "__version__", "list_models", "load", "register"]

if TYPE_CHECKING:  # pragma: no cover
    from zoo.registry import ConfigError, UnknownModelError, list_models, load, register


def __getattr__(name: str) -> Any:
    if name in __all__:
        from zoo import registry

        return getattr(registry, name)
    if not name.startswith("_") and importlib.util.find_spec(f"zoo.{name}") is not None:
        return importlib.import_module(f"zoo.{name}")  # zoo.registry, zoo.data, ...
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
