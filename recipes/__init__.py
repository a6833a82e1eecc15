"""Training recipes (TOML files) and the runner behind ``zoo train``."""

from zoo.recipes.recipe import Recipe, RecipeError, list_recipes, load_recipe
from zoo.recipes.runner import RunResult, train

__all__ = ["Recipe", "RecipeError", "RunResult", "list_recipes", "load_recipe", "train"]
