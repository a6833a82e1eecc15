"""Model builders, one module per family; importing a module registers its models
(``zoo.registry.model_modules`` finds them, ``zoo.registry.load_model_modules`` imports
them all)."""
