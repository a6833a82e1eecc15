"""Bad data a user meets first: undecodable files in an image folder, empty folders, and
TFDS datasets that cannot be downloaded (offline)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from recipe_helpers import recipe_toml

BAD_FILES = ("empty.jpg", "half.png", "notes.jpg")


def _image_bytes(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _fill_folder(folder: Path, n_good: int = 24) -> list[np.ndarray]:
    """``n_good`` decodable digits (PNG and JPEG, some in a subfolder) plus a zero-byte
    .jpg, a truncated .png and a text file named .jpg; returns the good images in the
    order from_folder reads them (sorted by relative path)."""
    from zoo.data import load_sample

    images, _ = load_sample("test")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir()
    good = {}
    for i in range(n_good):
        fmt = "PNG" if i % 2 else "JPEG"
        name = f"{'sub/' if i % 3 == 0 else ''}digit{i:02d}.{'png' if fmt == 'PNG' else 'jpg'}"
        data = _image_bytes(images[i, ..., 0], fmt)
        (folder / name).write_bytes(data)
        good[name] = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    (folder / "empty.jpg").write_bytes(b"")
    png = _image_bytes(images[100, ..., 0], "PNG")
    (folder / "half.png").write_bytes(png[: len(png) // 2])
    (folder / "notes.jpg").write_text("not an image\n")
    return [good[name] for name in sorted(good)]


def test_folder_skips_undecodable_files_with_one_warning_naming_them(tmp_path: Path) -> None:
    from zoo.data import DataWarning, from_folder

    expected = _fill_folder(tmp_path / "digits")
    with pytest.warns(DataWarning) as record:
        ds = from_folder(tmp_path / "digits", image_shape=(28, 28, 1))
    assert len(record) == 1
    message = str(record[0].message)
    assert "skipping 3 of 27 image files" in message
    for name in BAD_FILES:
        assert name in message
    assert ".jpg, half" in message and "digit0" not in message  # only the bad files
    assert int(ds.cardinality()) == len(expected)
    got = np.stack([x.numpy() for x in ds])
    assert got.shape == (len(expected), 28, 28, 1)
    # the same images in the same order (JPEG decoders and the luma weights differ slightly)
    np.testing.assert_allclose(got[..., 0], np.stack(expected) / 255.0, atol=0.02)


def test_folder_warning_lists_at_most_ten_names(tmp_path: Path) -> None:
    from zoo.data import DataWarning, from_folder

    folder = tmp_path / "many"
    folder.mkdir()
    (folder / "ok.png").write_bytes(_image_bytes(np.zeros((8, 8), np.uint8), "PNG"))
    for i in range(13):
        (folder / f"bad{i:02d}.png").write_bytes(b"")
    with pytest.warns(DataWarning, match=r"skipping 13 of 14 .*bad09\.png and 3 more"):
        ds = from_folder(folder, image_shape=(8, 8, 1))
    assert int(ds.cardinality()) == 1


def test_folder_without_bad_files_gives_no_warning(tmp_path: Path) -> None:
    from zoo.data import from_folder

    folder = tmp_path / "clean"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(_image_bytes(np.full((5, 7, 3), i, np.uint8), "PNG"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = from_folder(folder, image_shape=(5, 7, 3))
    assert int(ds.cardinality()) == 3


def test_folder_check_files_false_leaves_bad_files_to_fail_later(tmp_path: Path) -> None:
    from zoo.data import from_folder

    _fill_folder(tmp_path / "digits", n_good=2)
    ds = from_folder(tmp_path / "digits", image_shape=(28, 28, 1), check_files=False)
    assert int(ds.cardinality()) == 5


def test_folder_of_only_undecodable_files_is_refused_naming_them(tmp_path: Path) -> None:
    from zoo.data import DataError, make_dataset

    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    (folder / "b.png").write_text("text")
    with pytest.raises(DataError, match=r"none of the 2 image files .*broken.*a\.jpg, b\.png"):
        make_dataset("folder", path=folder, image_shape=(28, 28, 1))


@pytest.mark.parametrize("recursive", [True, False])
def test_empty_folder_is_refused_naming_folder_and_extensions(
    tmp_path: Path, recursive: bool
) -> None:
    from zoo.data import DataError, from_folder

    folder = tmp_path / "nothing_here"
    (folder / "deeper").mkdir(parents=True)
    (folder / "readme.txt").write_text("no images")
    with pytest.raises(DataError) as info:
        from_folder(folder, image_shape=(28, 28, 1), recursive=recursive)
    message = str(info.value)
    assert str(folder) in message and "no image files found" in message
    assert ".png, .jpg, .jpeg, .bmp, .gif" in message


def test_recipe_trains_on_a_folder_with_bad_files(tmp_path: Path) -> None:
    from zoo.recipes import train

    from zoo.data import DataWarning

    folder = tmp_path / "digits"
    _fill_folder(folder, n_good=20)
    recipe = tmp_path / "folder_tiny.toml"
    data = f'source = "folder"\npath = "{folder.as_posix()}"\nvalidation_fraction = 0.2'
    recipe.write_text(
        recipe_toml(
            "folder_tiny", "conv_ae_tiny", epochs=1, seed=1, data=data + "\nbatch_size = 8",
            training="steps_per_epoch = 2\nverbose = 0",
        )
    )  # fmt: skip
    with pytest.warns(DataWarning, match="skipping 3 of 23 image files") as record:
        result = train(recipe, logdir=tmp_path / "runs")
    assert all(name in str(record[0].message) for name in BAD_FILES)
    assert (result.run_dir / "model.keras").is_file()
    assert any((result.run_dir / "checkpoints").iterdir())


# --------------------------------------------------------------------------- TFDS offline


def _offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every DNS lookup fail at once, as on a machine without network; returns the
    hosts looked up."""
    import socket

    asked: list[str] = []

    def no_dns(host: str, *args: object, **kwargs: object) -> None:
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    return asked


