"""The data of image-to-image recipes: a recipe's ``[data]`` table -> training and held-out
``(source, target)`` (or unpaired ``(a, b)``) datasets and the augmentation the batches get.

Which model wants pairs, and of which shapes, is read from its task declaration
(``pair_shapes``); how elements become pairs (``data.pairing``) defaults to what the data
source holds: a bundled task states its own, a CycleGAN folder (``trainA/``, ``trainB/``)
or TFDS ``cycle_gan/*`` is unpaired, a paired folder or an ``.npz`` with ``source`` and
``target`` arrays is paired, and photographs for super-resolution are ``downsample``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from zoo.recipes.recipe import Recipe, RecipeError

from zoo.data import pairs
from zoo.data.core import DataError

__all__ = ["PairData", "build_pair_data", "held_out_pairs", "run_pairs"]


@dataclass
class PairData:
    """Unbatched training elements (before augmentation), held-out pairs (already in their
    final form), the number of training elements and the training augmentation."""

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    count: int
    augment: Any
    pairing: str
    description: str


def default_pairing(recipe: Recipe, paired: bool) -> str:
    d = recipe.data
    if d["pairing"]:
        return str(d["pairing"])
    if d["source"] == "bundled" and d["name"] in pairs.BUNDLED_TASKS:
        return pairs.BUNDLED_TASKS[d["name"]][0]
    if d["source"] == "tfds":
        return "unpaired"
    if not paired:
        return "unpaired"
    return "paired"


def _split_off(full: tf.data.Dataset, fraction: float) -> tuple[tf.data.Dataset, Any]:
    count = int(full.cardinality())
    n_val = round(count * float(fraction))
    return full.skip(n_val), (full.take(n_val) if n_val else None)


def _folder_photos(path: str, channels: int) -> list[np.ndarray]:
    folder = Path(path).expanduser()
    suffixes = (".png", ".jpg", ".jpeg")
    found = folder.iterdir() if folder.is_dir() else []
    files = sorted(p for p in found if p.suffix.lower() in suffixes)
    if not files:
        raise DataError(
            f"no .png/.jpg photographs in {path!r}; data.pairing = 'downsample' cuts "
            "training crops from a folder of photographs"
        )
    return [pairs._read_photo(f, channels) for f in files]


def _elements(recipe: Recipe, pairing: str, source_shape: tuple, target_shape: tuple) -> tuple:
    """(train, held-out or None, description) before the pair transforms."""
    d = recipe.data
    source, name, path = d["source"], d["name"], d["path"]
    with_validation = bool(d["validation_split"])
    if source == "bundled":
        if name not in pairs.BUNDLED_TASKS:
            raise RecipeError(
                f"data.name = {name!r} is not a bundled task; choose one of "
                f"{', '.join(pairs.BUNDLED_TASKS)}"
            )
        kind = pairs.BUNDLED_TASKS[name][0]
        if kind != pairing:
            raise RecipeError(
                f"the bundled task {name!r} is {kind}, but the recipe asks for data.pairing = "
                f"{pairing!r}; drop data.pairing or choose another task"
            )
        shapes = {"source_shape": source_shape, "target_shape": target_shape, "seed": recipe.seed}
        train = pairs.bundled_task(name, "train", **shapes)
        val = pairs.bundled_task(name, "test", **shapes) if with_validation else None
        return train, val, f"bundled task {name} ({pairs.BUNDLED_TASKS[name][1]})"
    if source == "tfds":
        if pairing != "unpaired":
            raise RecipeError("data.source = 'tfds' serves unpaired cycle_gan/* datasets only")
        train = pairs.from_tfds_unpaired(name, "train", image_shape=source_shape, seed=recipe.seed)
        val = (
            pairs.from_tfds_unpaired(name, "test", image_shape=source_shape, seed=recipe.seed)
            if with_validation
            else None
        )
        return train, val, f"tfds {name} (trainA/trainB)"
    if source == "download":  # pix2pix's datasets: side-by-side AB files, once online
        if pairing != "paired":
            raise RecipeError("data.source = 'download' serves pix2pix's paired datasets")
        splits = {split: pairs.pix2pix_folder(name, split) for split in ("train", "val")}
        shapes = {"source_shape": source_shape, "target_shape": target_shape}
        layout = {"layout": "side_by_side", "direction": d["direction"]}
        train = pairs.from_paired_folder(splits["train"], **shapes, **layout)
        val = pairs.from_paired_folder(splits["val"], **shapes, **layout)
        return train, (val if with_validation else None), f"pix2pix dataset {name}"
    if not path:
        raise RecipeError(f"data.source = {source!r} needs data.path")
    if source == "folder" and pairing == "unpaired":
        train = pairs.from_unpaired_folders(path, image_shape=source_shape, seed=recipe.seed)
        has_test = (Path(path) / "testA").is_dir() and (Path(path) / "testB").is_dir()
        val = (
            pairs.from_unpaired_folders(
                path, split="test", image_shape=source_shape, seed=recipe.seed
            )
            if has_test and with_validation
            else None
        )
        return train, val, f"unpaired folders {path} (trainA/, trainB/)"
    if source == "folder" and pairing == "downsample":
        photos = _folder_photos(path, target_shape[2])
        n_val = round(len(photos) * float(d["validation_fraction"])) if with_validation else 0
        size = target_shape[0]
        train_tiles = pairs.photo_tiles(photos[n_val:], size + size // 2, size // 2, None)
        as_floats = lambda t: tf.cast(t, tf.float32) / 255.0  # noqa: E731
        train = tf.data.Dataset.from_tensor_slices(train_tiles).map(as_floats)
        val = None
        if n_val:
            val_tiles = pairs.photo_tiles(photos[:n_val], size, size, None)
            val = tf.data.Dataset.from_tensor_slices(val_tiles).map(as_floats)
        return train, val, f"photographs in {path} (the first {n_val} held out)"
    if source == "folder":
        full = pairs.from_paired_folder(
            path, layout=d["layout"], source_shape=source_shape, target_shape=target_shape,
            direction=d["direction"],
        )  # fmt: skip
    elif source == "numpy":
        with np.load(path) as arrays:
            missing = [k for k in ("source", "target") if k not in arrays]
            if missing:
                raise RecipeError(
                    f"data.path {path!r} lacks {', '.join(missing)}: paired .npz files hold "
                    "`source` and `target` arrays"
                )
            full = pairs.from_pairs(
                arrays["source"], arrays["target"], source_shape=source_shape,
                target_shape=target_shape,
            )  # fmt: skip
    else:
        raise RecipeError(
            f"data.source = {source!r} holds no image pairs; use bundled, folder, numpy or tfds"
        )
    full = full.apply(tf.data.experimental.assert_cardinality(_count(full)))
    train, val = _split_off(full, d["validation_fraction"] if with_validation else 0.0)
    return train, val, f"pairs from {source} {path} (layout {d['layout']})"


def _count(ds: tf.data.Dataset) -> int:
    count = int(ds.cardinality())
    return count if count >= 0 else sum(1 for _ in ds)


def build_pair_data(
    recipe: Recipe, source_shape: tuple[int, ...], target_shape: tuple[int, ...], paired: bool
) -> PairData:
    """The datasets a translator's recipe trains and validates on."""
    pairing = default_pairing(recipe, paired)
    wanted = ("paired", "downsample") if paired else ("unpaired",)
    if pairing not in wanted:
        raise RecipeError(
            f"the model trains on {'pairs' if paired else 'two unpaired domains'}, but "
            f"data.pairing is {pairing!r}; use {' or '.join(wanted)}"
        )
    d = recipe.data
    try:
        train_fn, eval_fn = pairs.pair_transforms(
            pairing, source_shape, target_shape, jitter=int(d["jitter"]), flip=bool(d["flip"])
        )
    except DataError as error:
        raise RecipeError(f"[data]: {error}") from None
    train, val, description = _elements(recipe, pairing, source_shape, target_shape)
    count = _count(train)
    if count == 0:
        raise RecipeError(f"no training pairs in {description}")
    train = train.apply(tf.data.experimental.assert_cardinality(count))
    if val is not None:
        val = val.map(eval_fn).apply(tf.data.experimental.assert_cardinality(_count(val)))
    return PairData(train, val, count, train_fn, pairing, description)


