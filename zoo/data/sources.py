"""Dataset sources: bundled MNIST sample, numpy arrays, image folders and TFDS.

Every function returns an unbatched ``tf.data.Dataset`` whose elements are
float32 images in [0, 1] of shape exactly ``image_shape`` or, with
``with_labels=True``, ``(image, label)`` pairs with an int64 label.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import os
import re
import warnings
from collections.abc import Callable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from zoo.data.core import DataError, DataWarning, check_image_shape, fit_image, fmt_shape
from zoo.data.downloads import (
    download_urls,
    is_network_error,
    removed_on_failure,
    tfds_folders,
    unreachable_host,
)
from zoo.data.images import as_image_batch

SPLITS = ("all", "train", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SOURCES = ("sample", "tfds", "folder", "numpy")
_ALTERNATIVES = (
    'use source="sample" (the bundled 5k MNIST digits, works offline), '
    'source="folder" (your own image files), source="numpy" (in-memory arrays), '
    "or prepare the TFDS dataset once while online (or pass data_dir= pointing at "
    "an existing TFDS data directory)"
)


# --------------------------------------------------------------------------- sample


@functools.lru_cache(maxsize=1)
def _sample_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Read the bundled npz once (read-only arrays; callers copy)."""
    resource = files("zoo.data") / "sample" / "mnist_5k.npz"
    with resource.open("rb") as fh, np.load(fh) as npz:
        images = np.asarray(npz["images"], dtype=np.uint8)
        labels = np.asarray(npz["labels"]).astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_sample(
    split: str = "all", *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Load the bundled MNIST sample as ``(images uint8 (N,28,28,1), labels int64 (N,))``.

    ``split`` is "all", "train" or "test". The train/test split is stratified
    (each class contributes ``round(test_fraction * count)`` examples to test),
    deterministic for a given ``seed``, and the two splits are disjoint and
    together make up "all". Examples keep the file's original order.
    """
    if split not in SPLITS:
        raise DataError(f"unknown sample split {split!r}; use one of {', '.join(SPLITS)}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise DataError(
            f"test_fraction must be strictly between 0 and 1, got {test_fraction!r}; "
            "pass e.g. test_fraction=0.2"
        )
    images, labels = _sample_arrays()
    if split == "all":
        return images.copy(), labels.copy()
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        n_test = round(float(test_fraction) * len(idx))
        test_mask[rng.permutation(idx)[:n_test]] = True
    keep = test_mask if split == "test" else ~test_mask
    return images[keep], labels[keep]


def from_sample(
    split: str = "all",
    *,
    image_shape: Sequence[int] = (28, 28, 1),
    with_labels: bool = False,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tf.data.Dataset:
    """Dataset of the bundled MNIST sample, resized/recoloured to ``image_shape``."""
    images, labels = load_sample(split, test_fraction=test_fraction, seed=seed)
    return from_numpy(images, labels, image_shape=image_shape, with_labels=with_labels, resize=True)


# --------------------------------------------------------------------------- numpy


def _check_labels(labels: Any, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise DataError(
            f"labels have shape {labels.shape} but there are {n} images; "
            f"pass one integer label per image (shape ({n},))"
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0):
            return labels.astype(np.int64)
        raise DataError(
            f"labels must be integers, got dtype {labels.dtype}; pass integer class ids"
        )
    return labels.astype(np.int64)


def from_numpy(
    images: Any,
    labels: Any = None,
    *,
    image_shape: Sequence[int] | None = None,
    with_labels: bool = False,
    resize: bool = False,
) -> tf.data.Dataset:
    """Dataset from in-memory arrays.

    ``images`` is uint8 (0-255) or float (already in [0, 1]) with shape (N,H,W)
    or (N,H,W,C). If ``image_shape`` differs from the arrays' shape, pass
    ``resize=True`` to resize and convert channels.
    """
    images = as_image_batch(images)
    if images.dtype == np.uint8:
        pass
    elif np.issubdtype(images.dtype, np.floating):
        lo, hi = float(np.min(images)), float(np.max(images))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise DataError(
                f"float images must be in [0, 1], got values in [{lo:g}, {hi:g}]; scale them "
                "first (e.g. images / 255.0 for 0-255 data, (images + 1) / 2 for [-1, 1]) "
                "or pass uint8 arrays"
            )
        images = images.astype(np.float32)
    else:
        raise DataError(
            f"images must be uint8 (0-255) or float in [0, 1], got dtype {images.dtype}; "
            "convert with images.astype(np.uint8) or scale to floats in [0, 1]"
        )
    have = tuple(int(d) for d in images.shape[1:])
    target = have if image_shape is None else check_image_shape(image_shape)
    if target != have and not resize:
        raise DataError(
            f"images are {fmt_shape(have)} but the model expects {fmt_shape(target)}; "
            f"pass resize=True or set image_shape=({have[0]},{have[1]},{have[2]})"
        )
    if with_labels and labels is None:
        raise DataError("with_labels=True but no labels were given; pass labels= or drop it")
    if labels is not None:
        labels = _check_labels(labels, images.shape[0])

    def fit(image: tf.Tensor) -> tf.Tensor:
        return fit_image(image, target)

    if with_labels:
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        return ds.map(lambda x, y: (fit(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    ds = tf.data.Dataset.from_tensor_slices(images)
    return ds.map(fit, num_parallel_calls=tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- folder


def _list_images(root: Path, recursive: bool) -> list[str]:
    candidates = root.rglob("*") if recursive else root.iterdir()
    found = [p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return [str(p) for p in sorted(found, key=lambda p: p.relative_to(root).as_posix())]


def _decode_file(file: tf.Tensor) -> tf.Tensor:
    """Decode one image file to uint8 (H, W, 3): the first frame of an animated GIF."""
    image = tf.io.decode_image(
        tf.io.read_file(file), channels=3, dtype=tf.uint8, expand_animations=False
    )
    image.set_shape((None, None, 3))
    return image


def _undecodable(paths: Sequence[str]) -> list[str]:
    """The files among ``paths`` that ``_decode_file`` fails on (empty, truncated, not an
    image), found in one parallel tf.data pass that drops the failing elements."""

    def probe(index: tf.Tensor, file: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # The decode fails for an undecodable file, and ignore_errors() drops its element;
        # its shape is returned so that the decode is not pruned from the graph.
        return index, tf.shape(_decode_file(file))

    probe_fn = tf.autograph.experimental.do_not_convert(probe)
    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), list(paths)))
    ds = ds.map(probe_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    decoded = set()
    for indices, _ in ds.ignore_errors().batch(1024):
        decoded.update(indices.numpy().tolist())
    return [path for i, path in enumerate(paths) if i not in decoded]


def _names(paths: Sequence[str], root: Path, limit: int = 10) -> str:
    names = [Path(p).relative_to(root).as_posix() for p in paths[:limit]]
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(names) + more


def from_folder(
    path: str | os.PathLike[str],
    *,
    image_shape: Sequence[int] = (64, 64, 3),
    recursive: bool = True,
    check_files: bool = True,
) -> tf.data.Dataset:
    """Dataset of the image files (png/jpg/jpeg/bmp/gif, any size) under ``path``.

    Files are sorted by relative path, decoded (first frame of animated GIFs),
    converted to ``image_shape``'s channel count and resized with antialiasing.

    With ``check_files`` (the default) every file is decoded once up front (about as
    long as one pass over the data; 2,000 small PNG/JPEG files take about half a
    second) and files that cannot be decoded (empty, truncated, not an image) are
    skipped with one :class:`DataWarning` giving their count and the first names; if
    none can be decoded, or the folder holds no image files, it raises
    :class:`DataError`. With ``check_files=False`` a bad file fails training instead.
    """
    target = check_image_shape(image_shape)
    root = Path(path).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(
            f"image folder {str(root)!r} {what}; pass path= pointing at a folder of images"
        )
    paths = _list_images(root, recursive)
    if not paths:
        where = "in or under" if recursive else "directly in"
        raise DataError(
            f"no image files found {where} {str(root)!r}; accepted extensions are "
            f"{', '.join(IMAGE_EXTENSIONS)} (any case) - add images there or point path= "
            "at another folder"
        )
    bad = _undecodable(paths) if check_files else []
    if len(bad) == len(paths):
        raise DataError(
            f"none of the {len(paths)} image files in {str(root)!r} can be read and decoded "
            f"(empty, truncated, unreadable or not PNG/JPEG/BMP/GIF data): "
            f"{_names(bad, root)}; "
            "replace them with valid images or point path= at another folder"
        )
    if bad:
        skipped = set(bad)
        paths = [p for p in paths if p not in skipped]
        warnings.warn(
            DataWarning(
                f"skipping {len(bad)} of {len(bad) + len(paths)} image files in "
                f"{str(root)!r} that cannot be read and decoded (empty, truncated, unreadable "
                f"or not image data): {_names(bad, root)}; training uses the other {len(paths)}"
            ),
            stacklevel=2,
        )

    def load(file: tf.Tensor) -> tf.Tensor:
        return fit_image(_decode_file(file), target)

    ds = tf.data.Dataset.from_tensor_slices(paths)
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# --------------------------------------------------------------------------- tfds


def _unknown_tfds_name(name: str, known: Sequence[str]) -> DataError:
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = (
        f"did you mean {', '.join(repr(c) for c in close)}?"
        if close
        else "see tensorflow_datasets.list_builders() for the available names"
    )
    return DataError(
        f'unknown TFDS dataset {name!r}; {hint} (or use source="sample" for the bundled '
        "MNIST digits)"
    )


def _tfds_failure(name: str, split: str, root: Path, download: bool, exc: BaseException) -> str:
    """One-line description of why ``tfds.load`` failed, and what to do instead."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    missing = next((e for e in chain if isinstance(e, ModuleNotFoundError)), None)
    if missing is not None and missing.name:
        return (
            f"TFDS cannot prepare {name!r}: it needs the Python module {missing.name!r}, "
            f"which is not installed; run `pip install {missing.name}` and retry. "
            f"Meanwhile, {_ALTERNATIVES}"
        )
    first = exc
    network = next((e for e in chain if is_network_error(e)), None)
    if download and network is not None:
        first = network
        what = f"could not be downloaded into {str(root)!r} (a network error)"
    elif download:
        what = f"could not be downloaded and prepared in {str(root)!r}"
    else:
        what = f"could not be found in {str(root)!r} (download=False)"
    detail = str(first).splitlines()[0] if str(first) else ""
    return (
        f"TFDS dataset {name!r} (split {split!r}) {what}: {type(first).__name__}: {detail}. "
        f"Instead, {_ALTERNATIVES}"
    )


def _local_or_download(
    load: Callable[[bool], tf.data.Dataset], name: str, root: Path, builder: Any
) -> tf.data.Dataset:
    """``load(False)`` first (TFDS may still find the data, e.g. mocked in tests); if that
    fails, the download hosts are looked up before ``load(True)``, so that an offline
    machine fails in seconds: TFDS retries a failed connection for about 3.5 minutes."""
    try:
        return load(False)
    except Exception:
        host = unreachable_host(download_urls(builder))
        if host is not None:
            raise DataError(
                f"TFDS dataset {name!r} is not in {str(root)!r} and cannot be downloaded: "
                f"no network ({host} does not resolve). Offline, {_ALTERNATIVES}"
            ) from None
    return load(True)


def from_tfds(
    name: str,
    split: str = "train",
    *,
    image_shape: Sequence[int] | None = None,
    with_labels: bool = False,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> tf.data.Dataset:
    """Dataset from TensorFlow Datasets (feature "image", and "label" if asked for).

    Any failure to find or download the data raises :class:`DataError` naming the
    cause and the offline alternatives. Before downloading, the download hosts are
    looked up, so an offline machine fails in seconds (TFDS itself would retry for
    minutes); a failed download removes the folders and files it created under the
    data directory (``data_dir``, default ``~/tensorflow_datasets``) and nothing else.
    """
    import tensorflow_datasets as tfds  # heavy; imported only when used

    target = None if image_shape is None else check_image_shape(image_shape)
    base = str(name).split("/")[0]
    versioned = re.fullmatch(r"(\w+):[\d.*]+", base)  # e.g. "mnist:3.*.*"
    base = versioned.group(1) if versioned else base
    if ":" not in base:  # community "namespace:name" datasets are left to TFDS itself
        known = tfds.list_builders()
        if base not in known:
            raise _unknown_tfds_name(base, known)
    data_dir = None if data_dir is None else os.fspath(Path(data_dir).expanduser())
    root = Path(data_dir or tfds.core.constants.DATA_DIR).expanduser()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as exc:
        raise _unknown_tfds_name(base, tfds.list_builders()) from exc
    except Exception:  # e.g. a bad config name: tfds.load below reports it
        builder = None

    def load(fetch: bool) -> tf.data.Dataset:
        return tfds.load(name, split=split, data_dir=data_dir, download=fetch, as_supervised=False)

    absent = download and builder is not None and not builder.is_prepared()
    owned, shared = tfds_folders(builder, root, base)
    with removed_on_failure(owned, shared):
        try:
            ds = _local_or_download(load, name, root, builder) if absent else load(download)
        except DataError:
            raise
        except tfds.core.registered.DatasetNotFoundError as exc:
            raise _unknown_tfds_name(base, tfds.list_builders()) from exc
        except Exception as exc:  # offline, missing data, bad split, ...
            raise DataError(_tfds_failure(name, split, root, download, exc)) from exc

    spec = ds.element_spec
    if not isinstance(spec, dict) or "image" not in spec:
        keys = sorted(spec) if isinstance(spec, dict) else [type(spec).__name__]
        raise DataError(
            f"TFDS dataset {name!r} has no 'image' feature (features: {keys}); "
            "pick an image dataset such as 'mnist' or 'cifar10'"
        )
    if with_labels and "label" not in spec:
        raise DataError(
            f"TFDS dataset {name!r} has no 'label' feature (features: {sorted(spec)}); "
            "pass with_labels=False"
        )
    image_spec = spec["image"]
    if image_spec.shape.rank != 3:
        raise DataError(
            f"TFDS dataset {name!r} has images of shape {image_spec.shape}, expected "
            "(H, W, C); pick a still-image dataset"
        )
    if target is None:
        dims = tuple(image_spec.shape.as_list())
        if None in dims:
            raise DataError(
                f"TFDS dataset {name!r} has images of varying size ({fmt_shape(dims)}); "
                "pass image_shape=(H, W, C) to resize them"
            )
        target = dims  # type: ignore[assignment]

    def fit(example: dict[str, tf.Tensor]) -> Any:
        image = fit_image(example["image"], target)  # type: ignore[arg-type]
        if with_labels:
            return image, tf.cast(example["label"], tf.int64)
        return image

    return ds.map(fit, num_parallel_calls=tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- dispatch


def _call_with(fn: Callable[..., tf.data.Dataset], source: str, *args: Any, **kw: Any) -> Any:
    accepted = set(inspect.signature(fn).parameters)
    unknown = sorted(set(kw) - accepted)
    if unknown:
        raise DataError(
            f"source={source!r} does not take {', '.join(unknown)}; it accepts "
            f"{', '.join(sorted(accepted))}"
        )
    return fn(*args, **kw)


def make_dataset(
    source: str,
    *,
    name: str | None = None,
    path: str | os.PathLike[str] | None = None,
    images: Any = None,
    labels: Any = None,
    split: str = "train",
    image_shape: Sequence[int] = (28, 28, 1),
    with_labels: bool = False,
    **kwargs: Any,
) -> tf.data.Dataset:
    """Build an unbatched dataset from ``source`` in {"sample", "tfds", "folder", "numpy"}.

    Extra keyword arguments go to the matching ``from_*`` function.
    """
    key = str(source).strip().lower()
    if key == "sample":
        return _call_with(
            from_sample,
            key,
            split,
            image_shape=image_shape,
            with_labels=with_labels,
            **kwargs,
        )
    if key == "tfds":
        if not name:
            raise DataError('source="tfds" needs name=, e.g. name="mnist"')
        return _call_with(
            from_tfds,
            key,
            name,
            split,
            image_shape=image_shape,
            with_labels=with_labels,
            **kwargs,
        )
    if key == "folder":
        if path is None:
            raise DataError('source="folder" needs path= pointing at a folder of images')
        if with_labels:
            raise DataError(
                'source="folder" has no labels; pass with_labels=False or use source="numpy"'
            )
        return _call_with(from_folder, key, path, image_shape=image_shape, **kwargs)
    if key == "numpy":
        if images is None:
            raise DataError('source="numpy" needs images= (an (N,H,W[,C]) array)')
        return _call_with(
            from_numpy,
            key,
            images,
            labels,
            image_shape=image_shape,
            with_labels=with_labels,
            **kwargs,
        )
    raise DataError(f"unknown source {source!r}; use one of {', '.join(map(repr, SOURCES))}")
