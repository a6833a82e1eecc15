"""Shared parts every family uses: atomic writes, weight averages (EMA), GAN losses over
logit maps, batch unpacking, and the sequence autoencoder's regulariser losses."""

from __future__ import annotations

import numpy as np
import pytest

from zoo import fileio


# -- 1. atomic writes ----------------------------------------------------------------------
def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_text_and_bytes_replace_the_content(tmp_path):
    target = tmp_path / "deep" / "er" / "report.md"  # parent folders are created
    assert fileio.atomic_write_text(target, "first") == target
    assert target.read_text() == "first"
    fileio.atomic_write_bytes(target, b"second \xe2\x9c\x93")
    assert target.read_text() == "second \u2713"
    assert _leftovers(target.parent) == []


def test_a_failing_writer_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "model.keras"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"), fileio.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".")
        assert tmp.name.endswith("model.keras")  # writers that check the suffix accept it
        tmp.write_text("half a mod")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []
    with fileio.atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_call_sites_write_atomically(tmp_path, monkeypatch):
    """The runner's model writer and the PNG writer go through zoo.fileio: a failure in the
    middle of a write keeps the previous file and leaves nothing behind."""
    from PIL import Image
    from zoo.recipes.runner import save_model_atomically

    from zoo.data import save_png

    class BrokenModel:
        def save(self, path):
            with open(path, "w") as fh:
                fh.write("partial")
            raise OSError("no space left on device")

    target = tmp_path / "model.keras"
    target.write_text("previous model")
    with pytest.raises(OSError, match="no space"):
        save_model_atomically(BrokenModel(), target)
    assert target.read_text() == "previous model"
    assert _leftovers(tmp_path) == []

    png = tmp_path / "grid.png"
    save_png(np.zeros((4, 4), np.uint8), png)
    before = png.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as fh:
            fh.write(b"\x89PNG half")
        raise OSError("interrupted")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="interrupted"):
        save_png(np.full((4, 4), 255, np.uint8), png)
    assert png.read_bytes() == before
    assert _leftovers(tmp_path) == []