def test_tfds_offline_names_the_network_and_alternatives_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from zoo.data import DataError, make_dataset

    asked = _offline(monkeypatch)
    data_dir = tmp_path / "tfds"
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        make_dataset("tfds", name="mnist", image_shape=(28, 28, 1), data_dir=data_dir)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert "'mnist'" in message and str(data_dir) in message
    assert "cannot be downloaded: no network" in message and "does not resolve" in message
    assert 'source="sample"' in message and 'source="folder"' in message
    assert "importlib_resources" not in message
    assert asked, "the download hosts were not checked"
    assert elapsed < 30  # TFDS alone retries for about 3.5 minutes offline
    assert not data_dir.exists()
    assert list(tmp_path.iterdir()) == []


def _failing_download(root: Path, error: BaseException):
    """A stand-in for tfds.load that writes what a real download writes before the network
    fails (dataset and download folders), then raises ``error``."""

    def load(name: str, **kwargs: object) -> None:
        assert Path(str(kwargs["data_dir"])) == root
        if not kwargs["download"]:
            raise AssertionError(f"Dataset {name}: could not find data in {root}")
        (root / "mnist" / "3.0.1.incompleteABC").mkdir(parents=True)
        (root / "mnist" / "3.0.1.incompleteABC" / "part.tfrecord").write_bytes(b"x")
        (root / "downloads" / "mnist").mkdir(parents=True)
        (root / "downloads" / "mnist" / "train-images.tmp.123").write_bytes(b"partial")
        (root / "downloads" / "extracted").mkdir(exist_ok=True)
        raise error

    return load


def _network_error() -> BaseException:
    import socket

    import requests

    try:
        try:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        except socket.gaierror as lookup:
            raise requests.exceptions.ConnectionError(
                "Max retries exceeded (Failed to resolve 'storage.googleapis.com')"
            ) from lookup
    except requests.exceptions.ConnectionError as error:
        return error


@pytest.mark.parametrize("existed", [False, True])
def test_tfds_failed_download_removes_only_what_it_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existed: bool
) -> None:
    import tensorflow_datasets as tfds

    from zoo.data import DataError, from_tfds, sources

    root = tmp_path / "tfds"
    if existed:  # a data dir in use: another dataset, a download folder with a file
        (root / "other" / "1.0.0").mkdir(parents=True)
        (root / "other" / "1.0.0" / "keep.json").write_text("{}")
        (root / "downloads").mkdir()
        (root / "downloads" / "keep.zip").write_bytes(b"zip")
        (root / "mnist").mkdir()
        (root / "mnist" / "notes.txt").write_text("mine")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    monkeypatch.setattr(sources, "unreachable_host", lambda urls: None)  # "online"
    monkeypatch.setattr(tfds, "load", _failing_download(root, _network_error()))
    with pytest.raises(DataError) as info:
        from_tfds("mnist", data_dir=root, image_shape=(28, 28, 1))
    message = str(info.value)
    assert "could not be downloaded into" in message and "a network error" in message
    assert "ConnectionError" in message and 'source="sample"' in message
    after = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert after == before


def test_tfds_missing_module_is_named_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorflow_datasets as tfds

    from zoo.data import DataError, from_tfds, sources

    missing = ModuleNotFoundError("No module named 'importlib_resources'")
    missing.name = "importlib_resources"
    monkeypatch.setattr(sources, "unreachable_host", lambda urls: None)
    monkeypatch.setattr(tfds, "load", _failing_download(tmp_path / "tfds", missing))
    with pytest.raises(DataError, match=r"needs the Python module 'importlib_resources'.*"
                       r"pip install importlib_resources"):  # fmt: skip
        from_tfds("mnist", data_dir=tmp_path / "tfds")
    assert list(tmp_path.iterdir()) == []


def test_unreachable_host_checks_each_download_host(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from zoo.data.downloads import FALLBACK_HOST, unreachable_host

    def only_example(host: str, *args: object, **kwargs: object) -> object:
        if host != "example.org":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443))]

    monkeypatch.setattr(socket, "getaddrinfo", only_example)
    assert unreachable_host(["https://example.org/a.gz", "https://example.org/b.gz"]) is None
    assert unreachable_host(["https://example.org/a", "http://drive.google.com/x"]) == (
        "drive.google.com"
    )
    assert unreachable_host([]) == FALLBACK_HOST