def held_out_pairs(
    recipe: Recipe, declaration: Any, n: int | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Up to ``n`` held-out (source, target) pairs of a recipe's data as arrays, evenly
    spaced over the held-out set (test splits are often ordered by class), and what they
    are: for ``zoo sample`` and ``zoo evaluate``."""
    source_shape, target_shape = declaration.pair_shapes
    data = build_pair_data(recipe, source_shape, target_shape, bool(declaration.model.paired))
    if data.validation is None:
        raise RecipeError(
            f"the recipe holds out no pairs ({data.description}); set data.validation_split "
            "or data.validation_fraction"
        )
    held = data.validation
    if n is not None:
        stride = max(_count(held) // int(n), 1)
        held = held.shard(stride, 0).take(int(n))
    sources, targets = [], []
    for s, t in held.batch(256).as_numpy_iterator():
        sources.append(s)
        targets.append(t)
    return np.concatenate(sources), np.concatenate(targets), f"held-out {data.description}"


def run_pairs(run: str | Path, model: Any, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``n`` held-out pairs of a run folder's recipe for a model that trains on pairs (the
    rows ``zoo sample`` draws); None for other models or without a ``recipe.toml``."""
    from zoo.recipes.recipe import load_recipe

    from zoo.tasks import declaration_of

    declaration = declaration_of(model)
    recipe_file = Path(run) / "recipe.toml"
    if declaration.pair_shapes is None or not recipe_file.is_file():
        return None
    sources, targets, _ = held_out_pairs(load_recipe(recipe_file), declaration, n)
    return sources, targets
