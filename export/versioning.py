"""TF Serving's on-disk layout: ``<base>/<integer version>/``, written atomically.

TF Serving's file-system source loads the integer-named children of a model's base
path and ignores the rest, so a staging folder named ``.tmp-<uuid>`` inside the base
path is invisible to it; renaming the finished folder into place (``os.rename`` within
one file system is atomic on POSIX) means a version folder is complete or absent.

A staging folder holds ``.owner.json`` (pid, host, process start time, creation time). An
export killed before it could clean up leaves its staging folder behind; the next export
to the same base path removes it (:func:`clean_stale_staging`) when its owner process is
gone from this host, or, when the owner is unknown (no owner file) or on another host,
when it is older than :data:`STALE_AFTER_SECONDS`. A running export's folder is never
touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = [
    "ONNX_FOLDER",
    "ExportPathError",
    "check_writable_dir",
    "clean_stale_staging",
    "existing_versions",
    "next_version",
    "staging_dir",
]

#: ONNX files of version ``v`` live in ``<base>/onnx/<v>/<signature>.onnx``.
ONNX_FOLDER = "onnx"
STAGING_PREFIX = ".tmp-"
OWNER_FILE = ".owner.json"
#: A staging folder whose owner cannot be checked (no owner file, another host) is
#: removed once it is this old: no export takes anywhere near as long.
STALE_AFTER_SECONDS = 6 * 3600


class ExportPathError(ValueError):
    """The export's output folder cannot be used (a file, or not writable)."""


def check_writable_dir(path: str | os.PathLike) -> Path:
    """``path`` itself, after checking that it is, or can become, a writable folder:
    its nearest existing ancestor must be a folder in which a file can be created (an
    explicit write probe, so it also holds for root and for read-only mounts).
    Raises :class:`ExportPathError` with one line naming the problem and the fix."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        inside = "" if existing == path else f" (its parent {existing} is a file)"
        raise ExportPathError(
            f"output folder {path} cannot be created: {existing} is a file, not a folder"
            f"{inside}; choose another --out folder"
        )
    try:
        probe = tempfile.mkdtemp(prefix=".zoo-write-probe-", dir=existing)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ExportPathError(
            f"output folder {path} is not writable ({reason} in {existing}); choose a folder "
            "you can write to with --out"
        ) from None
    os.rmdir(probe)
    return path


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), else None."""
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]  # field 22: starttime
    return None


def _owner() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "start": _process_start(pid),
            "created": time.time()}  # fmt: skip


def _alive(pid: int, start: str | None) -> bool:
    """Whether ``pid`` runs on this host and, when its start time was recorded, is
    still the same process (not a later one that reused the pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    now = _process_start(pid)
    return start is None or now is None or now == start


def _is_stale(folder: Path, now: float, max_age: float) -> bool:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        owner = None
    if owner is not None and host == socket.gethostname():
        return not _alive(pid, owner.get("start"))
    try:
        age = now - folder.stat().st_mtime
    except OSError:
        return False
    return age > max_age


def clean_stale_staging(
    base: str | os.PathLike, max_age: float = STALE_AFTER_SECONDS
) -> list[Path]:
    """Remove the ``.tmp-*`` staging folders under ``base`` left by exports that died:
    their owner process is gone from this host, or (owner unknown or on another host)
    they are older than ``max_age`` seconds. Returns the folders removed."""
    base = Path(base)
    if not base.is_dir():
        return []
    now, removed = time.time(), []
    for folder in sorted(base.glob(f"{STAGING_PREFIX}*")):
        if folder.is_dir() and not folder.is_symlink() and _is_stale(folder, now, max_age):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                removed.append(folder)
    return removed


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
    """A fresh, non-integer-named folder inside ``base`` for an export in progress, with
    its owner file; stale staging folders of dead exports are removed first."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    clean_stale_staging(base)
    path = base / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    path.mkdir()
    (path / OWNER_FILE).write_text(json.dumps(_owner()))
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
