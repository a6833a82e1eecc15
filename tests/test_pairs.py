"""Image pairs (zoo.data.pairs): every layout yields float32 (source, target) pairs in [0, 1],
the augmentation crops and flips the two images of a pair together, super-resolution pairs are
a crop and its bicubic downscale, and bad folders say what is wrong."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from zoo import data as zdata
from zoo.data import DataError, pairs
from zoo.data.pipeline import batch


def _save(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _ramp(h: int, w: int, offset: int) -> np.ndarray:
    """uint8 RGB image whose every pixel is distinct (flips and crops are visible)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 7 + offset) % 256, (y * 5) % 256, (x + y) % 256], -1).astype(np.uint8)


def test_side_by_side_folder_splits_each_file_into_a_and_b(tmp_path):
    a, b = _ramp(8, 8, 0), _ramp(8, 8, 100)
    _save(tmp_path / "x.png", np.concatenate([a, b], axis=1))
    shapes = {"source_shape": (8, 8, 3), "target_shape": (8, 8, 3)}
    source, target = next(iter(zdata.from_paired_folder(tmp_path, **shapes)))
    np.testing.assert_allclose(source.numpy(), a / 255.0, atol=1e-6)
    np.testing.assert_allclose(target.numpy(), b / 255.0, atol=1e-6)
    source, target = next(iter(zdata.from_paired_folder(tmp_path, direction="b_to_a", **shapes)))
    np.testing.assert_allclose(source.numpy(), b / 255.0, atol=1e-6)


def test_two_folders_pair_by_name_and_refuse_orphans(tmp_path):
    for name, offset in (("1.png", 0), ("2.png", 50)):
        _save(tmp_path / "A" / name, _ramp(6, 6, offset))
        _save(tmp_path / "B" / name, _ramp(6, 6, offset + 100))
    shapes = {"source_shape": (6, 6, 3), "target_shape": (6, 6, 3), "layout": "folders"}
    got = list(zdata.from_paired_folder(tmp_path, **shapes).as_numpy_iterator())
    assert len(got) == 2
    np.testing.assert_allclose(got[1][1], _ramp(6, 6, 150) / 255.0, atol=1e-6)
    _save(tmp_path / "A" / "3.png", _ramp(6, 6, 9))
    with pytest.raises(DataError, match=r"1 files .* no partner .*: 3\.png"):
        zdata.from_paired_folder(tmp_path, **shapes)


def test_numpy_pairs_check_lengths_and_ranges():
    source = np.random.default_rng(0).uniform(size=(5, 4, 4, 1)).astype(np.float32)
    ds = zdata.from_pairs(source, 1 - source, source_shape=(4, 4, 1), target_shape=(4, 4, 1))
    s, t = next(iter(ds))
    np.testing.assert_allclose(s + t, np.ones((4, 4, 1)), atol=1e-6)
    with pytest.raises(DataError, match="5 sources but 4 targets"):
        zdata.from_pairs(source, source[:4], source_shape=(4, 4, 1), target_shape=(4, 4, 1))
    with pytest.raises(DataError, match=r"scale them to \[0, 1\]"):
        zdata.from_pairs(source * 255, source, source_shape=(4, 4, 1), target_shape=(4, 4, 1))


def test_unpaired_folders_use_cyclegan_layout(tmp_path):
    for i in range(3):
        _save(tmp_path / "trainA" / f"{i}.png", _ramp(8, 8, i))
    for i in range(5):
        _save(tmp_path / "trainB" / f"{i}.png", _ramp(8, 8, 100 + i))
    ds = zdata.from_unpaired_folders(tmp_path, image_shape=(8, 8, 3))
    assert int(ds.cardinality()) == 5  # max(|A|, |B|): the smaller domain repeats
    b_images = {round(float(b[0, 0, 0]) * 255) for _, b in ds.as_numpy_iterator()}
    assert b_images == {100, 101, 102, 103, 104}  # every B image once
    with pytest.raises(DataError, match="testA folder"):
        zdata.from_unpaired_folders(tmp_path, split="test", image_shape=(8, 8, 3))


def test_paired_jitter_and_flip_move_source_and_target_together():
    train, evaluate = pairs.pair_transforms(
        "paired", (16, 16, 1), (16, 16, 2), jitter=20, flip=True
    )
    image = tf.constant(np.random.default_rng(1).uniform(size=(16, 16, 1)), tf.float32)
    target = tf.concat([image, 1 - image], axis=-1)
    draws = []
    for k in range(12):
        s, t = train(image, target, tf.constant([7, k], tf.int64))
        assert s.shape == (16, 16, 1) and t.shape == (16, 16, 2)
        np.testing.assert_allclose(s.numpy(), t.numpy()[..., :1], atol=1e-6)  # same crop/flip
        np.testing.assert_allclose(1 - s.numpy(), t.numpy()[..., 1:], atol=1e-6)
        draws.append(s.numpy())
    assert len({d.tobytes() for d in draws}) > 6  # the crops and flips vary with the seed
    s2, _ = train(image, target, tf.constant([7, 3], tf.int64))
    s3, _ = train(image, target, tf.constant([7, 3], tf.int64))
    np.testing.assert_array_equal(s2.numpy(), s3.numpy())  # stateless: one seed, one draw
    s, t = evaluate(image, target)
    np.testing.assert_array_equal(s.numpy(), image.numpy())  # held-out pairs are untouched


