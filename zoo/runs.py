"""Finding and loading what a training run left behind."""

from __future__ import annotations

import os
from pathlib import Path

import keras

from zoo import registry


def load_run(path: str | os.PathLike) -> keras.Model:
    """A trained model from a run folder (``model.keras``, else the latest checkpoint
    rebuilt from ``recipe.toml``), a ``.keras`` file, or a registered model name."""
    path = Path(path)
    registry.load_model_modules()  # Keras must know the zoo's classes to rebuild them
    if path.suffix == ".keras" and path.is_file():
        return keras.saving.load_model(path, safe_mode=True)
    if path.is_dir():
        if (path / "model.keras").is_file():
            return keras.saving.load_model(path / "model.keras", safe_mode=True)
        if (path / "recipe.toml").is_file():
            from zoo.recipes import load_recipe

            recipe = load_recipe(path / "recipe.toml")
            config = {**recipe.model_config, "seed": recipe.model_config.get("seed", recipe.seed)}
            return registry.load(recipe.model, weights=str(path), **config)
        raise FileNotFoundError(
            f"{path} is not a run folder: it has neither model.keras nor recipe.toml"
        )
    if str(path) in registry.list_models():
        return registry.load(str(path))
    registry.get_spec(str(path))  # raises with close matches
    raise FileNotFoundError(str(path))
