"""One writer for the small recipes the tests train (each test states only what differs)."""

from __future__ import annotations

SAMPLE_DATA = 'source = "sample"\nbatch_size = 32'
FEW_STEPS = "steps_per_epoch = 3\nlog_every_steps = 1\nverbose = 0"


def recipe_toml(
    name: str,
    model: str,
    *,
    epochs: int = 2,
    seed: int = 3,
    data: str = SAMPLE_DATA,
    training: str | None = FEW_STEPS,
    logging: str | None = "num_samples = 4",
) -> str:
    """A recipe on 28x28x1 images: the given ``[data]``, ``[training]`` and ``[logging]``
    bodies (``None`` leaves a table out, so the recipe's defaults apply)."""
    tables = {"data": data, "training": training, "logging": logging}
    body = "".join(f"\n[{table}]\n{text}\n" for table, text in tables.items() if text is not None)
    return (
        f'name = "{name}"\nmodel = "{model}"\nseed = {seed}\nepochs = {epochs}\n\n'
        f"[model_config]\nimage_shape = [28, 28, 1]\n{body}"
    )