def test_downsample_pairs_are_a_crop_and_its_bicubic_downscale():
    train, evaluate = pairs.pair_transforms("downsample", (4, 4, 3), (16, 16, 3), flip=True)
    tile = tf.constant(_ramp(24, 24, 3) / 255.0, tf.float32)
    lr, hr = train(tile, tf.constant([1, 2], tf.int64))
    assert lr.shape == (4, 4, 3) and hr.shape == (16, 16, 3)
    expected = tf.image.resize(hr[None], (4, 4), method="bicubic", antialias=True)[0]
    np.testing.assert_allclose(lr.numpy(), np.clip(expected.numpy(), 0, 1), atol=1e-6)
    lr, hr = evaluate(tile)
    np.testing.assert_allclose(hr.numpy(), tile.numpy()[4:20, 4:20], atol=1e-6)  # centre crop


def test_batch_applies_augmentation_reproducibly_per_epoch():
    ds = tf.data.Dataset.from_tensor_slices(np.arange(8, dtype=np.float32))

    def augment(x, seed):
        return x + tf.random.stateless_uniform([], seed)

    def run():
        got = batch(ds, 4, seed=5, epochs=2, augment=augment, shuffle=False)
        return np.concatenate(list(got.as_numpy_iterator()))

    first, again = run(), run()
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(
        first[:8] - np.arange(8), first[8:] - np.arange(8)
    )  # new epoch, new draws
    resumed = batch(ds, 4, seed=5, epochs=2, first_epoch=1, augment=augment, shuffle=False)
    np.testing.assert_array_equal(np.concatenate(list(resumed.as_numpy_iterator())), first[8:])


def test_bundled_tasks_are_offline_and_real():
    edges_ds = zdata.bundled_task("edges2digits", "test", source_shape=(32, 32, 1))
    outline, digit = next(iter(edges_ds))
    np.testing.assert_allclose(outline, pairs.edges(digit[None])[0], atol=1e-6)
    assert int(edges_ds.cardinality()) == 1000 and float(tf.reduce_max(digit)) > 0.9
    digits, animals = next(iter(zdata.bundled_task("digits2animals", "train")))
    assert digits.shape == animals.shape == (32, 32, 1)
    images, labels = zdata.load_animals("test")
    assert images.shape == (1000, 28, 28, 1) and np.bincount(labels).tolist() == [100] * 10
    train_tiles = zdata.bundled_task("photos_x4", "train", target_shape=(64, 64, 3))
    test_tiles = zdata.bundled_task("photos_x4", "test", target_shape=(64, 64, 3))
    assert next(iter(train_tiles)).shape == (96, 96, 3)
    assert int(test_tiles.cardinality()) == 28 + 64  # chelsea 451x300 and camera 512x512
    with pytest.raises(DataError, match="unknown bundled task 'facades'; choose one of"):
        zdata.bundled_task("facades")


def test_tfds_cycle_gan_offline_is_a_clear_error(tmp_path):
    with pytest.raises(DataError) as error:
        zdata.from_tfds_unpaired(
            "cycle_gan/horse2zebra", image_shape=(32, 32, 3), data_dir=str(tmp_path)
        )
    assert "cycle_gan/horse2zebra" in str(error.value)


def test_pix2pix_datasets_read_the_cache_and_fail_fast_offline(tmp_path, monkeypatch):
    from zoo.data import downloads

    monkeypatch.setattr(downloads, "resolves", lambda host, timeout=5.0: False)  # offline
    with pytest.raises(DataError, match=r"'facades' .* no network \(efrosgans.*resolve\)"):
        pairs.pix2pix_folder("facades", cache_dir=str(tmp_path))
    with pytest.raises(DataError, match="unknown pix2pix dataset 'facade'; choose one of"):
        pairs.pix2pix_folder("facade", cache_dir=str(tmp_path))
    cached = tmp_path / "facades_extracted" / "facades" / "train"  # as keras.utils.get_file
    _save(cached / "1.jpg", np.concatenate([_ramp(8, 8, 0), _ramp(8, 8, 9)], axis=1))
    assert pairs.pix2pix_folder("facades", cache_dir=str(tmp_path)) == cached
