"""Guards around TFDS downloads: a fast offline check of the download hosts, telling a
network error from others, and removing what a failed download left behind (only the
folders and files it created)."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# TFDS's own storage host: checked when a dataset's download URLs are not known.
FALLBACK_HOST = "storage.googleapis.com"
RESOLVE_TIMEOUT = 5.0  # seconds; an unreachable DNS server can otherwise hang a lookup


def resolves(host: str, timeout: float = RESOLVE_TIMEOUT) -> bool:
    """Whether ``host`` resolves to an address within ``timeout`` seconds."""
    answers: list[bool] = []

    def look_up() -> None:
        try:
            socket.getaddrinfo(host, 443)
            answers.append(True)
        except OSError:
            answers.append(False)

    thread = threading.Thread(target=look_up, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answers and answers[0])


def unreachable_host(urls: Iterable[str]) -> str | None:
    """The first host of ``urls`` (or TFDS's storage host if there are none) that does not
    resolve, or None when all do. TFDS retries a failed connection 10 times with
    exponential back-off (about 3.5 minutes), so this is checked before a download."""
    hosts = sorted({h for h in (urlsplit(u).hostname for u in urls) if h}) or [FALLBACK_HOST]
    return next((host for host in hosts if not resolves(host)), None)


def _tree_state(folders: Iterable[Path]) -> dict[Path, frozenset[str] | None]:
    """For each folder: the names in it, or None if it does not exist."""
    return {f: frozenset(p.name for p in f.iterdir()) if f.is_dir() else None for f in folders}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def removed_on_failure(owned: Iterable[Path], shared: Iterable[Path]) -> Iterator[None]:
    """On an exception in the block, undo what it created on disk, then re-raise.

    ``owned`` folders belong to this download: if the block created one it is removed
    with its contents, otherwise only the entries the block added to it are. ``shared``
    folders (the data directory and its ancestors, ``downloads/``) are removed only if
    the block created them and they are empty once the owned ones are gone.
    """
    owned, shared = list(owned), list(shared)
    before = _tree_state(owned + shared)
    try:
        yield
    except BaseException:
        for folder in sorted(owned, key=lambda p: len(p.parts), reverse=True):
            names = before[folder]
            if names is None:
                _remove(folder)
            elif folder.is_dir():
                for entry in folder.iterdir():
                    if entry.name not in names:
                        _remove(entry)
        for folder in sorted(shared, key=lambda p: len(p.parts), reverse=True):
            if before[folder] is None and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def download_urls(builder: Any) -> list[str]:
    """The URLs a builder downloads from (empty when TFDS cannot tell)."""
    try:
        return list(builder.url_infos or {})
    except Exception:  # e.g. TFDS's own optional imports missing
        return []


def is_network_error(exc: BaseException) -> bool:
    """A failed connection or name lookup (builtin, or from requests/urllib3)."""
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    return type(exc).__module__.split(".")[0] in ("requests", "urllib3", "urllib")


def tfds_folders(builder: Any, root: Path, base: str) -> tuple[list[Path], list[Path]]:
    """The folders a download of ``builder`` into ``root`` writes to, as (owned, shared)
    for :func:`removed_on_failure`: the dataset's own folders, and the common ones."""
    owned = [root / base, root / "downloads" / base, root / "downloads" / "extracted"]
    try:
        relative = Path(builder.data_dir).relative_to(root)
        owned += [root.joinpath(*relative.parts[:i]) for i in range(2, len(relative.parts) + 1)]
    except (AttributeError, TypeError, ValueError):
        pass
    missing_ancestors = []
    for folder in (root, *root.parents):
        if folder.exists():
            break
        missing_ancestors.append(folder)
    shared = [*missing_ancestors, root / "downloads", root / "downloads" / "manual"]
    return sorted(set(owned)), shared
