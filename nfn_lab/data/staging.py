"""Atomic output folders: a zoo is assembled beside its destination and renamed into place.

A zoo is written into a hidden sibling folder (``.<name>.partial-*``) and moved to its
destination only when complete, so an interrupted write never leaves a folder that looks
like a zoo. An existing non-empty destination is refused unless ``overwrite=True``, and even
then it is removed only after the new zoo is complete, and only if it is itself a zoo (it
holds :data:`INFO_FILE`, which every nfn-lab zoo writes last), so a mistyped path cannot
delete other data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["INFO_FILE", "StagedDirectory", "StagedWriter", "check_destination"]

INFO_FILE = "zoo.json"  # written last: a folder without it is not a (complete) zoo


def check_destination(root: str | os.PathLike, overwrite: bool) -> None:
    """Raises unless ``root`` may receive a new zoo: missing, empty, or (``overwrite``) an existing zoo.

    Raises:
        FileExistsError: ``root`` is a file, or a non-empty folder and ``overwrite`` is False,
            or a non-empty folder that is not a zoo (no ``zoo.json``).
    """
    root = Path(root).expanduser()
    if not root.exists():
        return
    if not root.is_dir():
        raise FileExistsError(f"{root} exists and is a file; choose a folder path for the zoo.")
    if not any(root.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(
            f"{root} exists and is not empty; pass overwrite=True (CLI: --overwrite) to replace it (the old "
            "contents are removed only once the new zoo is complete) or choose another path."
        )
    if not (root / INFO_FILE).is_file():
        raise FileExistsError(
            f"refusing to replace {root}: it is not empty and not an nfn-lab zoo (no {INFO_FILE}); remove it "
            "yourself or choose another path."
        )


class StagedDirectory:
    """A folder assembled beside its destination and renamed into place only when complete.

    Files go under :attr:`path` (inside a hidden sibling ``.<name>.partial-*``);
    :meth:`commit` moves it to ``root`` (replacing an old zoo only then), :meth:`abort`
    deletes it. :attr:`scratch` is a work folder deleted with it.

    Args:
        root: the destination folder.
        overwrite: allow replacing an existing zoo at ``root`` (see :func:`check_destination`).
    """

    def __init__(self, root: str | os.PathLike, overwrite: bool = False) -> None:
        self.root = Path(root).expanduser().absolute()
        self.overwrite = overwrite
        check_destination(self.root, overwrite)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.partial-", dir=self.root.parent))
        self.path = self._tmp / "zoo"
        self.scratch = self._tmp / "scratch"
        self.path.mkdir()
        self.scratch.mkdir()

    def commit(self) -> None:
        """Moves the finished folder to ``root``; an old zoo there is deleted afterwards."""
        check_destination(self.root, self.overwrite)  # again: something may have appeared meanwhile
        if self.root.exists():
            os.replace(self.root, self._tmp / "previous")  # same filesystem: atomic renames
        os.replace(self.path, self.root)
        shutil.rmtree(self._tmp)

    def abort(self) -> None:
        """Deletes everything written so far; ``root`` is untouched."""
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __repr__(self) -> str:
        return f"StagedDirectory(root={str(self.root)!r}, staging={str(self._tmp)!r})"


_Writer = TypeVar("_Writer", bound="StagedWriter")


class StagedWriter(ABC):
    """A writer that stages its output in :attr:`_staged` and publishes it whole, or not at all.

    Subclasses create ``self._staged`` (a :class:`StagedDirectory`) and implement
    :meth:`_finish` (write the last files into ``self._staged.path``) and :meth:`_release` (close
    their own open files). :meth:`close` and :meth:`abort` are here, once: closing twice returns
    the first result, a failure while closing aborts, and after either call the writer takes no
    more rows (:attr:`ended`). As a context manager it closes on a clean exit and aborts on an
    exception.
    """

    _staged: StagedDirectory
    _ended: bool = False
    _closed: bool = False

    @abstractmethod
    def _finish(self) -> None:
        """Writes what is still buffered and the closing files into ``self._staged.path``."""

    @abstractmethod
    def _release(self) -> None:
        """Closes the writer's open files (called once, on close or abort)."""

    @property
    def ended(self) -> bool:
        """True once :meth:`close` or :meth:`abort` was called."""
        return self._ended

    def close(self) -> Path:
        """Finishes the output and renames it into place; returns the destination."""
        if self._closed:
            return self._staged.root
        if self._ended:
            raise RuntimeError(f"{type(self).__name__} for {self._staged.root} was aborted; nothing was written.")
        try:
            self._finish()
            self._staged.commit()
        except BaseException:
            self.abort()
            raise
        self._ended = self._closed = True
        return self._staged.root

    def abort(self) -> None:
        """Discards everything written; the destination is left as it was."""
        self._ended = True
        try:
            self._release()
        finally:
            self._staged.abort()

    def __enter__(self: _Writer) -> _Writer:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.close()
        elif not self._closed:
            self.abort()
