"""Tests for zoo.data: sources, batching, grids and PNG output (all offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from zoo.data import (
    DataError,
    batch,
    from_folder,
    from_numpy,
    from_sample,
    from_tfds,
    image_grid,
    load_sample,
    make_dataset,
    save_png,
    to_float_images,
)


def _images(ds: tf.data.Dataset) -> np.ndarray:
    return np.stack([x.numpy() for x in ds])


def _keys(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
    return [img.tobytes() + bytes([int(lab)]) for img, lab in zip(images, labels, strict=True)]


# --------------------------------------------------------------------------- sample


def test_load_sample_all_shapes_dtypes_and_class_balance() -> None:
    images, labels = load_sample()
    assert images.shape == (5000, 28, 28, 1)
    assert images.dtype == np.uint8
    assert labels.shape == (5000,)
    assert labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [500] * 10
    assert images.max() == 255 and images.min() == 0


def test_load_sample_stratified_split_is_disjoint_and_complete() -> None:
    all_x, all_y = load_sample("all")
    tr_x, tr_y = load_sample("train", test_fraction=0.2, seed=0)
    te_x, te_y = load_sample("test", test_fraction=0.2, seed=0)
    assert tr_x.shape == (4000, 28, 28, 1) and te_x.shape == (1000, 28, 28, 1)
    assert np.bincount(tr_y).tolist() == [400] * 10
    assert np.bincount(te_y).tolist() == [100] * 10
    all_keys = _keys(all_x, all_y)
    assert len(set(all_keys)) == 5000  # every example is distinct, so sets are meaningful
    train_keys, test_keys = set(_keys(tr_x, tr_y)), set(_keys(te_x, te_y))
    assert not train_keys & test_keys
    assert train_keys | test_keys == set(all_keys)

    _, te_y30 = load_sample("test", test_fraction=0.3)
    assert np.bincount(te_y30).tolist() == [150] * 10


def test_load_sample_split_depends_only_on_seed() -> None:
    a_x, a_y = load_sample("test", seed=7)
    b_x, b_y = load_sample("test", seed=7)
    c_x, _ = load_sample("test", seed=8)
    np.testing.assert_array_equal(a_x, b_x)
    np.testing.assert_array_equal(a_y, b_y)
    assert not np.array_equal(a_x, c_x)


def test_load_sample_returns_independent_copies() -> None:
    images, _ = load_sample()
    images[0] = 7
    again, _ = load_sample()
    assert not np.all(again[0] == 7)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"split": "validation"}, "train"), ({"split": "train", "test_fraction": 1.5}, "0.2")],
)
def test_load_sample_bad_arguments(kwargs: dict, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        load_sample(**kwargs)


def test_from_sample_values_match_arrays_in_unit_range() -> None:
    images, labels = load_sample("test")
    ds = from_sample("test", with_labels=True)
    assert ds.element_spec[0].shape == (28, 28, 1)
    assert ds.element_spec[0].dtype == tf.float32
    assert ds.element_spec[1].dtype == tf.int64
    assert int(ds.cardinality()) == 1000
    got = list(ds.take(16))
    x = np.stack([g[0].numpy() for g in got])
    y = np.array([int(g[1]) for g in got])
    assert x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_allclose(x, images[:16] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(y, labels[:16])


def test_from_sample_resized_to_rgb_64() -> None:
    ds = from_sample("all", image_shape=(64, 64, 3))
    assert ds.element_spec.shape == (64, 64, 3)
    x = _images(ds.take(4))
    assert x.shape == (4, 64, 64, 3) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_array_equal(x[..., 0], x[..., 1])
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    # Upscaling keeps the digit: mean brightness is close to the 28x28 original's.
    orig, _ = load_sample()
    want = orig[:4].mean(axis=(1, 2, 3)) / 255
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), want, atol=0.02)


# --------------------------------------------------------------------------- numpy


def test_from_numpy_uint8_and_float_agree() -> None:
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    a = _images(from_numpy(u8))
    b = _images(from_numpy(u8.astype(np.float64) / 255.0))
    assert a.dtype == np.float32 and a.shape == (6, 8, 8, 3)
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, u8 / 255.0, atol=1e-6)


def test_from_numpy_adds_channel_and_keeps_labels() -> None:
    x = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
    ds = from_numpy(x, np.array([3, 1, 4, 1, 5], dtype=np.uint8), with_labels=True)
    assert ds.element_spec[0].shape == (4, 4, 1)
    pairs = list(ds)
    assert [int(y) for _, y in pairs] == [3, 1, 4, 1, 5]
    assert pairs[0][1].dtype == tf.int64
    np.testing.assert_allclose(pairs[2][0].numpy()[..., 0], x[2] / 255.0, atol=1e-6)


def test_from_numpy_shape_mismatch_error_names_shapes_and_fix() -> None:
    x = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(DataError) as err:
        from_numpy(x, image_shape=(28, 28, 1))
    msg = str(err.value)
    assert "32x32x3" in msg and "28x28x1" in msg
    assert "resize=True" in msg and "image_shape=(32,32,3)" in msg


def test_from_numpy_resize_converts_shape_and_channels() -> None:
    x = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    x[..., 0] = 255  # pure red
    ds = from_numpy(x, image_shape=(28, 28, 1), resize=True)
    out = _images(ds)
    assert out.shape == (2, 28, 28, 1)
    np.testing.assert_allclose(out, 0.2989, atol=2e-3)  # luma of red


def test_from_numpy_float_out_of_range_says_to_scale() -> None:
    with pytest.raises(DataError, match=r"\[0, 1\].*scale"):
        from_numpy(np.full((2, 4, 4, 1), 2.0, dtype=np.float32))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        from_numpy(np.full((2, 4, 4, 1), -0.5))


def test_from_numpy_label_errors() -> None:
    x = np.zeros((4, 4, 4, 1), dtype=np.uint8)
    with pytest.raises(DataError, match=r"4 images"):
        from_numpy(x, np.arange(3), with_labels=True)
    with pytest.raises(DataError, match="no labels"):
        from_numpy(x, with_labels=True)
    with pytest.raises(DataError, match=r"\(N,H,W\)"):
        from_numpy(np.zeros((4, 4), dtype=np.uint8))


def test_to_float_images() -> None:
    out = to_float_images(np.array([0, 51, 255], dtype=np.uint8))
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), [0.0, 0.2, 1.0], atol=1e-7)
    np.testing.assert_allclose(to_float_images(np.array([0.25])).numpy(), [0.25])


# --------------------------------------------------------------------------- folder


def _solid(size: tuple[int, int], color: int | tuple[int, ...], mode: str) -> Image.Image:
    return Image.new(mode, size, color)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    _solid((30, 20), (255, 0, 0), "RGB").save(root / "a_red.png")
    _solid((40, 50), 200, "L").save(root / "b_gray.JPG", quality=100)
    _solid((17, 9), (0, 0, 255, 255), "RGBA").save(root / "c_blue_rgba.png")
    _solid((12, 12), (0, 255, 0), "RGB").save(root / "sub" / "d_green.jpeg", quality=100)
    (root / "notes.txt").write_text("not an image")
    return root


def test_from_folder_reads_all_images_recursively_sorted(image_folder: Path) -> None:
    ds = from_folder(image_folder, image_shape=(16, 16, 3))
    assert ds.element_spec.shape == (16, 16, 3)
    x = _images(ds)
    assert x.shape == (4, 16, 16, 3) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    means = x.mean(axis=(1, 2))  # per-image mean colour, files in sorted order
    np.testing.assert_allclose(means[0], [1, 0, 0], atol=0.01)  # a_red.png
    np.testing.assert_allclose(means[1], [200 / 255] * 3, atol=0.01)  # b_gray.JPG -> RGB
    np.testing.assert_allclose(means[2], [0, 0, 1], atol=0.01)  # c_blue_rgba.png
    np.testing.assert_allclose(means[3], [0, 1, 0], atol=0.02)  # sub/d_green.jpeg
    # grayscale file became RGB with equal channels
    np.testing.assert_allclose(x[1, ..., 0], x[1, ..., 2], atol=1e-6)


def test_from_folder_non_recursive_and_grayscale_target(image_folder: Path) -> None:
    ds = from_folder(image_folder, image_shape=(8, 10, 1), recursive=False)
    x = _images(ds)
    assert x.shape == (3, 8, 10, 1)
    np.testing.assert_allclose(x[0].mean(), 0.2989, atol=0.01)  # red -> luma


def test_from_folder_empty_and_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("nothing here")
    with pytest.raises(DataError) as err:
        from_folder(empty)
    assert str(empty) in str(err.value) and ".png" in str(err.value)
    with pytest.raises(DataError, match="does not exist"):
        from_folder(tmp_path / "nope")


# --------------------------------------------------------------------------- tfds


def test_from_tfds_mnist_with_mock_data(tmp_path: Path) -> None:
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        ds = from_tfds("mnist", "train", with_labels=True, data_dir=tmp_path)
        pairs = list(ds)
        resized = _images(from_tfds("mnist", "test", image_shape=(32, 32, 3), data_dir=tmp_path))
    assert len(pairs) == 6
    x = np.stack([p[0].numpy() for p in pairs])
    assert x.shape == (6, 28, 28, 1) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.5  # random pixels, scaled
    assert all(p[1].dtype == tf.int64 and 0 <= int(p[1]) < 10 for p in pairs)
    assert resized.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(resized[..., 0], resized[..., 1])


def test_from_tfds_with_labels_on_unlabelled_dataset(tmp_path: Path) -> None:
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(DataError, match=r"no 'label'.*with_labels=False"):
            from_tfds("celeb_a", image_shape=(16, 16, 3), with_labels=True, data_dir=tmp_path)
        x = _images(from_tfds("celeb_a", image_shape=(16, 16, 3), data_dir=tmp_path))
    assert x.shape == (2, 16, 16, 3) and x.min() >= 0.0 and x.max() <= 1.0


def test_from_tfds_unknown_name_suggests_close_match() -> None:
    with pytest.raises(DataError, match="'mnist'"):
        from_tfds("mnsit")


def test_from_tfds_missing_data_offline_points_to_alternatives(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        from_tfds("mnist", data_dir=tmp_path, download=False)
    msg = str(err.value)
    assert "could not be" in msg and 'source="sample"' in msg and "folder" in msg


# --------------------------------------------------------------------------- batch


def _batches(ds: tf.data.Dataset) -> list[list[int]]:
    return [b.numpy().tolist() for b in ds]


def _flat(batches: list[list[int]]) -> list[int]:
    return [v for b in batches for v in b]


def test_batch_epoch_seeded_order_is_resumable() -> None:
    ds = tf.data.Dataset.range(23)
    full = batch(ds, 5, seed=3, epochs=4)
    assert int(full.cardinality()) == 16
    full_batches = _batches(full)
    assert len(full_batches) == 16 and all(len(b) == 5 for b in full_batches)
    resumed = _batches(batch(ds, 5, seed=3, epochs=4, first_epoch=2))
    assert resumed == full_batches[8:]
    epochs = [_flat(full_batches[i * 4 : i * 4 + 4]) for i in range(4)]
    for e in epochs:
        assert len(set(e)) == 20 and set(e) <= set(range(23))
    assert len({tuple(e) for e in epochs}) == 4  # every epoch has its own order
    assert _batches(batch(ds, 5, seed=4, epochs=4)) != full_batches


def test_batch_epoch_order_same_in_fresh_process() -> None:
    # The runner always sets the global seed (keras.utils.set_random_seed); do the same
    # on both sides, since tf.data's shuffle order depends on it.
    tf.random.set_seed(7)
    here = _batches(batch(tf.data.Dataset.range(23), 5, seed=3, epochs=4, first_epoch=3))
    code = (
        "import json, tensorflow as tf\n"
        "from zoo.data import batch\n"
        "tf.random.set_seed(7)\n"
        "ds = batch(tf.data.Dataset.range(23), 5, seed=3, epochs=4, first_epoch=3)\n"
        "print(json.dumps([b.numpy().tolist() for b in ds]))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here


def test_batch_single_epoch_reshuffles_and_drop_remainder() -> None:
    ds = tf.data.Dataset.range(23)
    kept = batch(ds, 5, seed=1, drop_remainder=False)
    first, second = _batches(kept), _batches(kept)
    assert [len(b) for b in first] == [5, 5, 5, 5, 3]
    assert sorted(_flat(first)) == list(range(23))
    assert first != second  # reshuffled on each iteration
    dropped = _batches(batch(ds, 5, seed=1))
    assert [len(b) for b in dropped] == [5, 5, 5, 5]
    ordered = _batches(batch(ds, 10, shuffle=False, drop_remainder=False))
    assert ordered == [list(range(10)), list(range(10, 20)), [20, 21, 22]]


def test_batch_on_sample_pairs() -> None:
    ds = batch(from_sample("test", with_labels=True), 64, seed=0, epochs=1)
    x, y = next(iter(ds))
    assert x.shape == (64, 28, 28, 1) and x.dtype == tf.float32
    assert y.shape == (64,) and y.dtype == tf.int64
    assert int(ds.cardinality()) == 1000 // 64


@pytest.mark.parametrize("bad", [0, -3])
def test_batch_rejects_bad_batch_size(bad: int) -> None:
    with pytest.raises(DataError, match="batch_size"):
        batch(tf.data.Dataset.range(10), bad)


def test_batch_too_small_dataset_and_bad_epochs() -> None:
    small = tf.data.Dataset.range(3)
    with pytest.raises(DataError, match="drop_remainder=False"):
        batch(small, 5)
    assert _batches(batch(small, 5, shuffle=False, drop_remainder=False)) == [[0, 1, 2]]
    with pytest.raises(DataError, match="first_epoch"):
        batch(tf.data.Dataset.range(10), 2, epochs=2, first_epoch=3)


# --------------------------------------------------------------------------- make_dataset


def test_make_dataset_dispatch(image_folder: Path) -> None:
    sample = make_dataset("sample", split="test", with_labels=True, seed=1)
    assert int(sample.cardinality()) == 1000
    x = np.zeros((2, 28, 28), dtype=np.uint8)
    assert make_dataset("numpy", images=x).element_spec.shape == (28, 28, 1)
    folder = make_dataset("folder", path=image_folder, image_shape=(8, 8, 3))
    assert _images(folder).shape == (4, 8, 8, 3)
    with pytest.raises(DataError) as err:
        make_dataset("csv")
    assert all(s in str(err.value) for s in ("sample", "tfds", "folder", "numpy"))
    with pytest.raises(DataError, match="name="):
        make_dataset("tfds")
    with pytest.raises(DataError, match="does not take"):
        make_dataset("sample", bogus=1)


# --------------------------------------------------------------------------- grids, PNG


def test_image_grid_layout() -> None:
    images = np.stack([np.full((8, 6, 3), i / 10.0) for i in range(10)])
    grid = image_grid(images, ncols=4)
    assert grid.dtype == np.uint8
    assert grid.shape == (3 * 9 - 1, 4 * 7 - 1, 3)  # 3 rows, 4 cols, 1px separators
    for i in range(10):
        r, c = divmod(i, 4)
        tile = grid[r * 9 : r * 9 + 8, c * 7 : c * 7 + 6]
        assert np.all(tile == round(i / 10 * 255))
    assert np.all(grid[8, :] == 255) and np.all(grid[:, 6] == 255)  # separators
    assert np.all(grid[18:, 14:] == 255)  # the two unused cells
    assert image_grid(images).shape == grid.shape  # default: ceil(sqrt(10)) = 4 columns


def test_save_png_round_trip_and_atomic(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, size=(9, 11, 1), dtype=np.uint8)
    out = tmp_path / "out" / "grid.png"
    assert save_png(rgb, out) == str(out)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), rgb)
    save_png(gray, out)  # overwrite in place
    with Image.open(out) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), gray[..., 0])
    with pytest.raises(DataError, match="uint8"):
        save_png(rgb.astype(np.float32), tmp_path / "out" / "bad.png")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["grid.png"]


def test_image_grid_to_png(tmp_path: Path) -> None:
    x, _ = load_sample("test")
    grid = image_grid(x[:10] / 255.0, ncols=5)
    path = save_png(grid, tmp_path / "digits.png")
    back = np.asarray(Image.open(path))
    assert back.shape == (2 * 29 - 1, 5 * 29 - 1)
    np.testing.assert_array_equal(back[:28, :28], x[0, ..., 0])
