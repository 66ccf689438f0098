"""Where nfn-lab caches derived files of a zoo (indexes, statistics, array caches), and how it writes them.

Caches live beside the zoo in ``<root>/.nfn_lab_cache/``, or in :func:`default_cache_dir`
when the zoo's folder is read-only; every cache file is written atomically.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["CACHE_DIR_NAME", "atomic_write", "default_cache_dir", "digest", "zoo_cache_path"]


def default_cache_dir() -> Path:
    """``$NFN_LAB_CACHE`` or ``~/.cache/nfn_lab``: used when a zoo's folder is read-only."""
    return Path(os.environ.get("NFN_LAB_CACHE", Path.home() / ".cache" / "nfn_lab"))


CACHE_DIR_NAME = ".nfn_lab_cache"


def digest(lines: Iterable[str]) -> str:
    """A short hex digest of a sequence of strings (cache keys)."""
    h = hashlib.sha1()
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def zoo_cache_path(root: str | os.PathLike, name: str) -> Path:
    """``<root>/.nfn_lab_cache/<name>``, or ``default_cache_dir() / name`` if ``root`` is read-only."""
    root = Path(root)
    return root / CACHE_DIR_NAME / name if os.access(root, os.W_OK) else default_cache_dir() / name


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Calls ``write(tmp)`` on a unique temporary file beside ``path``, then renames it to ``path``.

    An interrupted write leaves no file at ``path`` (a stray ``*.tmp*`` at most), and
    concurrent writers of identical content never see a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
