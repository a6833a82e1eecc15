"""Datasets of image pairs for image-to-image models.

Every function returns an unbatched ``tf.data.Dataset`` of float32 ``(source, target)``
pairs in [0, 1] (paired translation, super-resolution) or ``(a, b)`` draws from two
unpaired domains (CycleGAN). Layouts:

- :func:`from_pairs`: numpy pairs (two arrays, example i of one paired with example i of
  the other);
- :func:`from_paired_folder`: pix2pix's side-by-side ``AB`` images, or two folders ``A/``
  and ``B/`` whose files pair by name;
- :func:`from_unpaired_folders`: CycleGAN's ``trainA/ trainB/ testA/ testB/`` layout;
- :func:`from_tfds_unpaired`: TFDS ``cycle_gan/<name>`` (needs the data once, online);
- :func:`pix2pix_folder`: pix2pix's own datasets (``facades``, ``maps``, ...), downloaded
  once when online, then read as side-by-side folders;
- :func:`photo_tiles`: single photographs cut into tiles, for super-resolution (the pair
  is made from each tile by :func:`pair_transforms`).

:func:`bundled_task` gives the three offline tasks the tests, demos and benchmarks use
(``edges2digits``, ``digits2animals``, ``photos_x4``; sources and licences in
``zoo/data/sample/ATTRIBUTION.md``). :func:`pair_transforms` gives the per-example
augmentation :func:`zoo.data.batch` applies after its cache: the SAME random jitter, crop
and flip for the source and the target (Isola et al., 2017, §6.2), or a random crop and
its downscaled copy for super-resolution (Ledig et al., 2017).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from zoo.data.core import DataError, check_image_shape, fit_image, fmt_shape
from zoo.data.sources import _decode_file, _list_images, from_tfds, load_sample

__all__ = [
    "BUNDLED_TASKS",
    "PAIRINGS",
    "PIX2PIX_DATASETS",
    "bundled_task",
    "edges",
    "from_paired_folder",
    "from_pairs",
    "from_tfds_unpaired",
    "from_unpaired_folders",
    "load_animals",
    "pair_transforms",
    "photo_tiles",
    "pix2pix_folder",
    "unpaired",
]

#: How the elements of a dataset become a model's (source, target): ``paired`` (they are
#: pairs), ``unpaired`` (draws from two domains), ``downsample`` (single images: the target
#: is a crop, the source its bicubic downscale).
PAIRINGS = ("paired", "unpaired", "downsample")
BUNDLED_TASKS = {
    "edges2digits": ("paired", "outlines of the bundled MNIST digits -> the digits"),
    "digits2animals": ("unpaired", "bundled MNIST digits <-> bundled animal silhouettes"),
    "photos_x4": ("downsample", "tiles of scikit-image's CC0/public-domain photographs"),
}
#: scikit-image's photographs for ``photos_x4`` (licences in ATTRIBUTION.md).
PHOTOS = {
    "train": (
        "astronaut.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg",
        "brick.png", "grass.png", "gravel.png",
    ),
    "test": ("chelsea.png", "camera.png"),
}  # fmt: skip
#: At most this many training tiles per photograph (retina.jpg alone would give 1,700).
MAX_TILES_PER_PHOTO = 300


def _as_pair_shapes(
    source_shape: Sequence[int], target_shape: Sequence[int]
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    return check_image_shape(source_shape), check_image_shape(target_shape)


# -- numpy and folders ---------------------------------------------------------------------
def _unit_floats(images: Any, what: str) -> np.ndarray:
    """uint8 or [0, 1] float arrays [N, H, W(, C)] -> float32 [N, H, W, C] in [0, 1]."""
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise DataError(f"{what} must be [N, H, W] or [N, H, W, C] images; got {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{what} must be uint8 or float in [0, 1]; got {array.dtype}")
    low, high = float(np.min(array)), float(np.max(array))
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 1:
        raise DataError(
            f"{what} are floats in [{low:g}, {high:g}]; scale them to [0, 1] (images / 255)"
        )
    return array.astype(np.float32)


def from_pairs(
    source: Any,
    target: Any,
    *,
    source_shape: Sequence[int],
    target_shape: Sequence[int],
) -> tf.data.Dataset:
    """(source, target) pairs from two arrays of the same length (uint8 or [0, 1] floats),
    each resized to its shape (antialiased) and given its channels."""
    source_shape, target_shape = _as_pair_shapes(source_shape, target_shape)
    sources, targets = _unit_floats(source, "source"), _unit_floats(target, "target")
    if len(sources) != len(targets):
        raise DataError(
            f"{len(sources)} sources but {len(targets)} targets; pairs need one target per "
            "source, in the same order"
        )
    if not len(sources):
        raise DataError("the pair arrays are empty")
    ds = tf.data.Dataset.from_tensor_slices((sources, targets))
    return ds.map(lambda s, t: (fit_image(s, source_shape), fit_image(t, target_shape)))


def _folder(path: str | os.PathLike[str], what: str) -> Path:
    root = Path(path).expanduser()
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"{what} {str(root)!r} {state}")
    return root


def _image_files(root: Path) -> list[str]:
    found = _list_images(root, recursive=False)
    if not found:
        raise DataError(
            f"no image files in {str(root)!r}; put .png/.jpg/.jpeg/.bmp/.gif files there"
        )
    return found


def from_paired_folder(
    path: str | os.PathLike[str],
    *,
    layout: str = "side_by_side",
    source_shape: Sequence[int] = (256, 256, 3),
    target_shape: Sequence[int] = (256, 256, 3),
    direction: str = "a_to_b",
) -> tf.data.Dataset:
    """Pairs from a folder: ``layout="side_by_side"`` (pix2pix's datasets: each file holds
    A on the left half and B on the right) or ``"folders"`` (``path/A`` and ``path/B``
    whose files pair by name). ``direction="a_to_b"``: A is the source; ``"b_to_a"``: B."""
    source_shape, target_shape = _as_pair_shapes(source_shape, target_shape)
    if direction not in ("a_to_b", "b_to_a"):
        raise DataError(f"direction must be 'a_to_b' or 'b_to_a'; got {direction!r}")
    root = _folder(path, "paired image folder")
    if layout == "side_by_side":
        paths = _image_files(root)

        def halves(file: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            image = _decode_file(file)
            half = tf.shape(image)[1] // 2
            return image[:, :half], image[:, half : 2 * half]

        ds = tf.data.Dataset.from_tensor_slices(paths).map(halves)
    elif layout == "folders":
        folder_a, folder_b = _folder(root / "A", "folder"), _folder(root / "B", "folder")
        names_a = {Path(p).name: p for p in _image_files(folder_a)}
        names_b = {Path(p).name: p for p in _image_files(folder_b)}
        alone = sorted(set(names_a) ^ set(names_b))
        if alone:
            raise DataError(
                f"{len(alone)} files of {str(root)!r} have no partner of the same name in the "
                f"other folder (A/ and B/ must hold the same file names): {', '.join(alone[:5])}"
            )
        names = sorted(names_a)
        ds = tf.data.Dataset.from_tensor_slices(
            ([names_a[n] for n in names], [names_b[n] for n in names])
        ).map(lambda a, b: (_decode_file(a), _decode_file(b)))
    else:
        raise DataError(f"unknown paired layout {layout!r}; use 'side_by_side' or 'folders'")
    if direction == "b_to_a":
        ds = ds.map(lambda a, b: (b, a))
    return ds.map(
        lambda s, t: (fit_image(s, source_shape), fit_image(t, target_shape)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def unpaired(a: tf.data.Dataset, b: tf.data.Dataset, seed: int = 0) -> tf.data.Dataset:
    """``(a_i, b_j)`` draws from two unpaired domains: max(|A|, |B|) elements, the smaller
    domain repeated, B in a seeded random order (the pairing carries no meaning: CycleGAN's
    losses treat a and b separately)."""
    n_a, n_b = (int(d.cardinality()) for d in (a, b))
    if n_a <= 0 or n_b <= 0:
        raise DataError(f"both domains need images; got {n_a} and {n_b}")
    n = max(n_a, n_b)
    b = b.shuffle(n_b, seed=seed, reshuffle_each_iteration=False)
    pairs = tf.data.Dataset.zip((a.repeat().take(n), b.repeat().take(n)))
    return pairs.apply(tf.data.experimental.assert_cardinality(n))


def from_unpaired_folders(
    path: str | os.PathLike[str],
    *,
    split: str = "train",
    image_shape: Sequence[int] = (256, 256, 3),
    seed: int = 0,
) -> tf.data.Dataset:
    """``(a, b)`` draws from CycleGAN's layout: ``path/trainA`` and ``path/trainB`` (or
    ``testA``/``testB`` for ``split="test"``), each image resized to ``image_shape``."""
    shape = check_image_shape(image_shape)
    root = _folder(path, "unpaired image folder")
    domains = []
    for domain in ("A", "B"):
        folder = _folder(root / f"{split}{domain}", f"{split}{domain} folder (CycleGAN layout)")
        paths = _image_files(folder)
        domains.append(
            tf.data.Dataset.from_tensor_slices(paths).map(
                lambda f: fit_image(_decode_file(f), shape),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
        )
    return unpaired(*domains, seed=seed)


def from_tfds_unpaired(
    name: str,
    split: str = "train",
    *,
    image_shape: Sequence[int] = (256, 256, 3),
    seed: int = 0,
    **kwargs: Any,
) -> tf.data.Dataset:
    """``(a, b)`` from a TFDS ``cycle_gan/<pair>`` dataset (splits ``trainA``/``trainB``,
    ``testA``/``testB``). Offline without a prepared copy it raises the TFDS source's
    :class:`DataError` saying how to get one."""
    a = from_tfds(name, f"{split}A", image_shape=image_shape, **kwargs)
    b = from_tfds(name, f"{split}B", image_shape=image_shape, **kwargs)
    return unpaired(a, b, seed=seed)


#: pix2pix's own datasets (side-by-side AB JPEGs; Isola et al., 2017), downloaded on demand.
PIX2PIX_DATASETS = ("facades", "cityscapes", "maps", "edges2shoes", "edges2handbags", "night2day")
PIX2PIX_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{name}.tar.gz"


def pix2pix_folder(name: str, split: str = "train", cache_dir: str | None = None) -> Path:
    """The folder of one split of a pix2pix dataset (``facades`` ...), downloaded and
    extracted once into Keras' cache (``~/.keras/datasets``). Offline it fails at once,
    naming the host and the folder layout to use instead."""
    if name not in PIX2PIX_DATASETS:
        raise DataError(
            f"unknown pix2pix dataset {name!r}; choose one of {', '.join(PIX2PIX_DATASETS)}"
        )
    url = PIX2PIX_URL.format(name=name)
    from zoo.data.downloads import unreachable_host

    root = Path(cache_dir or Path.home() / ".keras" / "datasets")
    folder = next((p for p in root.glob(f"{name}*/{name}/{split}") if p.is_dir()), None)
    if folder is None:
        host = unreachable_host([url])
        if host is not None:
            raise DataError(
                f"pix2pix dataset {name!r} is not in {str(root)!r} and cannot be downloaded: "
                f"no network ({host} does not resolve). Download {url} elsewhere, extract it "
                f"and train on data.source = 'folder', data.path = '<...>/{name}/{split}', "
                "data.layout = 'side_by_side'"
            )
        import keras

        extracted = Path(
            keras.utils.get_file(f"{name}.tar.gz", url, extract=True, cache_dir=str(root.parent),
                                 cache_subdir=root.name)
        )  # fmt: skip
        candidates = [extracted / name / split, extracted / split]
        folder = next((p for p in candidates if p.is_dir()), None)
        if folder is None:
            raise DataError(f"the pix2pix archive {url} has no {split}/ folder in {extracted}")
    return folder


# -- bundled tasks -------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _animal_arrays() -> tuple[np.ndarray, np.ndarray]:
    resource = files("zoo.data") / "sample" / "animals_5k.npz"
    with resource.open("rb") as fh, np.load(fh) as npz:
        images, labels = np.asarray(npz["images"], np.uint8), np.asarray(npz["labels"], np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_animals(split: str = "all", *, test_fraction: float = 0.2) -> tuple[np.ndarray, ...]:
    """The bundled animal silhouettes ``(images uint8 [N, 28, 28, 1], labels)``; "train"
    and "test" split each class by position (the last ``test_fraction`` is test)."""
    images, labels = _animal_arrays()
    if split == "all":
        return images.copy(), labels.copy()
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use 'all', 'train' or 'test'")
    test = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        test[idx[len(idx) - round(test_fraction * len(idx)) :]] = True
    keep = test if split == "test" else ~test
    return images[keep], labels[keep]


def edges(images: tf.Tensor) -> tf.Tensor:
    """The outline of each shape: the morphological gradient dilate(x) - erode(x) over a 3x3
    window, [N, H, W, C] in [0, 1] -> [0, 1] (a stand-in for pix2pix's edge maps)."""
    dilated = tf.nn.max_pool2d(images, 3, 1, "SAME")
    eroded = -tf.nn.max_pool2d(-images, 3, 1, "SAME")
    return tf.clip_by_value(dilated - eroded, 0.0, 1.0)


def _digits(split: str, shape: tuple[int, int, int]) -> np.ndarray:
    images, _ = load_sample(split)
    return tf.image.resize(images.astype(np.float32) / 255.0, shape[:2], antialias=True).numpy()


def _photo_folder() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the photos_x4 task reads the photographs inside scikit-image; install it "
            "(pip install scikit-image), or train on your own folder of photographs "
            "(data.source = 'folder', data.pairing = 'downsample')"
        )
    return Path(spec.submodule_search_locations[0]) / "data"


