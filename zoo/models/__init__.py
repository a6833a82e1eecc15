"""Model builders, one module per family; importing a module registers its models
(``zoo.registry.MODEL_MODULES`` lists them, ``zoo.registry.load_model_modules`` imports
them all)."""
