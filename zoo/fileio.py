"""Atomic file writes: the one home for "write a temporary sibling, then ``os.replace``".

A reader never sees a half-written file: the new content goes to a hidden temporary file
in the target's folder (same file system, so the final ``os.replace`` is atomic) and is
moved onto the target only when the writer finished; on any error the temporary file is
removed and the old target, if any, is left untouched. Parent folders are created.

The temporary name is ``.partial-<random>-<name>``: hidden, unique, and it ends with the
target's own name, so writers that check the extension (``keras.Model.save`` wants
``.keras``, ``save_weights`` wants ``.weights.h5``, matplotlib and PIL infer the format)
accept it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = ".partial-"


def _temporary_sibling(target: Path) -> Path:
    return target.with_name(f"{TEMP_PREFIX}{secrets.token_hex(6)}-{target.name}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling path to write; on success it replaces ``path``.

    Use it for writers that need a file name (``model.save``, ``fig.savefig``, PNG writers)::

        with atomic_path(run_dir / "model.keras") as tmp:
            model.save(tmp)

    The temporary file is flushed to disk and ``os.replace``-d onto ``path`` when the block
    exits normally; when the block raises, it is removed and ``path`` is unchanged. The file
    keeps the mode the writer created it with (the usual umask-based mode).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(target)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns the path."""
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "xb") as fh:
        fh.write(data)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`); returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))
