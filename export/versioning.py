"""TF Serving's on-disk layout: ``<base>/<integer version>/``, written atomically.

TF Serving's file-system source loads the integer-named children of a model's base
path and ignores the rest, so a staging folder named ``.tmp-<uuid>`` inside the base
path is invisible to it; renaming the finished folder into place (``os.rename`` within
one file system is atomic on POSIX) means a version folder is complete or absent.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

__all__ = ["ONNX_FOLDER", "existing_versions", "next_version", "staging_dir"]

#: ONNX files of version ``v`` live in ``<base>/onnx/<v>/<signature>.onnx``.
ONNX_FOLDER = "onnx"
STAGING_PREFIX = ".tmp-"


def existing_versions(base: str | os.PathLike) -> list[int]:
    """Integer version folders under ``base``, sorted (what TF Serving would load)."""
    base = Path(base)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(base: str | os.PathLike) -> int:
    """``max(existing) + 1``, or 1 for a new model."""
    versions = existing_versions(base)
    return versions[-1] + 1 if versions else 1


def staging_dir(base: str | os.PathLike) -> Path:
    """A fresh, non-integer-named folder inside ``base`` for an export in progress."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    path = base / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    path.mkdir()
    return path


def commit(staging: Path, base: Path, version: int) -> tuple[Path, Path | None]:
    """Move ``staging/savedmodel`` to ``base/<version>`` and ``staging/onnx`` to
    ``base/onnx/<version>``; the version folder moves last, so it appears only when
    everything else is in place. Returns (version folder, ONNX folder or None).
    """
    target = base / str(version)
    if target.exists():
        raise FileExistsError(
            f"{target} already exists (another export took version {version}); "
            "export again to get the next version"
        )
    onnx_target = None
    onnx_staged = staging / ONNX_FOLDER
    if onnx_staged.is_dir():
        onnx_target = base / ONNX_FOLDER / str(version)
        onnx_target.parent.mkdir(parents=True, exist_ok=True)
        if onnx_target.exists():  # left by an export that failed after this point
            shutil.rmtree(onnx_target)
        os.rename(onnx_staged, onnx_target)
    try:
        os.rename(staging / "savedmodel", target)
    except BaseException:
        if onnx_target is not None:
            shutil.rmtree(onnx_target, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return target, onnx_target
