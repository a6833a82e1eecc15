"""Training recipes (TOML files) and the runner behind ``zoo train``.

Reading and checking a recipe needs no TensorFlow; the runner (``train``) is imported
on first use."""

from typing import TYPE_CHECKING, Any

from zoo.recipes.recipe import Recipe, RecipeError, list_recipes, load_recipe

if TYPE_CHECKING:  # pragma: no cover
    from zoo.recipes.runner import RunResult, train

__all__ = ["Recipe", "RecipeError", "RunResult", "list_recipes", "load_recipe", "train"]


def __getattr__(name: str) -> Any:
    if name in ("RunResult", "train"):
        from zoo.recipes import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'zoo.recipes' has no attribute {name!r}")