def _read_photo(path: Path, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        converted = image.convert("RGB" if channels == 3 else "L")
        array = np.asarray(converted, np.uint8)
    return array if array.ndim == 3 else array[..., None]


def photo_tiles(
    photos: Sequence[np.ndarray], tile: int, stride: int, max_tiles: int | None, seed: int = 0
) -> np.ndarray:
    """Square ``tile`` x ``tile`` crops of each photograph on a grid of ``stride`` (at most
    ``max_tiles`` per photograph, a seeded choice), uint8 [N, tile, tile, C]."""
    rng = np.random.default_rng(seed)
    out = []
    for photo in photos:
        h, w = photo.shape[:2]
        rows, columns = range(0, h - tile + 1, stride), range(0, w - tile + 1, stride)
        corners = [(y, x) for y in rows for x in columns]
        if max_tiles is not None and len(corners) > max_tiles:
            corners = [corners[i] for i in np.sort(rng.choice(len(corners), max_tiles, False))]
        out += [photo[y : y + tile, x : x + tile] for y, x in corners]
    if not out:
        raise DataError(f"no photograph is at least {tile}x{tile}; lower the tile size")
    return np.stack(out)


def bundled_task(
    name: str,
    split: str = "train",
    *,
    source_shape: Sequence[int] = (32, 32, 1),
    target_shape: Sequence[int] = (32, 32, 1),
    seed: int = 0,
) -> tf.data.Dataset:
    """One of the offline tasks (:data:`BUNDLED_TASKS`), split "train" or "test":

    - ``edges2digits`` (paired): (outline, digit) of the bundled MNIST digits;
    - ``digits2animals`` (unpaired): (digit, animal silhouette) draws;
    - ``photos_x4`` (downsample): tiles of scikit-image's photographs, 1.5x the target size
      with stride half of it for training (a random crop is cut from each), and exactly the
      target size, without overlap, for test; :func:`pair_transforms` makes the
      low-resolution source.
    """
    if name not in BUNDLED_TASKS:
        raise DataError(f"unknown bundled task {name!r}; choose one of {', '.join(BUNDLED_TASKS)}")
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r} of {name}; use 'train' or 'test'")
    source_shape, target_shape = _as_pair_shapes(source_shape, target_shape)
    if name == "edges2digits":
        digits = _digits(split, target_shape)
        outlines = edges(tf.constant(digits)).numpy()
        return from_pairs(outlines, digits, source_shape=source_shape, target_shape=target_shape)
    if name == "digits2animals":
        digits = tf.data.Dataset.from_tensor_slices(_digits(split, source_shape))
        animals, _ = load_animals(split)
        b = tf.data.Dataset.from_tensor_slices(animals.astype(np.float32) / 255.0)
        return unpaired(digits, b.map(lambda x: fit_image(x, target_shape)), seed=seed)
    size, channels = target_shape[0], target_shape[2]
    if target_shape[0] != target_shape[1]:
        raise DataError(f"photos_x4 cuts square tiles; got target_shape {fmt_shape(target_shape)}")
    folder = _photo_folder()
    photos = [_read_photo(folder / f, channels) for f in PHOTOS[split]]
    if split == "train":
        tiles = photo_tiles(photos, size + size // 2, size // 2, MAX_TILES_PER_PHOTO, seed)
    else:
        tiles = photo_tiles(photos, size, size, None)
    return tf.data.Dataset.from_tensor_slices(tiles).map(lambda t: tf.cast(t, tf.float32) / 255.0)


# -- augmentation --------------------------------------------------------------------------
Transform = Callable[..., tuple[tf.Tensor, tf.Tensor]]


def downscale(images: tf.Tensor, shape: Sequence[int]) -> tf.Tensor:
    """Bicubic downscale with antialiasing to ``shape``'s height and width, in [0, 1]: how
    the low-resolution inputs of super-resolution are made (Ledig et al., 2017)."""
    resized = tf.image.resize(images, tuple(shape[:2]), method="bicubic", antialias=True)
    return tf.clip_by_value(resized, 0.0, 1.0)


def _center_crop(image: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return image[top : top + size[0], left : left + size[1]]


def pair_transforms(
    pairing: str,
    source_shape: Sequence[int],
    target_shape: Sequence[int],
    *,
    jitter: int = 0,
    flip: bool = False,
) -> tuple[Transform, Transform]:
    """``(train, evaluate)`` element transforms to a model's ``(source, target)``.

    ``train(element, seed)`` (``seed`` a stateless [2] int seed, fixed per example and epoch
    by :func:`zoo.data.batch`) draws ONE crop and flip for both images of a pair: with
    ``jitter`` > 0 both are first resized to ``jitter`` x ``jitter`` and a crop of the model's
    size is taken (pix2pix: 286 -> 256). ``downsample`` crops the target size at random
    from a tile and makes the source by :func:`downscale`; ``unpaired`` flips a and b
    independently. ``evaluate(element)`` is deterministic (centre crop, no flip)."""
    if pairing not in PAIRINGS:
        raise DataError(f"unknown pairing {pairing!r}; use one of {', '.join(PAIRINGS)}")
    source_shape, target_shape = _as_pair_shapes(source_shape, target_shape)

    def flipped(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        return tf.image.stateless_random_flip_left_right(image, seed) if flip else image

    if pairing == "downsample":

        def train(image: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            crop = tf.image.stateless_random_crop(image, target_shape, seed)
            target = flipped(crop, seed + 1)
            return downscale(target[None], source_shape)[0], target

        def evaluate(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            target = _center_crop(image, target_shape)
            target = tf.ensure_shape(target, target_shape)
            return downscale(target[None], source_shape)[0], target

        return train, evaluate

    if pairing == "unpaired":

        def train_unpaired(a: tf.Tensor, b: tf.Tensor, seed: tf.Tensor) -> tuple:
            return flipped(a, seed), flipped(b, seed + 1)

        return train_unpaired, lambda a, b: (a, b)

    if jitter and source_shape[:2] != target_shape[:2]:
        raise DataError(
            "jitter crops source and target together: they need the same height and width; "
            f"got {fmt_shape(source_shape)} and {fmt_shape(target_shape)}"
        )

    def train_paired(source: tf.Tensor, target: tf.Tensor, seed: tf.Tensor) -> tuple:
        if jitter:
            both = tf.concat([source, target], axis=-1)
            both = tf.image.resize(both, (jitter, jitter), method="bilinear")
            size = (*target_shape[:2], source_shape[2] + target_shape[2])
            both = tf.image.stateless_random_crop(both, size, seed)
            source, target = both[..., : source_shape[2]], both[..., source_shape[2] :]
        return flipped(source, seed + 1), flipped(target, seed + 1)

    return train_paired, lambda s, t: (s, t)
