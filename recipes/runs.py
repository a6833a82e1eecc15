"""Finding and loading what a training run left behind (``zoo.load_run``).

A run folder is the recipe layer's product (``recipe.toml``, checkpoints, ``model.keras``),
so loading one lives here, above the registry that builds the model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.recipes.recipe import load_recipe

from zoo import registry

if TYPE_CHECKING:  # pragma: no cover
    import keras


def load_run(path: str | os.PathLike) -> keras.Model:
    """A trained model from a run folder (``model.keras``, else the latest checkpoint
    rebuilt from ``recipe.toml``), a ``.keras`` file, or a registered model name."""
    path = Path(path)
    if path.suffix == ".keras" and path.is_file():
        return _load_keras(path)
    if path.is_dir():
        if (path / "model.keras").is_file():
            model = _load_keras(path / "model.keras")
            if (path / "recipe.toml").is_file():  # the registered name the run trained
                model.zoo_name = load_recipe(path / "recipe.toml").model
            return model
        if (path / "recipe.toml").is_file():
            # registry.load builds the run's model from its recipe.toml (one code path)
            return registry.load(load_recipe(path / "recipe.toml").model, weights=str(path))
        raise FileNotFoundError(
            f"{path} is not a run folder: it has neither model.keras nor recipe.toml"
        )
    if str(path) in registry.list_models():
        return registry.load(str(path))
    registry.get_spec(str(path))  # raises with close matches
    raise FileNotFoundError(str(path))


def _load_keras(path: Path) -> keras.Model:
    import keras

    registry.load_model_modules()  # Keras must know the zoo's classes to rebuild them
    model = keras.saving.load_model(path, safe_mode=True)
    if model.name in registry.list_models():
        model.zoo_name = model.name
    return model
