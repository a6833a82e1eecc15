"""The generative model zoo: every model loads, trains, exports and serves the same way.

>>> import zoo
>>> model = zoo.load("dcgan", image_shape=(64, 64, 3))
>>> model.compile()
>>> model.fit(dataset, epochs=5)
"""

from zoo.registry import UnknownModelError, list_models, load, register

__version__ = "0.1.0"

__all__ = ["UnknownModelError", "__version__", "list_models", "load", "register"]
